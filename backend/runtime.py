"""The composition root: builds the coordinator's parts for one process (web app or worker) from its settings.

Order: the database (migrated first when ``auto_migrate`` is on) -> the Label Studio adapter (made on first use)
-> the image store -> the huey queue -> the job runner with one handler per job kind -> the queue's tasks. Nothing
imports this module but the entry points (:func:`backend.web.app.create_app`, :mod:`backend.worker`,
:mod:`backend.huey_app`, :mod:`backend.cli`).
"""

from __future__ import annotations

from collections.abc import Callable

from backend.config import Settings
from backend.db import Database
from backend.jobs.context import Handler
from backend.jobs.evaluate import EvaluateHandler
from backend.jobs.export import ExportHandler
from backend.jobs.queue import make_huey, register_tasks
from backend.jobs.rank import RankHandler
from backend.jobs.rank_shard import RankShardHandler
from backend.jobs.reconcile import ReconcileHandler
from backend.jobs.runner import JobRunner
from backend.jobs.train import TrainHandler
from backend.models import JobKind
from backend.services.base import Services
from backend.services.images import ImageStore
from backend.services.labelstudio import LabelStudio


def job_handlers() -> dict[JobKind, Handler]:
    """One handler per job kind (the kinds stored in the ``job`` table)."""
    return {
        JobKind.TRAIN: TrainHandler(),
        JobKind.EVALUATE: EvaluateHandler(),
        JobKind.RANK: RankHandler(),
        JobKind.RANK_SHARD: RankShardHandler(),
        JobKind.EXPORT: ExportHandler(),
        JobKind.RECONCILE: ReconcileHandler(),
    }


def build_services(settings: Settings, ls_factory: Callable[[], LabelStudio] | None = None) -> Services:
    """Services for one process; migrates the database first when ``auto_migrate`` is on.

    Args:
        settings: the process's settings (``VL4POSE_*``).
        ls_factory: makes the Label Studio adapter (tests pass a fake); default: the HTTP adapter for
            ``settings.label_studio_url``.
    """
    db = Database(settings.database_url)
    if settings.auto_migrate:
        db.upgrade()

    def default_factory() -> LabelStudio:
        return LabelStudio(settings.label_studio_url, settings.label_studio_token, settings.label_studio_timeout_s)

    services = Services(settings, db, ls_factory or default_factory)
    services.images = ImageStore(
        services.storage / "cache" / "images",
        settings.label_studio_files_root or None,
        services.ls,
        settings.image_max_bytes,
        settings.image_cache_mb * 2**20,
    )
    services.huey = make_huey(settings)
    services.tasks = register_tasks(services.huey, services)
    services.jobs = JobRunner(services, job_handlers())
    return services
