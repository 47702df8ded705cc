"""Published model versions on disk: where the coordinator and the ML backend meet.

Layout under a root folder (``storage/models`` by default)::

    <version>/                      a checkpoint folder (see :mod:`vl4pose.checkpoint`) plus ``version.json``
    projects/<project>/project.json  a linked project (its skeleton), written when the coordinator links it
    projects/<project>/CURRENT       the version that project is served, replaced atomically

``<project>`` is the Label Studio project id (the ML backend only knows Label Studio's ids): every project
has its own current version, so projects with different skeletons are served side by side. A ``CURRENT``
at the root is the older single-project layout; :meth:`ModelRegistry.migrate_legacy_current` moves it to a
project. A version folder is copied to a temporary sibling and renamed into place before any ``CURRENT``
moves, so readers never see a half-published version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from vl4pose.atomic import write_atomic
from vl4pose.checkpoint import REQUIRED, Checkpoint, save_checkpoint
from vl4pose.errors import CheckpointError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PROJECTS = "projects"
LEGACY_CURRENT = "CURRENT"


def project_key(project: str | int) -> str:
    """A project's key in the registry (its Label Studio id as text); raises CheckpointError when malformed."""
    key = str(project).strip() if isinstance(project, (str, int)) and not isinstance(project, bool) else ""
    if not _NAME.match(key) or key in (".", ".."):
        raise CheckpointError(f"project {project!r} must be 1-64 letters, digits, '.', '_' or '-' (its Label "
                              "Studio id)")
    return key


class ModelRegistry:
    """Publish and look up model versions in ``root``; each linked project has its own current version."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- versions -----------------------------------------------------------------------------------
    def path(self, version: str) -> Path:
        if not isinstance(version, str) or not _NAME.match(version) or version == PROJECTS:
            raise CheckpointError(f"model version {version!r} must be 1-64 letters, digits, '.', '_' or '-'")
        return self.root / version

    def exists(self, version: str) -> bool:
        folder = self.path(version)
        return all((folder / name).is_file() for name in REQUIRED)

    def versions(self) -> list[str]:
        """Published versions, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
                 and p.name != PROJECTS and self.exists(p.name)]
        return [p.name for p in sorted(found, key=lambda p: (p.stat().st_mtime, p.name))]

    def info(self, version: str) -> dict:
        """The ``version.json`` written at publication (parent, created_at, extra fields)."""
        try:
            return json.loads((self.path(version) / "version.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def publish(self, source: Checkpoint | str | Path, version: str, parent: str | None = None,
                make_current: bool = False, project: str | int | None = None, **info: object) -> Path:
        """Copy a checkpoint (object or folder) in as ``version``; idempotent for an existing version.

        ``make_current`` makes it ``project``'s current version (the project is then linked).
        """
        if make_current and project is None:
            raise CheckpointError("publish(..., make_current=True) needs project=<Label Studio project id>: "
                                  "every project has its own current version")
        target = self.path(version)
        if not self.exists(version):
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".{version}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                if isinstance(source, Checkpoint):
                    save_checkpoint(tmp, source)
                else:
                    shutil.copytree(Path(source), tmp)
                meta = {"version": version, "parent": parent, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        **info}
                (tmp / "version.json").write_text(json.dumps(meta, indent=2, default=str))
                if target.exists():  # a leftover without the required files: replace it
                    shutil.rmtree(target)
                tmp.rename(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        if make_current:
            self.set_current(version, project)  # type: ignore[arg-type]
        return target

    # -- projects -----------------------------------------------------------------------------------
    def project_dir(self, project: str | int) -> Path:
        return self.root / PROJECTS / project_key(project)

    def link_project(self, project: str | int, **info: object) -> None:
        """Record a linked project (e.g. ``skeleton="lsp14"``); the ML backend serves only linked projects."""
        folder = self.project_dir(project)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {**self.project_info(project), "project": project_key(project), **info}
        meta.setdefault("linked_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        write_atomic(folder / "project.json", json.dumps(meta, indent=2, default=str))

    def is_linked(self, project: str | int) -> bool:
        try:
            return self.project_dir(project).is_dir()
        except CheckpointError:
            return False

    def project_info(self, project: str | int) -> dict:
        try:
            return json.loads((self.project_dir(project) / "project.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def projects(self) -> list[str]:
        """Keys of the linked projects."""
        folder = self.root / PROJECTS
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and _NAME.match(p.name))

    # -- current versions ---------------------------------------------------------------------------
    def current(self, project: str | int | None = None) -> str | None:
        """The version ``project`` is served (None before its first one).

        Without a project: the version made current most recently over all projects (or the older layout's
        root ``CURRENT``): for tools and single-project setups; the ML backend always names the project.
        """
        if project is not None:
            if not self.is_linked(project):
                return None
            return self._read_current(self.project_dir(project) / "CURRENT")
        pointers = [self.project_dir(p) / "CURRENT" for p in self.projects()]
        pointers = [p for p in pointers if p.is_file()]
        if not pointers:
            return self._read_current(self.root / LEGACY_CURRENT)
        latest = max(pointers, key=lambda p: p.stat().st_mtime_ns)
        return self._read_current(latest)

    def set_current(self, version: str, project: str | int) -> None:
        """Make ``version`` the one ``project`` is served (links the project when needed)."""
        if not self.exists(version):
            raise CheckpointError(f"model version {version!r} is not published in {self.root}")
        folder = self.project_dir(project)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "CURRENT", version + "\n")

    def migrate_legacy_current(self, project: str | int) -> str | None:
        """Move the older layout's root ``CURRENT`` to ``project`` (unless it already has a current version).

        Returns the migrated version, or None when there was nothing to migrate. The old file is renamed to
        ``CURRENT.migrated`` so nothing serves it again.
        """
        legacy = self.root / LEGACY_CURRENT
        version = self._read_current(legacy)
        if version is None:
            return None
        if self.current(project) is None:
            self.set_current(version, project)
        else:
            version = None
        os.replace(legacy, self.root / f"{LEGACY_CURRENT}.migrated")
        return version

    def _read_current(self, pointer: Path) -> str | None:
        try:
            version = pointer.read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return version if version and self.exists(version) else None
        except CheckpointError:
            return None
