"""The ``export`` job: a project's dataset as a zip in the job's folder
(:func:`backend.services.export.export_dataset`)."""

from __future__ import annotations

import shutil

from backend.jobs.context import Handler, JobContext
from backend.services.base import Services
from backend.services.export import export_dataset, export_path


class ExportHandler(Handler):
    """The ``export`` job: writes ``<storage>/jobs/<id>/project-<id>-<format>.zip``; the API serves it."""

    def run(self, ctx: JobContext) -> None:
        payload = {**ctx.payload, "project_id": ctx.project_id}
        out = export_path(ctx.services.job_dir(ctx.job_id), payload)
        ctx.dir  # noqa: B018 - creates the job folder
        if out.is_file():  # a re-run after the zip was already moved into place
            ctx.save_payload(file=out.name)
            return
        summary = export_dataset(
            ctx.services, ctx.project_id, payload["format"], out, payload.get("round"),
            progress=lambda fraction, stage: ctx.progress(fraction, stage),
        )
        ctx.save_payload(file=out.name, annotations=summary["annotations"], seconds=summary["seconds"])

    def reset(self, services: Services, job_id: int) -> None:
        shutil.rmtree(services.job_dir(job_id), ignore_errors=True)
