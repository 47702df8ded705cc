"""The webhook inbox: store a Label Studio event at once, process it later (a queue task or reconcile).

Processing is idempotent: each event is applied and marked processed in one transaction, and the
annotation upsert ignores duplicates and stale states, so running it twice, in two threads, or after
a crash changes nothing more.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from backend.models import Project, Round, WebhookEvent, utcnow
from backend.services.annotations import mark_deleted, upsert_annotation
from backend.services.rounds import check_budget, refresh_stats
from vl4pose.errors import DataError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from backend.services import Services

log = logging.getLogger(__name__)

ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
DELETE_ACTIONS = ("ANNOTATIONS_DELETED",)
BATCH = 25
_DROP = ("token",)
"""Project fields not worth keeping (the project's invite token)."""


class EventError(ValueError):
    """A webhook body that is not a Label Studio event."""


def validate_event(body: Any) -> tuple[str, int | None]:
    """(action, Label Studio project id) of a webhook body, or :class:`EventError` saying what is wrong."""
    if not isinstance(body, dict):
        raise EventError("the body must be a JSON object")
    action = body.get("action")
    if not isinstance(action, str) or not action or len(action) > 64:
        raise EventError("the body has no 'action' string")
    project = body.get("project")
    project_id = project.get("id") if isinstance(project, dict) else project
    if project_id is not None and not isinstance(project_id, int):
        raise EventError("'project' must be an object with an integer 'id'")
    if action in ANNOTATION_ACTIONS and not isinstance(body.get("annotation"), dict):
        raise EventError(f"{action} events carry an 'annotation' object")
    if action in DELETE_ACTIONS and not isinstance(body.get("annotations"), list):
        raise EventError(f"{action} events carry an 'annotations' list")
    return action, project_id


def store_event(services: Services, body: dict) -> int:
    """Validate and store one event in the inbox; returns its id (raises :class:`EventError`)."""
    action, project_id = validate_event(body)
    if isinstance(body.get("project"), dict):
        body = {**body, "project": {k: v for k, v in body["project"].items() if k not in _DROP}}
    with services.db.session() as session:
        event = WebhookEvent(action=action, ls_project_id=project_id, body=body, received_at=utcnow())
        session.add(event)
        session.flush()
        return event.id


def apply_event(session: Session, event: WebhookEvent) -> int | None:
    """Apply one event; returns the coordinator project id it touched (None when ignored)."""
    project = session.scalar(select(Project).where(Project.ls_project_id == event.ls_project_id))
    if project is None:
        event.error = f"Label Studio project {event.ls_project_id} is not linked to the coordinator; ignored"
        return None
    body = event.body
    if event.action in ANNOTATION_ACTIONS:
        record = upsert_annotation(session, project, body["annotation"], body.get("task"), source="webhook")
        if record is not None and record.round_id is not None:
            refresh_stats(session, session.get(Round, record.round_id))
        return project.id
    if event.action in DELETE_ACTIONS:
        ids = [a.get("id") for a in body["annotations"] if isinstance(a, dict) and isinstance(a.get("id"), int)]
        for round_id in mark_deleted(session, project, ids):
            refresh_stats(session, session.get(Round, round_id))
        return project.id
    return None


def process_pending(services: Services, limit: int | None = None) -> int:
    """Apply every unprocessed event in arrival order, then close rounds whose budget is reached."""
    done, touched = 0, set()
    while limit is None or done < limit:
        with services.db.session() as session:
            events = session.scalars(
                select(WebhookEvent).where(WebhookEvent.processed.is_(False)).order_by(WebhookEvent.id).limit(BATCH)
            ).all()
            if not events:
                break
            for event in events:
                try:
                    with session.begin_nested():
                        project_id = apply_event(session, event)
                except DataError as exc:
                    event.error = f"malformed {event.action} event: {exc}"
                    project_id = None
                if project_id is not None:
                    touched.add(project_id)
                event.processed, event.processed_at = True, utcnow()
                done += 1
    for project_id in touched:
        check_budget(services, project_id)
    if done:
        log.info("processed %d webhook events", done)
    return done


def prune_inbox(services: Services) -> int:
    """Delete processed events older than ``VL4POSE_INBOX_KEEP_DAYS`` (0 keeps them forever)."""
    days = services.settings.inbox_keep_days
    if days <= 0:
        return 0
    cutoff = utcnow() - dt.timedelta(days=days)
    with services.db.session() as session:
        result = session.execute(
            delete(WebhookEvent).where(WebhookEvent.processed.is_(True), WebhookEvent.received_at < cutoff)
        )
    return result.rowcount or 0
