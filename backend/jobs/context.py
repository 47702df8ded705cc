"""What a job handler sees (:class:`JobContext`), the handler interface, and worker identity for recovery."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import update

from backend.errors import CoordinatorError
from backend.models import Job, JobKind, Project, utcnow
from backend.services.base import Services

log = logging.getLogger(__name__)

PROCESS_TOKEN = uuid.uuid4().hex[:8]


def owner_id() -> str:
    """This process: ``host:pid:token`` (the token tells a restarted process with a reused pid apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{PROCESS_TOKEN}"


def owner_is_dead(owner: str | None) -> bool:
    """True when ``owner`` was a process on this host that no longer runs."""
    if not owner or owner.count(":") < 2:
        return False
    host, pid_text, token = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return False
    pid = int(pid_text) if pid_text.isdigit() else -1
    if pid == os.getpid():
        return token != PROCESS_TOKEN
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False
    return False


class Waiting(Exception):
    """Raised by a handler that waits for other jobs (a ranking for its shards): the job gives its worker thread
    back, stays ``queued`` with ``message`` as its stage (the attempt is not counted) and runs again after
    ``delay`` seconds, or as soon as one of its parts queues it."""

    def __init__(self, delay: float, message: str) -> None:
        super().__init__(message)
        self.delay = delay
        self.message = message


@dataclass
class Followup:
    kind: JobKind
    project_id: int | None
    round_id: int | None
    payload: dict


@dataclass
class JobContext:
    """What a handler gets: the job's identity, folder, payload, and ways to report progress."""

    services: Services
    job_id: int
    kind: JobKind
    project_id: int | None
    round_id: int | None
    payload: dict
    attempt: int
    followups: list[Followup] = field(default_factory=list)
    parent_id: int | None = None
    _last: float = 0.0

    @property
    def dir(self) -> Path:
        path = self.services.job_dir(self.job_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def progress(self, fraction: float, stage: str | None = None, force: bool = False) -> None:
        """Record progress in [0, 1] (throttled to two writes a second unless the stage changes)."""
        now = time.monotonic()
        if not force and stage is None and now - self._last < 0.5:
            return
        self._last = now
        values: dict[str, Any] = {"progress": max(0.0, min(1.0, float(fraction))), "heartbeat_at": utcnow()}
        if stage is not None:
            values["stage"] = stage[:200]
            log.info("job %d (%s): %s", self.job_id, self.kind.value, stage)
        with self.services.db.session() as session:
            session.execute(update(Job).where(Job.id == self.job_id).values(**values))

    def project(self) -> Project:
        """The job's project, detached from its session (read-only use). Raises CoordinatorError when it is gone."""
        with self.services.db.session() as session:
            project = session.get(Project, self.project_id)
            if project is None:
                raise CoordinatorError(f"project {self.project_id} is not linked any more")
            session.expunge(project)
        return project

    def save_payload(self, **values: Any) -> None:
        """Merge values into the job's payload (a handler's resumable bookkeeping)."""
        self.payload.update(values)
        with self.services.db.session() as session:
            session.execute(update(Job).where(Job.id == self.job_id).values(payload=dict(self.payload)))

    def then(self, kind: JobKind, payload: dict, round_id: int | None = None) -> None:
        """Submit another job once this one is done."""
        self.followups.append(
            Followup(kind, self.project_id, round_id if round_id is not None else self.round_id, payload)
        )


class Handler:
    """A job kind: ``run`` does the work; ``failed`` records a final failure (e.g. on the round)."""

    def run(self, ctx: JobContext) -> None:
        raise NotImplementedError

    def failed(self, ctx: JobContext, message: str) -> None:
        """Called once when the job fails for good."""

    def reset(self, services: Services, job_id: int) -> None:
        """Forget resumable state before a failed job is retried by hand."""
