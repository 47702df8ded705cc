"""Reconcile: read every annotation through Label Studio's API so that a lost webhook never loses a label.

Label Studio delivers webhooks once, with a 1 s timeout and no retry. Reconcile exports the project's
annotated tasks and upserts every annotation (the same idempotent path as webhooks); records the
export no longer holds are marked deleted, but only those first seen before the export started (an
annotation that arrived by webhook during the export is not in it yet).

One bad item never stops a reconcile: each annotation is written in its own savepoint, and one that is
malformed (or fails for any reason other than the infrastructure's) is recorded as a failed inbox event
(:func:`backend.services.inbox.record_failed_item`, shown on the dashboard) while the rest are counted.
Infrastructure errors (database, Label Studio) stop the reconcile; the next one starts again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select

from backend.models import AnnotationRecord, AnnotationStatus, Project, Round, utcnow
from backend.services.annotations import parse_time, upsert_annotation
from backend.services.events import describe, is_infrastructure
from backend.services.inbox import record_failed_item
from backend.services.rounds import check_budget, refresh_stats
from vl4pose.errors import DataError, VL4PoseError

if TYPE_CHECKING:
    from backend.services import Services

log = logging.getLogger(__name__)

BATCH = 50


def reconcile(services: Services, project_id: int, close_rounds: bool = True) -> dict[str, int]:
    """Sync one project's annotations from Label Studio; returns counts (raises on Label Studio errors).

    Only new or newer annotations are written, in short transactions of :data:`BATCH`, so webhooks
    arriving meanwhile are not kept waiting for the database.
    """
    with services.db.session() as session:
        project = session.get(Project, project_id)
        if project is None:
            raise DataError(f"project {project_id} is not linked")
        ls_project_id = project.ls_project_id
        known = {
            r.annotation_id: (r.updated_at, r.status, r.first_seen_at, bool(r.image_url))
            for r in session.execute(
                select(
                    AnnotationRecord.annotation_id,
                    AnnotationRecord.updated_at,
                    AnnotationRecord.status,
                    AnnotationRecord.first_seen_at,
                    AnnotationRecord.image_url,
                ).where(AnnotationRecord.project_id == project_id)
            )
        }
    started = utcnow()
    tasks = services.ls().export_annotated(ls_project_id)
    seen: set[int] = set()
    todo: list[tuple[dict, dict]] = []
    bad: list[tuple[object, object, str]] = []
    for task in tasks:
        annotations = task.get("annotations") if isinstance(task, dict) else None
        if not isinstance(task, dict) or not isinstance(annotations or [], list):
            bad.append((None, task, "an exported task must be an object with an 'annotations' list"))
            continue
        for annotation in annotations or []:
            if not isinstance(annotation, dict) or not isinstance(annotation.get("id"), int):
                bad.append((annotation, task, "an exported annotation must be an object with an integer 'id'"))
                continue
            seen.add(annotation["id"])
            previous = known.get(annotation["id"])
            updated = parse_time(annotation.get("updated_at"))
            if previous is None or (
                previous[1] != AnnotationStatus.DELETED
                and (not previous[3] or (updated is not None and (previous[0] is None or updated > previous[0])))
            ):
                todo.append(({**annotation, "task": annotation.get("task") or task.get("id")}, task))
    changed, failed, rounds = 0, 0, set()
    for start in range(0, max(len(todo), len(bad)), BATCH):
        with services.db.session() as session:
            project = session.get(Project, project_id)
            for annotation, task, reason in bad[start : start + BATCH]:
                failed += 1
                record_failed_item(session, ls_project_id, annotation, task, reason)
            for annotation, task in todo[start : start + BATCH]:
                try:
                    with session.begin_nested():
                        record = upsert_annotation(session, project, annotation, task, source="reconcile")
                except Exception as exc:
                    if is_infrastructure(exc):
                        raise
                    if not isinstance(exc, VL4PoseError):
                        log.exception("project %d: annotation %s failed unexpectedly", project_id, annotation["id"])
                    failed += 1
                    log.warning("project %d: annotation %s not usable: %s", project_id, annotation["id"], describe(exc))
                    record_failed_item(session, ls_project_id, annotation, task, describe(exc))
                    continue
                if record is not None:
                    changed += 1
                    rounds.add(record.round_id)
    gone = [
        a
        for a, (_, status, first_seen, _) in known.items()
        if a not in seen and status != AnnotationStatus.DELETED and first_seen < started
    ]
    with services.db.session() as session:
        for record in session.scalars(
            select(AnnotationRecord).where(
                AnnotationRecord.project_id == project_id, AnnotationRecord.annotation_id.in_(gone[:30000])
            )
        ):
            record.status = AnnotationStatus.DELETED
            rounds.add(record.round_id)
        for round_id in rounds - {None}:
            refresh_stats(session, session.get(Round, round_id))
    result = {"annotations": len(seen), "changed": changed, "deleted": len(gone), "failed": failed}
    if changed or gone:
        log.info("project %d reconciled: %s", project_id, result)
    if close_rounds:
        check_budget(services, project_id)
    return result


def reconcile_all_projects(services: Services) -> dict[int, dict[str, int] | str]:
    """Reconcile every linked project; a failing project is logged and the others still run."""
    with services.db.session() as session:
        project_ids = session.scalars(select(Project.id)).all()
    results: dict[int, dict[str, int] | str] = {}
    for project_id in project_ids:
        try:
            results[project_id] = reconcile(services, project_id)
        except Exception as exc:  # one project's failure must not stop the others
            log.warning("reconcile of project %d failed: %s", project_id, exc)
            results[project_id] = str(exc)
    return results
