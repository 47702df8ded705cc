"""Reconcile: read every annotation through Label Studio's API so that a lost webhook never loses a label.

Label Studio delivers webhooks once, with a 1 s timeout and no retry. Reconcile exports the project's
annotated tasks and upserts every annotation (the same idempotent path as webhooks); records the
export no longer holds are marked deleted, but only those first seen before the export started (an
annotation that arrived by webhook during the export is not in it yet).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select

from backend.models import AnnotationRecord, AnnotationStatus, Project, Round, utcnow
from backend.services.annotations import upsert_annotation
from backend.services.rounds import check_budget, refresh_stats
from vl4pose.errors import DataError

if TYPE_CHECKING:
    from backend.services import Services

log = logging.getLogger(__name__)


def reconcile(services: Services, project_id: int, close_rounds: bool = True) -> dict[str, int]:
    """Sync one project's annotations from Label Studio; returns counts (raises on Label Studio errors)."""
    with services.db.session() as session:
        project = session.get(Project, project_id)
        if project is None:
            raise DataError(f"project {project_id} is not linked")
        ls_project_id = project.ls_project_id
    started = utcnow()
    tasks = services.ls().export_annotated(ls_project_id)
    seen: set[int] = set()
    changed, malformed = 0, 0
    rounds: set[int] = set()
    with services.db.session() as session:
        project = session.get(Project, project_id)
        for task in tasks:
            for annotation in task.get("annotations") or []:
                if not isinstance(annotation.get("id"), int):
                    continue
                seen.add(annotation["id"])
                annotation = {**annotation, "task": annotation.get("task") or task.get("id")}
                try:
                    with session.begin_nested():
                        record = upsert_annotation(session, project, annotation, task, source="reconcile")
                except DataError as exc:
                    malformed += 1
                    log.warning("project %d: annotation %s not usable: %s", project_id, annotation.get("id"), exc)
                    continue
                if record is not None:
                    changed += 1
                    if record.round_id is not None:
                        rounds.add(record.round_id)
        known = session.scalars(select(AnnotationRecord).where(
            AnnotationRecord.project_id == project_id, AnnotationRecord.status != AnnotationStatus.DELETED,
            AnnotationRecord.first_seen_at < started)).all()
        gone = [record for record in known if record.annotation_id not in seen]
        for record in gone:
            record.status = AnnotationStatus.DELETED
            if record.round_id is not None:
                rounds.add(record.round_id)
        for round_id in rounds:
            refresh_stats(session, session.get(Round, round_id))
    result = {"annotations": len(seen), "changed": changed, "deleted": len(gone), "malformed": malformed}
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
