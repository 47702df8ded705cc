"""What ``/setup`` told us per Label Studio project: hostname and access token (kept on disk, so a
restarted backend can still fetch images) and the label config (kept in memory).

The token file is written with mode 0600 and its content is never logged.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path

from ml_backend.images import ProjectAccess

log = logging.getLogger(__name__)


def parse_project_id(value: object) -> str | None:
    """Label Studio's project field ``"<id>.<timestamp>"`` (or a bare id) -> ``"<id>"``; None if absent."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        head = value.strip().split(".", 1)[0]
        return head if head.isdigit() else None
    return None


class ProjectStore:
    """Per-project access details, persisted as JSON in ``path``; ``fallback`` serves unknown projects."""

    def __init__(self, path: Path, fallback: ProjectAccess | None = None) -> None:
        self.path = Path(path)
        self.fallback = fallback or ProjectAccess()
        self._lock = threading.Lock()
        self._access: dict[str, ProjectAccess] = self._read()
        self._configs: dict[str, str] = {}

    def remember(self, project_id: str | None, hostname: object, access_token: object, label_config: object) -> None:
        """Store what a ``/setup`` call carried (values of the wrong type are ignored)."""
        if project_id is None:
            return
        if isinstance(label_config, str) and label_config.strip():
            self._configs[project_id] = label_config
        host = hostname.strip().rstrip("/") if isinstance(hostname, str) else None
        if host and not host.startswith(("http://", "https://")):
            log.warning("project %s: ignoring hostname that is not an http(s) URL", project_id)
            host = None
        token = access_token.strip() if isinstance(access_token, str) and access_token.strip() else None
        with self._lock:
            old = self._access.get(project_id, ProjectAccess())
            new = ProjectAccess(host or old.hostname, token or old.access_token)
            if new == old:
                return
            self._access[project_id] = new
            self._write()
        log.info("project %s: Label Studio at %s, token %s", project_id, new.hostname,
                 "received" if new.access_token else "missing")

    def access(self, project_id: str | None) -> ProjectAccess:
        """The project's hostname and token, each falling back to the configured defaults."""
        stored = self._access.get(project_id or "", ProjectAccess())
        return ProjectAccess(stored.hostname or self.fallback.hostname,
                             stored.access_token or self.fallback.access_token)

    def label_config(self, project_id: str | None) -> str | None:
        return self._configs.get(project_id or "")

    def _read(self) -> dict[str, ProjectAccess]:
        try:
            data = json.loads(self.path.read_text())
            return {str(pid): ProjectAccess(entry.get("hostname"), entry.get("access_token"))
                    for pid, entry in data.get("projects", {}).items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError, TypeError):
            log.warning("project store %s is unreadable; starting empty (projects reconnect through /setup)", self.path)
            return {}

    def _write(self) -> None:
        data = {"projects": {pid: {"hostname": a.hostname, "access_token": a.access_token,
                                   "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                             for pid, a in self._access.items()}}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex[:8]}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, indent=2)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot save project store %s (%s); access details stay in memory only", self.path,
                        exc.strerror)
