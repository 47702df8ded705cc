"""What the dashboard and the JSON API show: projects, rounds with both accuracy measures, jobs, failures
and the head of the queue. Plain dicts (JSON-safe), computed from the database only."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.errors import NotFound
from backend.models import (
    AnnotationRecord,
    AnnotationStatus,
    EventState,
    Job,
    JobState,
    ModelVersion,
    Project,
    Round,
    RoundState,
    TaskPrediction,
    WebhookEvent,
)
from backend.services.inbox import event_report
from backend.services.samples import clean


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def project_summary(project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "ls_project_id": project.ls_project_id,
        "title": project.title,
        "skeleton": project.skeleton,
        "strategy": project.strategy,
        "round_budget": project.round_budget,
        "validation_policy": project.validation_policy,
        "holdout_fraction": project.holdout_fraction,
        "image_source": project.image_source,
        "ml_backend_id": project.ml_backend_id,
        "webhook_id": project.webhook_id,
        "created_at": _time(project.created_at),
    }


def round_summary(round_: Round) -> dict[str, Any]:
    metrics = round_.metrics or {}
    return clean(
        {
            "number": round_.number,
            "state": round_.state.value,
            "model_version": round_.model_version,
            "budget": round_.budget,
            "labelled": round_.labelled_count,
            "accepted": round_.accepted_count,
            "corrected": round_.corrected_count,
            "served_pck": metrics.get("served_pck"),
            "accepted_share": metrics.get("accepted_share"),
            "corrections_per_task": metrics.get("corrections_per_task"),
            "no_correction_share": metrics.get("no_correction_share"),
            "unserved_tasks": metrics.get("unserved_tasks"),
            "unserved_keypoints_per_task": metrics.get("unserved_keypoints_per_task"),
            "trained_version": metrics.get("trained_version"),
            "holdout_pck": metrics.get("holdout_pck"),
            "holdout_images": metrics.get("holdout_images"),
            "train_images": metrics.get("train_images"),
            "close_reason": round_.close_reason,
            "error": round_.error,
            "selected_tasks": len(round_.selected_tasks or []),
            "metrics": metrics,
            "timings": round_.timings or {},
            "opened_at": _time(round_.opened_at),
            "closed_at": _time(round_.closed_at),
            "ranked_at": _time(round_.ranked_at),
            "close_to_ranked_s": (round_.timings or {}).get("close_to_ranked_s"),
        }
    )


def job_summary(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind.value,
        "state": job.state.value,
        "progress": round(job.progress, 4),
        "stage": job.stage,
        "attempts": job.attempts,
        "error": job.error,
        "project_id": job.project_id,
        "round_id": job.round_id,
        "version": (job.payload or {}).get("version"),
        "created_at": _time(job.created_at),
        "started_at": _time(job.started_at),
        "finished_at": _time(job.finished_at),
        "heartbeat_at": _time(job.heartbeat_at),
    }


def get_project(session: Session, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound(f"project {project_id} is not linked; see GET /api/projects")
    return project


def list_projects(session: Session) -> list[dict[str, Any]]:
    out = []
    for project in session.scalars(select(Project).order_by(Project.id)):
        latest = project.rounds[-1] if project.rounds else None
        out.append(
            {
                **project_summary(project),
                "rounds": len(project.rounds),
                "current_round": round_summary(latest) if latest else None,
            }
        )
    return out


def queue_head(session: Session, project: Project, limit: int) -> list[dict[str, Any]]:
    """The lowest-score unlabelled tasks under the current round's model version."""
    latest = project.rounds[-1] if project.rounds else None
    version = latest.model_version if latest else None
    if version is None:
        return []
    labelled = select(AnnotationRecord.task_id).where(
        AnnotationRecord.project_id == project.id, AnnotationRecord.status == AnnotationStatus.SUBMITTED
    )
    rows = session.scalars(
        select(TaskPrediction)
        .where(
            TaskPrediction.project_id == project.id,
            TaskPrediction.model_version == version,
            TaskPrediction.task_id.not_in(labelled),
        )
        .order_by(TaskPrediction.score, TaskPrediction.task_id)
        .limit(limit)
    ).all()
    return [
        {
            "task_id": r.task_id,
            "score": r.score,
            "log_likelihood": r.log_likelihood,
            "model_version": version,
            "image_url": r.image_url,
            "placed": sum(bool(p) for p in r.placed),
        }
        for r in rows
    ]


