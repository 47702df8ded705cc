"""Annotation records: idempotent upserts from webhook events and reconciles, with the served-vs-submitted
comparison (:mod:`backend.services.served`) behind the round's served accuracy and correction effort.

An annotation is identified by its Label Studio id; an event only changes the record when its
``updated_at`` is newer than the stored one, so duplicates and out-of-order deliveries are harmless.
A deleted annotation stays deleted (Label Studio never reuses ids).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.models import AnnotationRecord, AnnotationStatus, Project, Round, TaskPrediction, utcnow
from backend.services.history import record_version
from backend.services.rounds import current_round
from backend.services.served import compare_poses, correction_effort
from vl4pose.data.labelstudio import results_to_keypoints
from vl4pose.errors import ConfigError, DataError
from vl4pose.skeletons import Skeleton, get_skeleton

log = logging.getLogger(__name__)

DB_INT_MAX = 2**63 - 1
"""The largest id the database stores (SQLite and PostgreSQL BIGINT: signed 64-bit)."""
POINT_TYPES = ("keypointlabels", "rectanglelabels")


def check_db_int(value: Any, what: str) -> int:
    """``value`` as a database id: an integer (not a bool) in signed 64-bit range, else :class:`DataError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not -DB_INT_MAX - 1 <= value <= DB_INT_MAX:
        raise DataError(f"{what} must be an integer id (signed 64-bit), not {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def validate_results(results: Any, where: str = "the annotation") -> list[dict]:
    """A Label Studio ``result`` list checked for the shapes the keypoint reader relies on.

    Every item must be an object; ``keypointlabels``/``rectanglelabels`` items need a ``value`` object with
    finite numbers ``x`` and ``y`` (percent of the image), a list of label strings, and positive
    ``original_width``/``original_height`` when given; ``choices`` items need a ``value`` object with a list
    of ``choices``. Items of other types are kept and ignored by the reader.

    Raises:
        DataError: naming the item and what is wrong with it (a clear reason for the failed event).
    """
    if results is None:
        return []
    if not isinstance(results, list):
        raise DataError(f"{where}: 'result' must be a list of Label Studio result objects, not {_show(results)}")
    for i, item in enumerate(results):
        if not isinstance(item, dict):
            raise DataError(f"{where}: result[{i}] must be an object, not {_show(item)}")
        kind, value = item.get("type"), item.get("value")
        if kind not in (*POINT_TYPES, "choices"):
            continue
        if not isinstance(value, dict):
            raise DataError(f"{where}: result[{i}] ({kind}) needs a 'value' object, not {_show(value)}")
        if kind == "choices":
            if not isinstance(value.get("choices") or [], list):
                raise DataError(f"{where}: result[{i}] value.choices must be a list")
            continue
        for key in ("x", "y"):
            if not _number(value.get(key)):
                raise DataError(
                    f"{where}: result[{i}] value.{key} must be a finite number, not {_show(value.get(key))}"
                )
        for key in ("original_width", "original_height"):
            if item.get(key) is not None and not (_number(item[key]) and item[key] > 0):
                raise DataError(f"{where}: result[{i}] {key} must be a positive number, not {_show(item[key])}")
        labels = value.get("keypointlabels") if "keypointlabels" in value else value.get(kind, value.get("labels"))
        if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
            raise DataError(f"{where}: result[{i}] labels must be a list of strings, not {_show(labels)}")
        if kind == "rectanglelabels" and not all(_number(value.get(k, 0)) for k in ("width", "height")):
            raise DataError(f"{where}: result[{i}] value.width/height must be numbers")
    return results


def validate_annotation(annotation: Any, task: Any) -> None:
    """Check one Label Studio annotation (and its task, when given) before anything is read from it.

    Raises:
        DataError: the annotation, its ``result``, its ``prediction`` or its task has the wrong shape.
    """
    if not isinstance(annotation, dict):
        raise DataError(f"an annotation must be an object, not {_show(annotation)}")
    where = f"annotation {annotation.get('id')!r}"
    if task is not None and not isinstance(task, dict):
        raise DataError(f"{where}: its task must be an object, not {_show(task)}")
    if task is not None and not isinstance(task.get("data") or {}, dict):
        raise DataError(f"{where}: task 'data' must be an object, not {_show(task.get('data'))}")
    for key in ("id", "task", "parent_prediction"):
        if annotation.get(key) is not None:
            check_db_int(annotation[key], f"{where}: '{key}'")
    validate_results(annotation.get("result"), where)
    prediction = annotation.get("prediction")
    if prediction is not None and not isinstance(prediction, dict):
        raise DataError(f"{where}: 'prediction' must be an object, not {_show(prediction)}")
    if prediction:
        validate_results(prediction.get("result"), f"{where}, its prediction")
        version = prediction.get("model_version")
        if version is not None and not isinstance(version, str):
            raise DataError(f"{where}: prediction model_version must be a string, not {_show(version)}")


def parse_time(value: Any) -> dt.datetime | None:
    """Label Studio's ISO time (``2026-11-24T06:38:54.943787Z``) as a naive UTC datetime."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str) and value:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def keypoints_to_json(keypoints: np.ndarray) -> list[list[float] | None]:
    """(K, 2) pixels with NaN rows -> JSON list of [x, y] or null."""
    return [None if not np.isfinite(p).all() else [round(float(p[0]), 3), round(float(p[1]), 3)] for p in keypoints]


def keypoints_from_json(items: list[Any], k: int) -> np.ndarray:
    """JSON list of [x, y] or null -> (K, 2) pixels with NaN rows."""
    out = np.full((k, 2), np.nan)
    for i, item in enumerate(items[:k]):
        if item is not None:
            out[i] = item
    return out


def read_keypoints(results: list[dict], skeleton: Skeleton) -> tuple[np.ndarray, str | None]:
    """(K, 2) keypoints of a result list; results with labels the skeleton lacks are dropped and named."""
    known, unknown = [], []
    for item in results or []:
        labels = (item.get("value") or {}).get("keypointlabels") or []
        if item.get("type") == "keypointlabels" and labels:
            try:
                skeleton.index(labels[0])
            except ConfigError:
                unknown.append(labels[0])
                continue
        known.append(item)
    error = f"labels {sorted(set(unknown))} are not keypoints of {skeleton.name}" if unknown else None
    try:
        keypoints, _, _ = results_to_keypoints(known, skeleton)
    except DataError as exc:
        return np.full((skeleton.num_keypoints, 2), np.nan), str(exc)
    return keypoints, error


def is_holdout(project: Project, task_id: int) -> bool:
    """Fixed held-out membership for the ``share`` policy: a hash of the task id below the share."""
    if project.validation_policy != "share" or project.holdout_fraction <= 0:
        return False
    digest = hashlib.sha256(f"{project.ls_project_id}:{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < project.holdout_fraction


def served_pose(
    session: Session, project: Project, annotation: dict, task_id: int, round_: Round | None, skeleton: Skeleton
) -> tuple[np.ndarray, str | None] | None:
    """The pre-annotation the annotator was served: the prediction they started from when the event says
    so, else the stored prediction of the round's model version; None when there was none."""
    prediction = annotation.get("prediction") or {}
    if prediction.get("result"):
        keypoints, _ = read_keypoints(prediction["result"], skeleton)
        return keypoints, prediction.get("model_version")
    version = round_.model_version if round_ is not None else None
    if version is None:
        return None
    row = session.scalar(
        select(TaskPrediction).where(
            TaskPrediction.project_id == project.id,
            TaskPrediction.task_id == task_id,
            TaskPrediction.model_version == version,
        )
    )
    if row is None:
        return None
    keypoints = keypoints_from_json(row.keypoints, skeleton.num_keypoints)
    keypoints[~np.asarray(row.placed, dtype=bool)] = np.nan
    return keypoints, version


def upsert_annotation(
    session: Session, project: Project, annotation: dict, task: dict | None, source: str
) -> AnnotationRecord | None:
    """Create or update the record of one Label Studio annotation; None when the event changes nothing.

    Raises:
        DataError: the annotation is malformed (see :func:`validate_annotation`); nothing is written.
    """
    validate_annotation(annotation, task)
    annotation_id = annotation.get("id")
    task_id = annotation.get("task") or (task or {}).get("id")
    if not isinstance(annotation_id, int) or not isinstance(task_id, int):
        raise DataError("the annotation has no integer id or task id")
    check_db_int(task_id, f"annotation {annotation_id}: its task id")
    updated_at = parse_time(annotation.get("updated_at")) or parse_time(annotation.get("created_at"))
    record = session.scalar(
        select(AnnotationRecord).where(
            AnnotationRecord.project_id == project.id, AnnotationRecord.annotation_id == annotation_id
        )
    )
    image_key = project.label_config.get("image_key", "image")
    image_url = ((task or {}).get("data") or {}).get(image_key)
    if record is not None:
        if record.status == AnnotationStatus.DELETED:
            return None
        if not record.image_url and isinstance(image_url, str):
            record.image_url = image_url  # an earlier event came without its task
        if record.updated_at is not None and (updated_at is None or updated_at <= record.updated_at):
            return None  # a duplicate or an older state arriving late
    else:
        round_ = current_round(session, project.id)
        record = AnnotationRecord(
            project_id=project.id,
            annotation_id=annotation_id,
            task_id=task_id,
            round_id=round_.id if round_ else None,
            source=source,
            holdout=is_holdout(project, task_id),
            first_seen_at=utcnow(),
        )
        session.add(record)
    skeleton = get_skeleton(project.skeleton)
    keypoints, error = read_keypoints(annotation.get("result") or [], skeleton)
    record.updated_at = updated_at
    record.status = AnnotationStatus.CANCELLED if annotation.get("was_cancelled") else AnnotationStatus.SUBMITTED
    record.keypoints = keypoints_to_json(keypoints)
    record.keypoint_count = int(np.isfinite(keypoints).all(axis=1).sum())
    record.error = error
    record.from_prediction = annotation.get("parent_prediction")
    if isinstance(image_url, str):
        record.image_url = image_url
    round_ = session.get(Round, record.round_id) if record.round_id else None
    served = served_pose(session, project, annotation, task_id, round_, skeleton)
    if served is None or record.status != AnnotationStatus.SUBMITTED:
        record.served_model_version = record.accepted = record.served_correct = record.served_total = None
        # no suggestion: every submitted keypoint was placed by hand (a cancelled annotation has no figure)
        record.corrections = record.keypoint_count if record.status == AnnotationStatus.SUBMITTED else None
    else:
        correct, total, unchanged = compare_poses(served[0], keypoints, skeleton)
        record.served_model_version, record.accepted = served[1], unchanged
        record.served_correct, record.served_total = correct, total
        record.corrections = correction_effort(served[0], keypoints, skeleton).total
    session.flush()
    record_version(session, project, record, annotation.get("result") or [])
    return record


def mark_deleted(session: Session, project: Project, annotation_ids: list[int]) -> set[int]:
    """Mark annotations deleted (tombstones for ones never seen); returns the ids of the rounds they counted in."""
    rounds: set[int] = set()
    for annotation_id in annotation_ids:
        record = session.scalar(
            select(AnnotationRecord).where(
                AnnotationRecord.project_id == project.id, AnnotationRecord.annotation_id == annotation_id
            )
        )
        if record is None:
            session.add(
                AnnotationRecord(
                    project_id=project.id,
                    annotation_id=annotation_id,
                    task_id=0,
                    status=AnnotationStatus.DELETED,
                    source="tombstone",
                )
            )
        elif record.status != AnnotationStatus.DELETED:
            record.status = AnnotationStatus.DELETED
            record_version(session, project, record)
            if record.round_id is not None:
                rounds.add(record.round_id)
    session.flush()
    return rounds
