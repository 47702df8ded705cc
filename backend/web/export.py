"""Dataset export over HTTP: start an ``export`` job (API or dashboard form), follow it, download its zip.

The export itself never runs inside a request: the job writes ``<storage>/jobs/<id>/<name>.zip`` and the
download route streams that file once the job is done.
"""

from __future__ import annotations

from flask import Blueprint, current_app, flash, jsonify, redirect, request, send_file, url_for

from backend.errors import Conflict, CoordinatorError, NotFound
from backend.models import Job, JobKind, JobState
from backend.services.export import export_path, submit_export
from backend.services.reports import job_summary
from backend.web.auth import require_auth
from backend.web.dashboard import page

bp = Blueprint("export", __name__)


def services():
    return current_app.extensions["vl4pose"]


def _summary(job: Job) -> dict:
    done = job.state == JobState.DONE
    return {
        **job_summary(job),
        "format": (job.payload or {}).get("format"),
        "round": (job.payload or {}).get("round"),
        "annotations": (job.payload or {}).get("annotations"),
        "download_url": url_for("export.download", project_id=job.project_id, job_id=job.id) if done else None,
    }


def _export_job(session, project_id: int, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.kind != JobKind.EXPORT or job.project_id != project_id:
        raise NotFound(f"project {project_id} has no export job {job_id}")
    return job


@bp.app_context_processor
def inject() -> dict:
    """``export_jobs(project_id)`` for the dashboard's Export section: the ten newest export jobs."""

    def export_jobs(project_id: int) -> list[dict]:
        with services().db.session() as session:
            query = session.query(Job).filter(Job.project_id == project_id, Job.kind == JobKind.EXPORT)
            return [_summary(j) for j in query.order_by(Job.id.desc()).limit(10)]

    return {"export_jobs": export_jobs}


@bp.post("/api/projects/<int:project_id>/exports")
@require_auth
def start(project_id: int):
    """Body ``{"format": "coco" | "lsp" | "labelstudio", "round": R | null}`` -> 202 with the job."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise CoordinatorError('send a JSON object, e.g. {"format": "coco"} or {"format": "lsp", "round": 2}')
    svc = services()
    job_id = submit_export(svc.db, svc.jobs, project_id, body.get("format"), body.get("round"))
    with services().db.session() as session:
        return jsonify(_summary(_export_job(session, project_id, job_id))), 202


@bp.get("/api/projects/<int:project_id>/exports")
@require_auth
def listing(project_id: int):
    """The project's export jobs, newest first."""
    with services().db.session() as session:
        jobs = session.query(Job).filter(Job.project_id == project_id, Job.kind == JobKind.EXPORT)
        return jsonify({"exports": [_summary(j) for j in jobs.order_by(Job.id.desc()).limit(50)]})


@bp.get("/api/projects/<int:project_id>/exports/<int:job_id>")
@require_auth
def status(project_id: int, job_id: int):
    with services().db.session() as session:
        return jsonify(_summary(_export_job(session, project_id, job_id)))


@bp.get("/api/projects/<int:project_id>/exports/<int:job_id>/download")
@require_auth
def download(project_id: int, job_id: int):
    """The export's zip (409 while the job is not done)."""
    with services().db.session() as session:
        job = _export_job(session, project_id, job_id)
        if job.state != JobState.DONE:
            raise Conflict(f"export job {job_id} is {job.state.value} ({100 * job.progress:.0f}%); download it when done")
        path = export_path(services().job_dir(job_id), {**job.payload, "project_id": project_id})
    if not path.is_file():
        raise NotFound(f"the file of export job {job_id} is gone ({path.name}); start a new export")
    return send_file(path, mimetype="application/zip", as_attachment=True, download_name=path.name)


@bp.post("/projects/<int:project_id>/export")
@page
def start_from_dashboard(project_id: int):
    """The dashboard's export form (format, optional round)."""
    raw_round = (request.form.get("round") or "").strip()
    try:
        if raw_round and not raw_round.isdigit():
            raise CoordinatorError(f"round must be a round number, got {raw_round!r}")
        svc, round_number = services(), int(raw_round) if raw_round else None
        job_id = submit_export(svc.db, svc.jobs, project_id, request.form.get("format"), round_number)
        flash(f"Export job {job_id} queued; its download link appears under Export when it is done.")
    except CoordinatorError as exc:
        flash(str(exc), "error")
    return redirect(url_for("dashboard.project", project_id=project_id) + "#export")
