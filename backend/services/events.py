"""The webhook inbox: store a Label Studio event at once, process it later (a queue task or reconcile).

Each event is processed in its own transaction (and a savepoint inside it), so one event never takes
others down with it:

- applied, or ignored (a project that is not linked, an action the coordinator does not use): ``done`` /
  ``ignored``;
- bad data (a body that does not parse or validate, any error that is not the infrastructure's): ``failed``
  with the reason, the run goes on with the next event; the dashboard and ``/api/projects/<id>`` show it
  with retry and dismiss (:mod:`backend.services.inbox`);
- infrastructure (database locked or gone, Label Studio unreachable): the event stays ``pending`` with the
  reason in ``error`` and the run stops; the next run (the next webhook, reconcile) tries again.

Processing is idempotent: the annotation upsert ignores duplicates and stale states, and an event is
re-read inside its transaction, so running it twice, in two threads, or after a crash changes nothing more.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import httpx
from sqlalchemy import delete, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from backend.db import Database
from backend.errors import TransientError
from backend.models import EventState, Project, Round, WebhookEvent, utcnow
from backend.services.annotations import check_db_int, mark_deleted, upsert_annotation
from backend.services.base import JobQueue
from backend.services.rounds import check_budget, refresh_stats
from vl4pose.errors import DataError, VL4PoseError

log = logging.getLogger(__name__)

ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
DELETE_ACTIONS = ("ANNOTATIONS_DELETED",)
BATCH = 25
_DROP = ("token",)
"""Project fields not worth keeping (the project's invite token)."""

INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,  # database locked, disk full, connection lost
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # connection pool exhausted
    TransientError,  # Label Studio unreachable (LabelStudioUnavailable)
    httpx.TransportError,
    ConnectionError,
    TimeoutError,
)
"""Errors that say nothing about the event: it stays pending and the next run tries it again."""


class EventError(ValueError):
    """A webhook body that is not a Label Studio event."""


def is_infrastructure(exc: BaseException) -> bool:
    """True when ``exc`` is the infrastructure's fault (retry later), not the data's."""
    return isinstance(exc, INFRASTRUCTURE_ERRORS)


def describe(exc: BaseException) -> str:
    """A one-line reason: our own errors by message, anything else with its type (never a traceback)."""
    text = " ".join(str(exc).split())[:500]
    if isinstance(exc, (DataError, VL4PoseError)):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def validate_event(body: Any) -> tuple[str, int | None]:
    """(action, Label Studio project id) of a webhook body, or :class:`EventError` saying what is wrong."""
    if not isinstance(body, dict):
        raise EventError("the body must be a JSON object")
    action = body.get("action")
    if not isinstance(action, str) or not action or len(action) > 64:
        raise EventError("the body has no 'action' string")
    project = body.get("project")
    project_id = project.get("id") if isinstance(project, dict) else project
    if project_id is not None:
        try:
            check_db_int(project_id, "'project' id")
        except DataError:
            raise EventError("'project' must be an object with an integer 'id' (a signed 64-bit integer)") from None
    if action in ANNOTATION_ACTIONS and not isinstance(body.get("annotation"), dict):
        raise EventError(f"{action} events carry an 'annotation' object")
    if action in DELETE_ACTIONS and not isinstance(body.get("annotations"), list):
        raise EventError(f"{action} events carry an 'annotations' list")
    return action, project_id


def store_event(db: Database, body: dict) -> int:
    """Validate and store one event in the inbox; returns its id (raises :class:`EventError`)."""
    action, project_id = validate_event(body)
    if isinstance(body.get("project"), dict):
        body = {**body, "project": {k: v for k, v in body["project"].items() if k not in _DROP}}
    with db.session() as session:
        event = WebhookEvent(
            action=action, ls_project_id=project_id, body=body, received_at=utcnow(), state=EventState.PENDING
        )
        session.add(event)
        session.flush()
        return event.id


def apply_event(session: Session, event: WebhookEvent) -> int | None:
    """Apply one event; returns the coordinator project id it touched (None when ignored).

    Raises:
        DataError: the event's data is malformed (the caller marks it failed).
    """
    project = session.scalar(select(Project).where(Project.ls_project_id == event.ls_project_id))
    if project is None:
        event.error = f"Label Studio project {event.ls_project_id} is not linked to the coordinator; ignored"
        return None
    body = event.body
    if event.action in ANNOTATION_ACTIONS:
        task = body.get("task")
        if task is not None and not isinstance(task, dict):
            raise DataError(f"'task' must be an object, not {type(task).__name__}")
        record = upsert_annotation(session, project, body["annotation"], task, source="webhook")
        if record is not None and record.round_id is not None:
            refresh_stats(session, session.get(Round, record.round_id))
        return project.id
    if event.action in DELETE_ACTIONS:
        ids = [a.get("id") for a in body["annotations"] if isinstance(a, dict) and isinstance(a.get("id"), int)]
        for annotation_id in ids:
            check_db_int(annotation_id, "a deleted annotation's id")
        for round_id in mark_deleted(session, project, ids):
            refresh_stats(session, session.get(Round, round_id))
        return project.id
    return None


