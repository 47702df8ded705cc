"""Rounds: which round is current, its counts, and closing it (budget reached or by hand).

A round is the period during which one model version ranks the queue. It opens when that version's
predictions are in Label Studio (or at linking), closes when its budget of labelled tasks is reached
or by hand, then trains -> evaluates -> ranks; when the new ranking is in place the round is ``done``
and the next one opens. Annotations submitted while a closed round trains still count for it (they
were served by its model version).
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from backend.db import Database
from backend.errors import Conflict, NotFound
from backend.models import (
    AnnotationRecord,
    AnnotationStatus,
    Job,
    JobKind,
    JobState,
    Project,
    Round,
    RoundState,
    utcnow,
)
from backend.services.base import JobQueue


log = logging.getLogger(__name__)


def version_name(project: Project, round_number: int) -> str:
    """The model version trained after round N of a project (``p<ls id>-v<N>``; v0 = initial model)."""
    return f"p{project.ls_project_id}-v{round_number}"


def current_round(session: Session, project_id: int) -> Round | None:
    """The project's latest round (open, or closed and being processed), or None before the first."""
    return session.scalar(select(Round).where(Round.project_id == project_id).order_by(Round.number.desc()).limit(1))


def open_round(session: Session, project: Project, model_version: str | None, selected: list[int]) -> Round:
    """Open the next round (idempotent: an already open latest round is returned as is)."""
    latest = current_round(session, project.id)
    if latest is not None and latest.state == RoundState.OPEN:
        return latest
    round_ = Round(
        project_id=project.id,
        number=(latest.number + 1) if latest else 1,
        state=RoundState.OPEN,
        model_version=model_version,
        budget=project.round_budget,
        selected_tasks=selected,
        opened_at=utcnow(),
    )
    session.add(round_)
    session.flush()
    log.info("project %d: round %d opened (model %s)", project.id, round_.number, model_version or "none")
    return round_


def refresh_stats(session: Session, round_: Round) -> None:
    """Recount a round's labelled tasks, accepted/corrected suggestions, served-pose PCK and correction effort.

    Correction effort (``AnnotationRecord.corrections``) is averaged over the submitted annotations that had a
    served suggestion (``corrections_per_task``; ``no_correction_share``: the share of them with 0 corrections);
    annotations labelled without a suggestion are counted apart (``unserved_tasks``, and their mean number of
    keypoints placed by hand, ``unserved_keypoints_per_task``).
    """
    record = AnnotationRecord
    submitted = (record.round_id == round_.id, record.status == AnnotationStatus.SUBMITTED)
    served_effort = (record.served_total.is_not(None), record.corrections.is_not(None))
    unserved = (record.served_total.is_(None), record.corrections.is_not(None))
    row = session.execute(
        select(
            func.count(func.distinct(record.task_id)),
            func.count().filter(record.accepted.is_(True)),
            func.count().filter(record.accepted.is_(False)),
            func.sum(record.served_correct),
            func.sum(record.served_total),
            func.count().filter(record.served_total.is_not(None)),
            func.count().filter(*served_effort),
            func.sum(record.corrections).filter(*served_effort),
            func.count().filter(*served_effort, record.corrections == 0),
            func.count().filter(*unserved),
            func.sum(record.corrections).filter(*unserved),
        ).where(*submitted)
    ).one()
    labelled, accepted, corrected, correct, total, served = row[:6]
    with_effort, effort, uncorrected, by_hand, by_hand_keypoints = row[6:]
    round_.labelled_count, round_.accepted_count, round_.corrected_count = labelled, accepted, corrected
    metrics = dict(round_.metrics or {})
    metrics["served_pck"] = (correct / total) if total else None
    metrics["served_images"] = served
    metrics["accepted_share"] = (accepted / (accepted + corrected)) if accepted + corrected else None
    metrics["corrections_per_task"] = (effort / with_effort) if with_effort else None
    metrics["no_correction_share"] = (uncorrected / with_effort) if with_effort else None
    metrics["effort_tasks"] = with_effort
    metrics["unserved_tasks"] = by_hand
    metrics["unserved_keypoints_per_task"] = (by_hand_keypoints / by_hand) if by_hand else None
    round_.metrics = metrics


def _close(session: Session, jobs: JobQueue, round_: Round, reason: str) -> int | None:
    """Close an open round and create its train job (inside the caller's transaction)."""
    changed = session.execute(
        update(Round)
        .where(Round.id == round_.id, Round.state == RoundState.OPEN)
        .values(state=RoundState.TRAINING, closed_at=utcnow(), close_reason=reason, error=None)
    )
    if changed.rowcount != 1:
        return None
    session.refresh(round_)
    project = session.get(Project, round_.project_id)
    payload = {"version": version_name(project, round_.number), "parent": round_.model_version}
    job = jobs.create(session, JobKind.TRAIN, project.id, round_.id, payload)
    log.info("project %d: round %d closed (%s), train job %d", project.id, round_.number, reason, job.id)
    return job.id


def check_budget(db: Database, jobs: JobQueue, project_id: int) -> int | None:
    """Close the current round when its budget is reached; returns the new train job's id."""
    with db.session() as session:
        round_ = current_round(session, project_id)
        if round_ is None or round_.state != RoundState.OPEN:
            return None
        refresh_stats(session, round_)
        if round_.labelled_count < round_.budget:
            return None
        job_id = _close(session, jobs, round_, "budget")
    if job_id is not None:
        jobs.enqueue(job_id)
    return job_id


def close_round(db: Database, jobs: JobQueue, project_id: int) -> int:
    """Close the current round by hand and start training; a failed round's last job is retried instead."""
    with db.session() as session:
        if session.get(Project, project_id) is None:
            raise NotFound(f"project {project_id} is not linked")
        round_ = current_round(session, project_id)
        if round_ is None:
            raise Conflict(f"project {project_id} has no round yet")
        if round_.state == RoundState.FAILED:
            failed = session.scalar(
                select(Job.id)
                .where(Job.round_id == round_.id, Job.state == JobState.FAILED)
                .order_by(Job.id.desc())
                .limit(1)
            )
            if failed is None:
                raise Conflict(f"round {round_.number} failed but has no failed job to retry")
        elif round_.state != RoundState.OPEN:
            raise Conflict(f"round {round_.number} is {round_.state.value}, not open; wait for it to finish")
        else:
            refresh_stats(session, round_)
            failed = None
            job_id = _close(session, jobs, round_, "manual")
    if failed is not None:
        return jobs.retry(failed)
    if job_id is None:
        raise Conflict("the round was closed by someone else just now")
    jobs.enqueue(job_id)
    return job_id


def set_round_state(db: Database, round_id: int | None, state: RoundState, error: str | None = None) -> None:
    if round_id is None:
        return
    with db.session() as session:
        session.execute(update(Round).where(Round.id == round_id).values(state=state, error=error))


def add_timing(db: Database, round_id: int | None, **seconds: float) -> None:
    """Merge stage durations (seconds) into a round's ``timings``."""
    if round_id is None:
        return
    with db.session() as session:
        round_ = session.get(Round, round_id)
        round_.timings = {**(round_.timings or {}), **{k: round(v, 2) for k, v in seconds.items()}}


def reset_round(db: Database, job_id: int, state: RoundState) -> None:
    """Before a failed job is retried by hand: its round, if it failed, goes back to ``state``."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is not None and job.round_id is not None:
            round_ = session.get(Round, job.round_id)
            if round_ is not None and round_.state == RoundState.FAILED:
                round_.state, round_.error = state, None
