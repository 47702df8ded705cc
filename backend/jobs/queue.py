"""The job queue on huey: the storage chosen by ``VL4POSE_QUEUE`` and the tasks workers run.

- ``sqlite`` (default): ``SqliteHuey`` in ``<storage>/queue.sqlite``; web and workers on one machine.
- ``redis://host:port/db``: ``PriorityRedisHuey`` (event processing goes first: plain ``RedisHuey`` refuses task
  priorities); workers on other machines (needs the ``redis`` package: ``pip install -e ".[distributed]"``).
- ``immediate``: tasks run inside the caller (unit tests); ``memory``: queued in memory, never run.

The huey tasks are thin: they call :class:`backend.jobs.runner.JobRunner` and the event and reconcile
services, which keep the real state in the database.

Huey stores a queued message under ``<function module>.<task name>``: the tasks keep the module of their first
home, ``backend.queue`` (:data:`TASK_MODULE`), so that messages already queued in SQLite or Redis by an older
coordinator still find their task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from huey import Huey, MemoryHuey, PriorityRedisHuey, SqliteHuey, crontab

from backend.config import Settings
from backend.services.base import Services, Tasks
from backend.services.events import process_pending, prune_inbox
from backend.services.reconcile import reconcile_all_projects

log = logging.getLogger(__name__)

QUEUE_NAME = "vl4pose"
TASK_MODULE = "backend.queue"  # part of every persisted message's task name: never change it

F = TypeVar("F", bound=Callable)


def _stable(func: F) -> F:
    """Give a task function the module name huey's persisted messages expect (see :data:`TASK_MODULE`)."""
    func.__module__ = TASK_MODULE
    return func


def make_huey(settings: Settings) -> Huey:
    if settings.queue in ("immediate", "memory"):
        return MemoryHuey(QUEUE_NAME, immediate=settings.queue == "immediate", results=False)
    if settings.queue == "sqlite":
        settings.queue_file.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(QUEUE_NAME, filename=str(settings.queue_file), results=False, timeout=30)
    return PriorityRedisHuey(QUEUE_NAME, url=settings.queue, results=False)


def register_tasks(huey: Huey, services: Services) -> Tasks:
    """Register the coordinator's tasks on ``huey``, bound to ``services`` (its job runner runs the jobs)."""

    @huey.task(name="vl4pose.run_job")
    @_stable
    def run_job(job_id: int) -> None:
        services.jobs.run(job_id)

    @huey.task(name="vl4pose.process_events", priority=10)
    @_stable
    def process_events() -> None:
        process_pending(services.db, services.jobs)

    @huey.periodic_task(crontab(minute=f"*/{services.settings.reconcile_minutes}"), name="vl4pose.reconcile_all")
    @_stable
    def reconcile_all() -> None:
        process_pending(services.db, services.jobs)
        reconcile_all_projects(services)
        prune_inbox(services.db, services.settings.inbox_keep_days)

    @huey.periodic_task(crontab(minute="*"), name="vl4pose.recover_jobs")
    @_stable
    def recover_jobs() -> None:
        services.jobs.recover()

    return Tasks(run_job, process_events, reconcile_all, recover_jobs)
