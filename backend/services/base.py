"""The :class:`Services` record of the coordinator's built parts, and the :class:`JobQueue` protocol.

:mod:`backend.runtime` (the composition root) builds one record per process (web app or worker) and fills in the
parts that need the record themselves (the job runner, the queue's tasks). Job handlers and the web layer hold the
record and hand each service function the parts it uses; services see the job runner through the
:class:`JobQueue` protocol, so no service imports :mod:`backend.jobs`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from backend.config import Settings
from backend.db import Database
from backend.models import Job, JobKind
from backend.services.images import ImageStore

if TYPE_CHECKING:
    from huey import Huey
    from sqlalchemy.orm import Session

    from backend.services.labelstudio import LabelStudio
    from vl4pose.registry import ModelRegistry

log = logging.getLogger(__name__)


class JobQueue(Protocol):
    """What services use of the job runner (:class:`backend.jobs.runner.JobRunner`)."""

    def create(
        self,
        session: Session,
        kind: JobKind,
        project_id: int | None,
        round_id: int | None = None,
        payload: dict | None = None,
        parent_id: int | None = None,
    ) -> Job:
        """A queued job row inside the caller's transaction; :meth:`enqueue` it after the commit."""

    def submit(
        self, kind: JobKind, project_id: int | None, round_id: int | None = None, payload: dict | None = None
    ) -> int:
        """Create and enqueue a job; returns its id."""

    def enqueue(self, job_id: int) -> None:
        """Ask a worker to run the job."""

    def retry(self, job_id: int) -> int:
        """Run a failed job again."""

    def recover(self, parent_id: int | None = None) -> list[int]:
        """Re-queue jobs whose worker died or went silent."""

    def run(self, job_id: int) -> None:
        """Run one job in this thread."""


@dataclass
class Tasks:
    """The registered huey tasks (call one to enqueue it); :func:`backend.jobs.queue.register_tasks` makes them."""

    run_job: Any
    process_events: Any
    reconcile_all: Any
    recover_jobs: Any


@dataclass
class Services:
    """What request handlers and jobs share: settings, database, queue, Label Studio, images, model registry.

    ``ls_factory`` makes the Label Studio adapter (tests replace it with a fake). ``images``, ``huey``, ``tasks``
    and ``jobs`` are set by :func:`backend.runtime.build_services`.
    """

    settings: Settings
    db: Database
    ls_factory: Callable[[], LabelStudio]
    images: ImageStore = field(init=False)
    huey: Huey = field(init=False)
    tasks: Tasks = field(init=False)
    jobs: JobQueue = field(init=False)
    _ls: LabelStudio | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def storage(self) -> Path:
        return self.settings.storage_path

    def ls(self) -> LabelStudio:
        """The shared Label Studio adapter (created on first use)."""
        with self._lock:
            if self._ls is None:
                self._ls = self.ls_factory()
            return self._ls

    def registry(self) -> ModelRegistry:
        # deferred on purpose: vl4pose.registry loads torch (checkpoints), which the web process never needs
        from vl4pose.registry import ModelRegistry

        return ModelRegistry(self.settings.models_dir)

    def job_dir(self, job_id: int) -> Path:
        return self.storage / "jobs" / str(job_id)

    def close(self) -> None:
        if self._ls is not None and hasattr(self._ls, "close"):
            self._ls.close()
        self.db.dispose()
