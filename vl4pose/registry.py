"""Published model versions on disk: where the coordinator and the ML backend meet.

Layout under a root folder (``storage/models`` by default)::

    <version>/        a checkpoint folder (see :mod:`vl4pose.checkpoint`) plus ``version.json``
    CURRENT           the name of the version to serve, replaced atomically

A version folder is copied to a temporary sibling and renamed into place before ``CURRENT`` moves,
so readers never see a half-published version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from vl4pose.checkpoint import REQUIRED, Checkpoint, save_checkpoint
from vl4pose.errors import CheckpointError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ModelRegistry:
    """Publish and look up model versions in ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, version: str) -> Path:
        if not _NAME.match(version):
            raise CheckpointError(f"model version {version!r} must be 1-64 letters, digits, '.', '_' or '-'")
        return self.root / version

    def exists(self, version: str) -> bool:
        folder = self.path(version)
        return all((folder / name).is_file() for name in REQUIRED)

    def versions(self) -> list[str]:
        """Published versions, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".") and self.exists(p.name)]
        return [p.name for p in sorted(found, key=lambda p: (p.stat().st_mtime, p.name))]

    def current(self) -> str | None:
        """The version being served, or None before the first publication."""
        try:
            version = (self.root / "CURRENT").read_text().strip()
        except FileNotFoundError:
            return None
        return version if version and self.exists(version) else None

    def info(self, version: str) -> dict:
        """The ``version.json`` written at publication (parent, created_at, extra fields)."""
        try:
            return json.loads((self.path(version) / "version.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def publish(self, source: Checkpoint | str | Path, version: str, parent: str | None = None,
                make_current: bool = True, **info: object) -> Path:
        """Copy a checkpoint (object or folder) in as ``version``; idempotent for an existing version."""
        target = self.path(version)
        if self.exists(version):
            if make_current:
                self.set_current(version)
            return target
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{version}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            if isinstance(source, Checkpoint):
                save_checkpoint(tmp, source)
            else:
                shutil.copytree(Path(source), tmp)
            meta = {"version": version, "parent": parent, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
            (tmp / "version.json").write_text(json.dumps(meta, indent=2, default=str))
            if target.exists():  # a leftover without the required files: replace it
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if make_current:
            self.set_current(version)
        return target

    def set_current(self, version: str) -> None:
        if not self.exists(version):
            raise CheckpointError(f"model version {version!r} is not published in {self.root}")
        tmp = self.root / f".CURRENT.{uuid.uuid4().hex[:8]}"
        tmp.write_text(version + "\n")
        os.replace(tmp, self.root / "CURRENT")
