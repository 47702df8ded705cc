"""The ``rank_shard`` job: predicts, stores and imports one shard of a round's ranking
(:mod:`backend.services.rank_shards` has the steps and the details)."""

from __future__ import annotations

import logging

from backend.jobs.context import Handler, JobContext
from backend.services.base import Services
from backend.services.queue_order import is_joint
from backend.services.rank_shards import import_predictions, predict_tasks, stored_count

log = logging.getLogger(__name__)


class RankShardHandler(Handler):
    """Payload: ``{"version", "index", "tasks": [[task id, image URL], ...]}``; done: ``{"version", "index",
    "ranked", "failed", "imported"}``."""

    def run(self, ctx: JobContext) -> None:
        services, version = ctx.services, ctx.payload["version"]
        project = ctx.project()
        tasks = [(int(t), str(u)) for t, u in ctx.payload.get("tasks", [])]
        failed = predict_tasks(ctx, project, version, tasks) if tasks else 0
        if is_joint(project.strategy):  # the rank job orders the whole round, then imports (queue_order)
            ranked, imported = stored_count(services.db, project, version, [t for t, _ in tasks]), 0
        else:
            ranked = imported = import_predictions(ctx, project, version, [t for t, _ in tasks]) if tasks else 0
        ctx.payload.pop("tasks", None)
        ctx.payload.pop("imported_through", None)
        ctx.payload.update(ranked=ranked, failed=failed, imported=imported)
        log.info("rank shard %d (job %d): %d tasks ranked, %d unreadable", ctx.payload.get("index", 0), ctx.job_id,
                 ranked, failed)

    def reset(self, services: Services, job_id: int) -> None:
        """A failed shard retried by hand keeps what it stored and imported; it goes on from there."""
