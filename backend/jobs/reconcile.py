"""The ``reconcile`` job: pending webhook events, then a reconcile of one project
(:mod:`backend.services.reconcile`)."""

from __future__ import annotations

from backend.jobs.context import Handler, JobContext
from backend.services.events import process_pending
from backend.services.reconcile import reconcile


class ReconcileHandler(Handler):
    """The ``reconcile`` job (``POST /api/projects/<id>/reconcile``): pending inbox events, then a reconcile
    of the project. Payload ``{"full": bool | null}``; done: ``{"events_processed", "result": counts}``.
    A reconcile already running elsewhere makes the job retry later (transient)."""

    def run(self, ctx: JobContext) -> None:
        ctx.progress(0.05, "processing pending webhook events", force=True)
        processed = process_pending(ctx.services.db, ctx.services.jobs)
        ctx.progress(0.2, "reading annotations from Label Studio", force=True)
        result = reconcile(ctx.services, ctx.project_id, full=ctx.payload.get("full"))
        ctx.payload.update(events_processed=processed, result=result)
