"""The JSON API: the dashboard's data, linking, closing rounds, reconcile, jobs. Bearer token or session."""

from __future__ import annotations

import dataclasses

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select, text

from backend.errors import CoordinatorError, NotFound
from backend.models import Job, JobKind, JobState, TaskPrediction
from backend.services import inbox, reports
from backend.services.annotations import keypoints_from_json
from backend.services.linking import LinkRequest, link_project
from backend.services.render import render_pose
from backend.services.rounds import close_round
from backend.web.auth import require_auth
from backend.web.converters import install
from vl4pose.skeletons import get_skeleton

bp = Blueprint("api", __name__, url_prefix="/api")
bp.record_once(install)  # the <id:...> converter, before the routes below are bound


def services():
    return current_app.extensions["vl4pose"]


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, str(default))
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise CoordinatorError(f"query parameter {name!r} must be an integer in [{low}, {high}]")
    return int(raw)


@bp.get("/health")
def health():
    with services().db.session() as session:
        session.execute(text("SELECT 1"))
    return jsonify({"ok": True, "queue": services().settings.queue.split("://")[0]})


@bp.get("/projects")
@require_auth
def projects():
    with services().db.session() as session:
        return jsonify({"projects": reports.list_projects(session)})


@bp.post("/projects")
@require_auth
def link():
    body = request.get_json(silent=True)
    if body is None:
        raise CoordinatorError('send a JSON object, e.g. {"images": "/data/photos", "skeleton": "lsp14"}')
    result = link_project(services(), LinkRequest.from_dict(body))
    return jsonify(dataclasses.asdict(result)), 201


@bp.get("/projects/<id:project_id>")
@require_auth
def project(project_id: int):
    limit = _int_arg("queue", 12, 0, 200)
    with services().db.session() as session:
        report = reports.project_report(session, project_id, limit)
    report["training_budget"] = reports.training_budget(services().settings)
    return jsonify(report)


@bp.get("/projects/<id:project_id>/rounds")
@require_auth
def rounds(project_id: int):
    with services().db.session() as session:
        project = reports.get_project(session, project_id)
        return jsonify(
            {
                "rounds": [reports.round_summary(r) for r in project.rounds],
                "accuracy": reports.accuracy_series(session, project),
            }
        )


@bp.get("/projects/<id:project_id>/queue")
@require_auth
def queue(project_id: int):
    limit = _int_arg("limit", 50, 1, 1000)
    with services().db.session() as session:
        return jsonify({"queue": reports.queue_head(session, reports.get_project(session, project_id), limit)})


@bp.post("/projects/<id:project_id>/rounds/close")
@require_auth
def close(project_id: int):
    svc = services()
    return jsonify({"job_id": close_round(svc.db, svc.jobs, project_id)}), 202


@bp.post("/projects/<id:project_id>/reconcile")
@require_auth
def reconcile(project_id: int):
    """Queue a reconcile job (pending events, then the project's annotations from Label Studio) and answer at once:
    202 with the job id and state (and the counts when the job is already done, e.g. with an immediate queue).
    ``?full=1`` reads every task instead of those changed since the last reconcile. A reconcile job of the project
    that is still queued or running is answered instead of a second one."""
    svc = services()
    full = request.args.get("full", "").lower() in ("1", "true", "yes")
    with svc.db.session() as session:
        reports.get_project(session, project_id)
        pending = session.scalar(
            select(Job.id).where(
                Job.project_id == project_id,
                Job.kind == JobKind.RECONCILE,
                Job.state.in_([JobState.QUEUED, JobState.RUNNING, JobState.RETRYING]),
            ).limit(1)
        )
    job_id = pending or svc.jobs.submit(JobKind.RECONCILE, project_id, payload={"full": True if full else None})
    with svc.db.session() as session:
        job = session.get(Job, job_id)
        body = {"job_id": job_id, "state": job.state.value, "already_queued": pending is not None}
        if job.state == JobState.DONE:
            body.update(events_processed=job.payload.get("events_processed", 0), **(job.payload.get("result") or {}))
        elif job.error:
            body["error"] = job.error
    return jsonify(body), 202


@bp.get("/jobs/<id:job_id>")
@require_auth
def job(job_id: int):
    with services().db.session() as session:
        row = session.get(Job, job_id)
        if row is None:
            raise NotFound(f"job {job_id} does not exist")
        return jsonify(reports.job_summary(row))


@bp.post("/jobs/<id:job_id>/retry")
@require_auth
def retry(job_id: int):
    return jsonify({"job_id": services().jobs.retry(job_id)}), 202


@bp.post("/events/<id:event_id>/retry")
@require_auth
def retry_event(event_id: int):
    """Put a failed (or dismissed) webhook event back in the queue; 202 with the event as it is now."""
    svc = services()
    return jsonify({"event": inbox.retry_event(svc.db, svc.tasks.process_events, event_id)}), 202


@bp.post("/events/<id:event_id>/dismiss")
@require_auth
def dismiss_event(event_id: int):
    """Drop a failed or stuck webhook event (kept as ``dismissed``, never processed)."""
    return jsonify({"event": inbox.dismiss_event(services().db, event_id)})


@bp.get("/projects/<id:project_id>/tasks/<id:task_id>/pose.png")
@require_auth
def pose_png(project_id: int, task_id: int):
    """The task's image with the current round's refined prediction drawn on it."""
    svc = services()
    with svc.db.session() as session:
        project = reports.get_project(session, project_id)
        version = request.args.get("version") or (project.rounds[-1].model_version if project.rounds else None)
        row = session.scalar(
            select(TaskPrediction).where(
                TaskPrediction.project_id == project_id,
                TaskPrediction.task_id == task_id,
                TaskPrediction.model_version == version,
            )
        )
        if row is None:
            raise NotFound(f"task {task_id} has no prediction of model version {version}")
        skeleton = get_skeleton(project.skeleton)
    try:
        image = svc.images.get(row.image_url)
    except CoordinatorError:
        image = None  # Label Studio unreachable or image gone: draw the pose on a blank canvas
    png = render_pose(
        image,
        tuple(row.image_size),
        keypoints_from_json(row.keypoints, skeleton.num_keypoints),
        np.asarray(row.placed, dtype=bool),
        np.asarray(row.confidence, dtype=float),
        skeleton,
    )
    return Response(png, mimetype="image/png", headers={"Cache-Control": "private, max-age=300"})
