"""Append-only annotation history: every stored state of every annotation, for exports and ``--round R``.

:func:`record_version` is called wherever an :class:`~backend.models.AnnotationRecord` changes (webhook,
reconcile, deletion); it appends one :class:`~backend.models.AnnotationVersion` row and never changes old
ones. :func:`versions_as_of` reads the state of a project's annotations as it stood after a round.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.models import AnnotationRecord, AnnotationStatus, AnnotationVersion, Project
from backend.services.rounds import current_round
from vl4pose.data.labelstudio import occluded_marks
from vl4pose.skeletons import get_skeleton, normalise_name

log = logging.getLogger(__name__)


def visibility_of(keypoints: list[Any], results: list[dict] | None, skeleton_name: str) -> list[int]:
    """K COCO visibility flags of a stored pose: 0 not labelled, 1 marked "Occluded" (a per-region choice
    in ``results``), 2 labelled.

    Args:
        keypoints: K ``[x, y]`` or None (the record's ``keypoints``).
        results: the annotation's Label Studio ``result`` list (None: no occlusion marks known).
    """
    visibility = [0 if p is None else 2 for p in keypoints]
    ids, points = occluded_marks(results or [])
    if not ids and not points:
        return visibility
    skeleton = get_skeleton(skeleton_name)
    names = {normalise_name(k): i for i, k in enumerate(skeleton.keypoints)}
    for item in results or []:
        value = item.get("value") or {}
        labels = value.get("keypointlabels") or []
        if item.get("type") != "keypointlabels" or not labels:
            continue
        index = names.get(normalise_name(str(labels[0])))
        if index is None or index >= len(visibility) or visibility[index] == 0:
            continue
        position = (round(float(value.get("x", np.nan)), 6), round(float(value.get("y", np.nan)), 6))
        if str(item.get("id")) in ids or position in points:
            visibility[index] = 1
    return visibility


def record_version(
    session: Session, project: Project, record: AnnotationRecord, results: list[dict] | None = None
) -> AnnotationVersion | None:
    """Append the record's current state to the history (tombstones of never-seen annotations are skipped).

    Args:
        results: the annotation's Label Studio results, read for per-keypoint "Occluded" marks; None when the
            state changed without new results (a deletion): the previous version's marks are kept.
    """
    if record.source == "tombstone":
        return None
    round_ = current_round(session, project.id)
    if results is None:
        previous = session.scalar(
            select(AnnotationVersion)
            .where(AnnotationVersion.project_id == project.id, AnnotationVersion.annotation_id == record.annotation_id)
            .order_by(AnnotationVersion.id.desc())
            .limit(1)
        )
        visibility = list(previous.visibility) if previous else [0 if p is None else 2 for p in record.keypoints]
    else:
        visibility = visibility_of(record.keypoints, results, project.skeleton)
    version = AnnotationVersion(
        project_id=project.id,
        annotation_id=record.annotation_id,
        task_id=record.task_id,
        round_number=round_.number if round_ is not None else 0,
        status=record.status,
        updated_at=record.updated_at,
        image_url=record.image_url or "",
        keypoints=list(record.keypoints),
        visibility=visibility,
        served_model_version=record.served_model_version,
        accepted=record.accepted,
        source=record.source,
    )
    session.add(version)
    session.flush()
    return version


def versions_as_of(session: Session, project_id: int, round_number: int | None = None) -> list[AnnotationVersion]:
    """The last version of every annotation of a project, stored up to and including round ``round_number``
    (None: now), whatever its status; ordered by annotation id."""
    latest = select(func.max(AnnotationVersion.id)).where(AnnotationVersion.project_id == project_id)
    if round_number is not None:
        latest = latest.where(AnnotationVersion.round_number <= round_number)
    latest = latest.group_by(AnnotationVersion.annotation_id)
    return list(
        session.scalars(
            select(AnnotationVersion).where(AnnotationVersion.id.in_(latest)).order_by(AnnotationVersion.annotation_id)
        )
    )


def latest_per_task(versions: list[AnnotationVersion]) -> list[AnnotationVersion]:
    """The latest submitted version per task (by Label Studio's ``updated_at``, then annotation id), sorted by
    task id; cancelled and deleted annotations are left out."""
    chosen: dict[int, AnnotationVersion] = {}
    for version in versions:
        if version.status != AnnotationStatus.SUBMITTED:
            continue
        key = (version.updated_at is not None, version.updated_at or 0, version.annotation_id)
        best = chosen.get(version.task_id)
        if best is None or key > (best.updated_at is not None, best.updated_at or 0, best.annotation_id):
            chosen[version.task_id] = version
    return [chosen[t] for t in sorted(chosen)]
