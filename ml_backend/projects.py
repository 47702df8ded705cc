"""What ``/setup`` told us per Label Studio project: hostname and access token (kept on disk, so a
restarted backend can still fetch images) and the label config (kept in memory).

A token belongs to the hostname it arrived with: a ``/setup`` with another hostname and no token drops the
stored one. ``VL4POSE_LABEL_STUDIO_TOKEN`` belongs to ``VL4POSE_LABEL_STUDIO_URL`` only. The token file is
written with mode 0600 and its content is never logged.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ml_backend.images import ProjectAccess
from vl4pose.atomic import write_atomic
from vl4pose.fetch import Credential, FetchError, origin

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


@dataclass(frozen=True)
class Stored:
    """What ``/setup`` sent for one project: the hostname and the token that came with it."""

    hostname: str | None = None
    access_token: str | None = field(default=None, repr=False)


def _same_origin(a: str | None, b: str | None) -> bool:
    try:
        return a is not None and b is not None and origin(a) == origin(b)
    except FetchError:
        return False


class ProjectStore:
    """Per-project access details, persisted as JSON in ``path``.

    Args:
        path: the JSON file (mode 0600).
        label_studio_url, label_studio_token: the configured Label Studio (``VL4POSE_LABEL_STUDIO_URL`` /
            ``_TOKEN``): its origin is trusted, and its token goes to that origin only.
    """

    def __init__(self, path: Path, label_studio_url: str | None = None, label_studio_token: str | None = None) -> None:
        self.path = Path(path)
        self.label_studio_url = label_studio_url.rstrip("/") if label_studio_url else None
        self.label_studio_token = label_studio_token or None
        self._lock = threading.Lock()
        self._access: dict[str, Stored] = self._read()
        self._configs: dict[str, str] = {}

    def remember(self, project_id: str | None, hostname: object, access_token: object, label_config: object) -> None:
        """Store what a ``/setup`` call carried (values of the wrong type are ignored).

        A hostname on another origin than the stored one drops the stored token (a token only ever goes to
        the origin it arrived with).
        """
        if project_id is None:
            return
        if isinstance(label_config, str) and label_config.strip():
            self._configs[project_id] = label_config
        host = hostname.strip().rstrip("/") if isinstance(hostname, str) else None
        if host:
            try:
                origin(host)
            except FetchError:
                log.warning("project %s: ignoring hostname that is not an http(s) URL", project_id)
                host = None
        token = access_token.strip() if isinstance(access_token, str) and access_token.strip() else None
        with self._lock:
            old = self._access.get(project_id, Stored())
            if host and old.hostname and not _same_origin(host, old.hostname):
                log.warning("project %s: Label Studio moved from %s to %s; the old token is dropped", project_id,
                            old.hostname, host)
                old = Stored()
            new = Stored(host or old.hostname, token or old.access_token)
            if new.access_token and not new.hostname:
                new = Stored(None, None)  # a token without the origin it belongs to is never used
            if new == old and project_id in self._access:
                return
            self._access[project_id] = new
            self._write()
        log.info("project %s: Label Studio at %s, token %s", project_id, new.hostname,
                 "received" if new.access_token else "missing")

    def access(self, project_id: str | None) -> ProjectAccess:
        """How to read the project's images: its hostname (else the configured Label Studio URL), each token
        bound to its own origin, and Label Studio's origin trusted (the configured one; without one, the
        ``/setup`` hostname)."""
        stored = self._access.get(project_id or "", Stored())
        credentials = []
        if stored.hostname and stored.access_token:
            credentials.append(Credential.token(stored.hostname, stored.access_token))
        if self.label_studio_url and self.label_studio_token:
            credentials.append(Credential.token(self.label_studio_url, self.label_studio_token))
        trusted = (self.label_studio_url,) if self.label_studio_url else (stored.hostname,) if stored.hostname else ()
        return ProjectAccess(stored.hostname or self.label_studio_url, tuple(credentials), trusted)

    def label_config(self, project_id: str | None) -> str | None:
        return self._configs.get(project_id or "")

    def _read(self) -> dict[str, Stored]:
        try:
            data = json.loads(self.path.read_text())
            return {str(pid): Stored(entry.get("hostname"), entry.get("access_token"))
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
            write_atomic(self.path, json.dumps(data, indent=2), mode=0o600)
        except OSError as exc:
            log.warning("cannot save project store %s (%s); access details stay in memory only", self.path,
                        exc.strerror)