def accuracy_series(session: Session, project: Project) -> dict[str, list]:
    """Per round, as ``[round, value]`` pairs: served-pose PCK (annotators' corrections), the correction effort
    of the served tasks (``corrections_per_task``, ``no_correction_share``) and held-out PCK of the version
    trained after it; the initial version's held-out PCK is round 0."""
    rounds = [round_summary(r) for r in project.rounds]
    versions = {
        v.version: v for v in session.scalars(select(ModelVersion).where(ModelVersion.project_id == project.id))
    }

    def series(key: str) -> list[list]:
        return [[r["number"], r[key]] for r in rounds if r.get(key) is not None]

    holdout = series("holdout_pck")
    first = project.rounds[0].model_version if project.rounds else None
    if first in versions and (versions[first].metrics or {}).get("holdout_pck") is not None:
        holdout.insert(0, [0, versions[first].metrics["holdout_pck"]])
    return clean({"served_pck": series("served_pck"), "no_correction_share": series("no_correction_share"),
                  "corrections_per_task": series("corrections_per_task"), "holdout_pck": holdout})


def failures(session: Session, project: Project, events: dict[str, Any], limit: int = 10) -> list[dict[str, Any]]:
    """Failed and retrying jobs, failed and stuck webhook events (with ``event_id``: retry or dismiss them),
    and ignored events with a reason."""
    jobs = session.scalars(
        select(Job)
        .where(Job.project_id == project.id, Job.state.in_([JobState.FAILED, JobState.RETRYING]))
        .order_by(Job.id.desc())
        .limit(limit)
    ).all()
    out = [
        {
            "what": f"{j.kind.value} job {j.id}",
            "state": j.state.value,
            "error": j.error,
            "at": _time(j.finished_at or j.heartbeat_at),
        }
        for j in jobs
    ]
    out += [
        {
            "what": f"webhook event {e['id']} ({e['action']}, annotation {e['annotation_id']}, {e['source']})",
            "state": "stuck" if e["state"] == "pending" else e["state"],
            "error": e["error"] or ("not processed yet: is the worker running?" if e["state"] == "pending" else None),
            "at": e["received_at"],
            "event_id": e["id"],
        }
        for e in events["failed_events"] + events["stuck_events"]
    ]
    ignored = session.scalars(
        select(WebhookEvent)
        .where(
            WebhookEvent.ls_project_id == project.ls_project_id,
            WebhookEvent.state == EventState.IGNORED,
            WebhookEvent.error.is_not(None),
        )
        .order_by(WebhookEvent.id.desc())
        .limit(limit)
    ).all()
    out += [
        {"what": f"webhook event {e.id} ({e.action})", "state": "ignored", "error": e.error, "at": _time(e.received_at)}
        for e in ignored
    ]
    return out


def training_budget(settings: Any) -> str:
    """How each round's training is bounded, in words (shown on the dashboard and in the API)."""
    minutes = settings.train_time_budget_minutes
    return f"{minutes:g} min per round" if minutes > 0 else f"{settings.train_epochs} epochs per round (no time budget)"


def project_report(session: Session, project_id: int, queue_limit: int = 12) -> dict[str, Any]:
    """Everything the dashboard shows for one project."""
    project = get_project(session, project_id)
    jobs = session.scalars(select(Job).where(Job.project_id == project.id).order_by(Job.id.desc()).limit(20)).all()
    active = [j for j in jobs if j.state in (JobState.QUEUED, JobState.RUNNING, JobState.RETRYING)]
    counts = dict(
        session.execute(
            select(AnnotationRecord.status, func.count())
            .where(AnnotationRecord.project_id == project.id)
            .group_by(AnnotationRecord.status)
        ).all()
    )
    versions = session.scalars(
        select(ModelVersion).where(ModelVersion.project_id == project.id).order_by(ModelVersion.id)
    ).all()
    events = event_report(session, project.ls_project_id)
    latest = project.rounds[-1] if project.rounds else None
    return {
        "project": project_summary(project),
        "current_round": round_summary(latest) if latest else None,
        "rounds": [round_summary(r) for r in project.rounds],
        "accuracy": accuracy_series(session, project),
        "current_job": job_summary(active[-1]) if active else None,
        "jobs": [job_summary(j) for j in jobs],
        "failures": failures(session, project, events),
        "queue": queue_head(session, project, queue_limit),
        "model_versions": [
            clean(
                {
                    "version": v.version,
                    "parent": v.parent,
                    "train_images": v.train_images,
                    "metrics": v.metrics,
                    "created_at": _time(v.created_at),
                }
            )
            for v in versions
        ],
        "annotations": {s.value: counts.get(s, 0) for s in AnnotationStatus},
        "pending_events": events["pending"],
        "events": events,
        "open": latest is not None and latest.state == RoundState.OPEN,
    }