def process_event(db: Database, event_id: int) -> tuple[EventState | None, int | None]:
    """Process one pending event in its own transaction; returns (its new state, project id touched), or
    (None, None) when it was no longer pending (another worker took it, or it was dismissed meanwhile).

    Bad data marks the event ``failed`` (the savepoint undoes what it half wrote); an infrastructure error
    is raised (the event stays pending) after noting the reason on the event when the database allows it.
    """
    try:
        with db.session() as session:
            event = session.get(WebhookEvent, event_id)
            if event is None or event.state != EventState.PENDING:
                return None, None
            event.attempts += 1
            event.error = None
            try:
                with session.begin_nested():
                    project_id = apply_event(session, event)
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                if not isinstance(exc, VL4PoseError):
                    log.exception("webhook event %d failed unexpectedly", event_id)
                event.state, event.error = EventState.FAILED, f"malformed {event.action} event: {describe(exc)}"
                log.warning("webhook event %d failed: %s", event_id, event.error)
                project_id = None
            else:
                event.state = EventState.DONE if project_id is not None else EventState.IGNORED
            event.processed, event.processed_at = True, utcnow()
            return event.state, project_id
    except Exception as exc:
        if not is_infrastructure(exc):
            raise
        _note_pending(db, event_id, exc)
        raise


def _note_pending(db: Database, event_id: int, exc: BaseException) -> None:
    """Best effort: say on a still-pending event why its last attempt could not run."""
    log.warning("webhook event %d left pending (will retry): %s", event_id, describe(exc))
    try:
        with db.session() as session:
            event = session.get(WebhookEvent, event_id)
            if event is not None and event.state == EventState.PENDING:
                event.attempts += 1
                event.error = f"not processed yet, will retry: {describe(exc)}"
    except Exception as again:  # the database itself is what failed: nothing more to do now
        log.warning("could not note the reason on webhook event %d: %s", event_id, describe(again))


def process_pending(db: Database, jobs: JobQueue, limit: int | None = None) -> int:
    """Process pending events in arrival order, each on its own, then close rounds whose budget is reached.

    Returns the number of events that left the pending state (applied, ignored or failed). An
    infrastructure error stops the run and leaves the rest pending for the next one.
    """
    done, after, touched = 0, 0, set()
    try:
        while limit is None or done < limit:
            with db.session() as session:
                ids = session.scalars(
                    select(WebhookEvent.id)
                    .where(WebhookEvent.state == EventState.PENDING, WebhookEvent.id > after)
                    .order_by(WebhookEvent.id)
                    .limit(BATCH if limit is None else min(BATCH, limit - done))
                ).all()
            if not ids:
                break
            for event_id in ids:
                after = event_id
                state, project_id = process_event(db, event_id)
                if project_id is not None:
                    touched.add(project_id)
                if state is not None:
                    done += 1
    except Exception as exc:
        if not is_infrastructure(exc):
            raise
        log.warning("webhook processing stopped after %d events; the rest wait for the next run: %s",
                    done, describe(exc))
    for project_id in touched:
        try:
            check_budget(db, jobs, project_id)
        except Exception as exc:
            if not is_infrastructure(exc):
                raise
            log.warning("budget check of project %d postponed: %s", project_id, describe(exc))
    if done:
        log.info("processed %d webhook events", done)
    return done


def prune_inbox(db: Database, days: int) -> int:
    """Delete finished events older than ``days`` (``VL4POSE_INBOX_KEEP_DAYS``; 0 keeps them forever); failed and
    pending ones stay until they are retried or dismissed."""
    if days <= 0:
        return 0
    cutoff = utcnow() - dt.timedelta(days=days)
    finished = (EventState.DONE, EventState.IGNORED, EventState.DISMISSED)
    with db.session() as session:
        result = session.execute(
            delete(WebhookEvent).where(WebhookEvent.state.in_(finished), WebhookEvent.received_at < cutoff)
        )
    return result.rowcount or 0
