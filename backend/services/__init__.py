"""The coordinator's services, built once per process (web app or worker) from its settings."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from backend.config import Settings
from backend.db import Database
from backend.services.images import ImageStore

if TYPE_CHECKING:
    from huey import Huey

    from backend.jobs import JobRunner
    from backend.queue import Tasks
    from backend.services.labelstudio import LabelStudio
    from vl4pose.registry import ModelRegistry

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What request handlers and jobs share: settings, database, queue, Label Studio, model registry.

    ``ls_factory`` makes the Label Studio adapter; tests replace it with a fake.
    """

    settings: Settings
    db: Database
    ls_factory: Callable[[], LabelStudio]
    huey: Huey = field(init=False)
    tasks: Tasks = field(init=False)
    jobs: JobRunner = field(init=False)
    images: ImageStore = field(init=False)
    _ls: LabelStudio | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        from backend.jobs import JobRunner
        from backend.queue import make_huey, register_tasks

        self.huey = make_huey(self.settings)
        self.tasks = register_tasks(self.huey, self)
        self.jobs = JobRunner(self)
        self.images = ImageStore(
            self.storage / "cache" / "images",
            self.settings.label_studio_files_root or None,
            self.ls,
            self.settings.image_max_bytes,
            self.settings.image_cache_mb * 2**20,
        )

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
        from vl4pose.registry import ModelRegistry

        return ModelRegistry(self.settings.models_dir)

    def job_dir(self, job_id: int) -> Path:
        return self.storage / "jobs" / str(job_id)

    def close(self) -> None:
        if self._ls is not None and hasattr(self._ls, "close"):
            self._ls.close()
        self.db.dispose()


def build_services(settings: Settings, ls_factory: Callable[[], LabelStudio] | None = None) -> Services:
    """Services for one process; migrates the database first when ``auto_migrate`` is on."""
    db = Database(settings.database_url)
    if settings.auto_migrate:
        db.upgrade()

    def default_factory() -> LabelStudio:
        from backend.services.labelstudio import LabelStudio

        return LabelStudio(settings.label_studio_url, settings.label_studio_token, settings.label_studio_timeout_s)

    return Services(settings, db, ls_factory or default_factory)
