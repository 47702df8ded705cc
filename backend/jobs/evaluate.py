"""The ``evaluate`` job: held-out accuracy of an already published version (e.g. the initial model)."""

from __future__ import annotations

from sqlalchemy import select

from backend.jobs.context import Handler, JobContext
from backend.models import ModelVersion
from backend.services.samples import clean, evaluate_version


class EvaluateHandler(Handler):
    """Held-out accuracy of a published version, stored on its row (payload ``{"version"}``)."""

    def run(self, ctx: JobContext) -> None:
        version = ctx.payload["version"]
        ctx.progress(0.1, f"evaluating {version} on the held-out set", force=True)
        services = ctx.services
        checkpoint = services.registry().path(version)
        metrics = evaluate_version(services.db, services.images, services.settings, ctx.project_id, checkpoint)
        with services.db.session() as session:
            row = session.scalar(select(ModelVersion).where(ModelVersion.version == version))
            if row is not None:
                row.metrics = clean({**(row.metrics or {}), **metrics})
