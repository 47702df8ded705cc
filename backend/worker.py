"""The worker process: a huey consumer running the coordinator's jobs and periodic tasks.

``python -m backend worker`` (preferred: re-queues jobs a killed worker left behind before it starts)
or ``huey_consumer backend.huey_app.huey -w 2 -k thread``. Several workers may share one queue: with
``VL4POSE_QUEUE=redis://...`` they can run on other machines (see docs/COORDINATOR.md).
"""

from __future__ import annotations

import logging

from backend.config import Settings
from backend.runtime import build_services

log = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


def set_torch_threads(count: int) -> None:
    if count > 0:
        import torch  # deferred on purpose: only a worker that trains or ranks loads torch

        torch.set_num_threads(count)


def run_worker(settings: Settings, threads: int | None = None, periodic: bool = True) -> None:
    """Run jobs until SIGINT/SIGTERM."""
    set_torch_threads(settings.torch_threads)
    services = build_services(settings)
    if settings.queue in ("immediate", "memory"):
        raise SystemExit(f"VL4POSE_QUEUE={settings.queue} has no worker; use sqlite or a redis:// URL")
    requeued = services.jobs.recover()
    if requeued:
        log.warning("re-queued jobs left running by a stopped worker: %s", requeued)
    consumer = services.huey.create_consumer(
        workers=threads or settings.worker_threads, worker_type="thread", periodic=periodic, check_worker_health=True
    )
    log.info(
        "worker started: %d threads on queue %s", threads or settings.worker_threads, settings.queue.split("@")[-1]
    )
    consumer.run()
