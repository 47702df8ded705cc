"""Failed and stuck webhook events: what the dashboard and ``/api/projects/<id>`` show, retry and dismiss,
and failed items found by reconcile (recorded in the inbox too, so that they are shown and retried alike).

A *failed* event holds bad data (the reason says what); a *stuck* one is still pending
:data:`STUCK_AFTER_S` seconds after it arrived (the worker is not running, or the database or Label
Studio keeps failing: its ``error`` then holds the last reason). Retrying puts an event back in the
queue; dismissing drops it (it is kept, marked ``dismissed``, until the inbox is pruned).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.db import Database
from backend.errors import Conflict, NotFound
from backend.models import EventState, WebhookEvent, utcnow

log = logging.getLogger(__name__)

STUCK_AFTER_S = 300
"""A pending event older than this (seconds) is shown as stuck: processing normally takes under a second,
and the periodic reconcile retries pending events every few minutes."""
SHOWN = 20
"""At most this many failed and this many stuck events are listed (the counts are complete)."""


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def event_summary(event: WebhookEvent) -> dict[str, Any]:
    """One event as the API and the dashboard show it (never its whole body)."""
    body = event.body if isinstance(event.body, dict) else {}
    annotation = body.get("annotation") if isinstance(body.get("annotation"), dict) else {}
    return {
        "id": event.id,
        "action": event.action,
        "state": event.state.value,
        "error": event.error,
        "attempts": event.attempts,
        "annotation_id": annotation.get("id"),
        "source": body.get("source", "webhook"),
        "received_at": _time(event.received_at),
        "processed_at": _time(event.processed_at),
    }


def event_report(session: Session, ls_project_id: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """Counts of a Label Studio project's pending, stuck and failed events, and the failed and stuck ones."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=STUCK_AFTER_S)
    mine = WebhookEvent.ls_project_id == ls_project_id
    pending = WebhookEvent.state == EventState.PENDING
    stuck_filter = (mine, pending, WebhookEvent.received_at < cutoff)
    failed_filter = (mine, WebhookEvent.state == EventState.FAILED)

    def count(*where) -> int:
        return session.scalar(select(func.count()).select_from(WebhookEvent).where(*where)) or 0

    def listed(*where) -> list[dict[str, Any]]:
        rows = session.scalars(select(WebhookEvent).where(*where).order_by(WebhookEvent.id).limit(SHOWN)).all()
        return [event_summary(e) for e in rows]

    return {
        "pending": count(mine, pending),
        "stuck": count(*stuck_filter),
        "failed": count(*failed_filter),
        "stuck_after_s": STUCK_AFTER_S,
        "stuck_events": listed(*stuck_filter),
        "failed_events": listed(*failed_filter),
    }


def retry_event(db: Database, process_events: Callable[[], Any], event_id: int) -> dict[str, Any]:
    """Put a failed or dismissed event back in the queue and queue processing (``process_events``: the queue's
    task); 409 for other states."""
    with db.session() as session:
        event = _get(session, event_id)
        if event.state not in (EventState.FAILED, EventState.DISMISSED):
            raise Conflict(f"webhook event {event_id} is {event.state.value}; only failed or dismissed events retry")
        event.state, event.processed, event.processed_at, event.error = EventState.PENDING, False, None, None
        summary = event_summary(event)
    log.info("webhook event %d queued again by hand", event_id)
    try:
        process_events()
    except Exception as exc:  # the event is pending: the next run takes it
        log.warning("could not queue processing after retrying event %d: %s", event_id, exc)
    with db.session() as session:  # immediate queues have processed it by now
        event = session.get(WebhookEvent, event_id)
        return event_summary(event) if event is not None else summary


def dismiss_event(db: Database, event_id: int) -> dict[str, Any]:
    """Drop a failed or pending (stuck) event: it is marked dismissed and never processed; 409 otherwise."""
    with db.session() as session:
        event = _get(session, event_id)
        if event.state not in (EventState.FAILED, EventState.PENDING):
            raise Conflict(f"webhook event {event_id} is {event.state.value}; only failed or pending events dismiss")
        event.state, event.processed, event.processed_at = EventState.DISMISSED, True, utcnow()
        log.info("webhook event %d dismissed by hand", event_id)
        return event_summary(event)


def _get(session: Session, event_id: int) -> WebhookEvent:
    event = session.get(WebhookEvent, event_id)
    if event is None:
        raise NotFound(f"webhook event {event_id} does not exist; see GET /api/projects/<id> for the failed ones")
    return event


def record_failed_item(
    session: Session, ls_project_id: int, annotation: Any, task: Any, reason: str
) -> WebhookEvent | None:
    """Record a bad annotation found by reconcile as a failed inbox event (shown, retried and dismissed like a
    webhook's); None when the same annotation state already failed (or was dismissed) before."""
    annotation = annotation if isinstance(annotation, dict) else {}
    key = (annotation.get("id"), annotation.get("updated_at"))
    for event in session.scalars(
        select(WebhookEvent).where(
            WebhookEvent.ls_project_id == ls_project_id,
            WebhookEvent.state.in_([EventState.FAILED, EventState.DISMISSED]),
        )
    ):
        known = event.body.get("annotation") if isinstance(event.body, dict) else None
        if isinstance(known, dict) and (known.get("id"), known.get("updated_at")) == key:
            return None
    now = utcnow()
    event = WebhookEvent(
        action="ANNOTATION_UPDATED",
        ls_project_id=ls_project_id,
        body={
            "action": "ANNOTATION_UPDATED",
            "project": {"id": ls_project_id},
            "annotation": annotation,
            "task": task if isinstance(task, dict) else None,
            "source": "reconcile",
        },
        received_at=now,
        processed=True,
        processed_at=now,
        state=EventState.FAILED,
        attempts=1,
        error=f"malformed annotation in Label Studio's export: {reason}",
    )
    session.add(event)
    session.flush()
    return event
