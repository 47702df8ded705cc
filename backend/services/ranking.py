"""What the ``rank`` job (:mod:`backend.jobs.rank`) reads: one page of a project's unlabelled tasks, and the
states of a ranking's shard jobs."""

from __future__ import annotations

import logging

from sqlalchemy import func, select

from backend.db import Database
from backend.models import AnnotationRecord, AnnotationStatus, Job, JobState, Project
from backend.services.labelstudio import LabelStudio

log = logging.getLogger(__name__)

UNCERTAINTY_SAMPLING = "Uncertainty sampling"


def unlabelled_page(
    db: Database, ls: LabelStudio, project: Project, page: int, size: int
) -> tuple[list[tuple[int, str]], int]:
    """(task id, image URL) of the unlabelled tasks on one page of the project's tasks (no submitted annotation in
    Label Studio or here), and how many tasks the page had (0: past the end)."""
    tasks, _ = ls.task_page(project.ls_project_id, page, size)
    key = project.label_config.get("image_key", "image")
    ids = [int(t["id"]) for t in tasks]
    with db.session() as session:
        labelled = set(
            session.scalars(
                select(AnnotationRecord.task_id).where(
                    AnnotationRecord.project_id == project.id,
                    AnnotationRecord.status == AnnotationStatus.SUBMITTED,
                    AnnotationRecord.task_id.in_(ids),
                )
            )
        ) if ids else set()
    out = []
    for task in tasks:
        done = int(task.get("total_annotations") or 0) - int(task.get("cancelled_annotations") or 0)
        url = (task.get("data") or {}).get(key)
        if done <= 0 and int(task["id"]) not in labelled and isinstance(url, str):
            out.append((int(task["id"]), url))
    return out, len(tasks)


def shard_states(db: Database, parent_id: int) -> dict[JobState, int]:
    with db.session() as session:
        rows = session.execute(
            select(Job.state, func.count()).where(Job.parent_id == parent_id).group_by(Job.state)
        ).all()
    return {state: int(count) for state, count in rows}
