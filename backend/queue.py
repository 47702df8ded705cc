"""The job queue on huey: the storage chosen by ``VL4POSE_QUEUE`` and the tasks workers run.

- ``sqlite`` (default): ``SqliteHuey`` in ``<storage>/queue.sqlite``; web and workers on one machine.
- ``redis://host:port/db``: ``PriorityRedisHuey`` (event processing goes first: plain ``RedisHuey`` refuses task
  priorities); workers on other machines (needs the ``redis`` package: ``pip install -e ".[distributed]"``).
- ``immediate``: tasks run inside the caller (unit tests); ``memory``: queued in memory, never run.

The huey tasks are thin: they call :class:`backend.jobs.JobRunner` and the event and reconcile
services, which keep the real state in the database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from huey import MemoryHuey, SqliteHuey, crontab

from backend.config import Settings

if TYPE_CHECKING:
    from huey import Huey

    from backend.services import Services

log = logging.getLogger(__name__)

QUEUE_NAME = "vl4pose"


def make_huey(settings: Settings) -> Huey:
    if settings.queue in ("immediate", "memory"):
        return MemoryHuey(QUEUE_NAME, immediate=settings.queue == "immediate", results=False)
    if settings.queue == "sqlite":
        settings.queue_file.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(QUEUE_NAME, filename=str(settings.queue_file), results=False, timeout=30)
    from huey import PriorityRedisHuey

    return PriorityRedisHuey(QUEUE_NAME, url=settings.queue, results=False)


@dataclass
class Tasks:
    """The registered huey tasks (call one to enqueue it)."""

    run_job: Any
    process_events: Any
    reconcile_all: Any
    recover_jobs: Any


def register_tasks(huey: Huey, services: Services) -> Tasks:
    """Register the coordinator's tasks on ``huey``, bound to ``services``."""

    @huey.task(name="vl4pose.run_job")
    def run_job(job_id: int) -> None:
        services.jobs.run(job_id)

    @huey.task(name="vl4pose.process_events", priority=10)
    def process_events() -> None:
        from backend.services.events import process_pending

        process_pending(services)

    @huey.periodic_task(crontab(minute=f"*/{services.settings.reconcile_minutes}"), name="vl4pose.reconcile_all")
    def reconcile_all() -> None:
        from backend.services.events import process_pending, prune_inbox
        from backend.services.reconcile import reconcile_all_projects

        process_pending(services)
        reconcile_all_projects(services)
        prune_inbox(services)

    @huey.periodic_task(crontab(minute="*"), name="vl4pose.recover_jobs")
    def recover_jobs() -> None:
        services.jobs.recover()

    return Tasks(run_job, process_events, reconcile_all, recover_jobs)
