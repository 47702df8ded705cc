"""Training and held-out samples from the coordinator's records, and held-out evaluation of a version."""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from backend.config import Settings
from backend.db import Database
from backend.errors import CoordinatorError
from backend.models import AnnotationRecord, AnnotationStatus, HoldoutSample, Project
from backend.services.annotations import keypoints_from_json
from backend.services.images import ImageStore
from vl4pose.data.sample import Sample
from vl4pose.skeletons import get_skeleton


log = logging.getLogger(__name__)


def clean(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        return clean(value.item())
    return value


def labelled_records(db: Database, project_id: int, holdout: bool) -> list[dict]:
    """The latest submitted annotation of every labelled task (training set or share-policy held-out set).

    Returns dicts ``{task_id, annotation_id, image_url, keypoints}`` sorted by task id.
    """
    with db.session() as session:
        rows = session.scalars(
            select(AnnotationRecord)
            .where(
                AnnotationRecord.project_id == project_id,
                AnnotationRecord.status == AnnotationStatus.SUBMITTED,
                AnnotationRecord.holdout.is_(holdout),
            )
            .order_by(AnnotationRecord.task_id, AnnotationRecord.updated_at, AnnotationRecord.annotation_id)
        ).all()
        latest = {r.task_id: r for r in rows}  # the last one per task wins
        return [
            {"task_id": r.task_id, "annotation_id": r.annotation_id, "image_url": r.image_url, "keypoints": r.keypoints}
            for r in sorted(latest.values(), key=lambda r: r.task_id)
        ]


def records_to_samples(images: ImageStore, records: list[dict], k: int) -> tuple[list[Sample], int]:
    """Samples (images fetched or cached) of annotation records; returns (samples, unreadable count)."""
    files = images.get_many([r["image_url"] for r in records])
    samples, unreadable = [], 0
    for record, file in zip(records, files):
        if isinstance(file, CoordinatorError) or not record["image_url"]:
            unreadable += 1
            continue
        keypoints = keypoints_from_json(record["keypoints"], k)
        visibility = np.where(np.isfinite(keypoints).all(axis=1), 2, 0)
        samples.append(Sample(f"task:{record['task_id']}", file, keypoints, visibility))
    return samples, unreadable


def _share(sample: Sample) -> float:
    """A fixed number in [0, 1) per sample id (its hash)."""
    return int.from_bytes(hashlib.sha256(sample.sample_id.encode()).digest()[:8], "big") / 2**64


def split_validation(samples: list[Sample], fraction: float) -> tuple[list[Sample], list[Sample]]:
    """(train, validation): a sample is validation when the hash of its id is below ``fraction``.

    Membership depends on the id only, so a validation image of one round stays one in every later round and
    is never trained on: each round's validation set is the union of all rounds' validation images (scored
    afresh by each new model). At least two validation images from four samples on, one below that (the
    lowest hashes; a single sample is used for both), and at least one training sample.
    """
    if len(samples) < 2:
        return samples, samples
    ordered = sorted(samples, key=_share)
    below = sum(1 for s in ordered if _share(s) < fraction)
    count = min(len(samples) - 1, max(below, 2 if len(samples) >= 4 else 1))
    return ordered[count:], ordered[:count]


def holdout_samples(db: Database, images: ImageStore, project_id: int) -> list[Sample]:
    """The fixed held-out set: imported ground truth, or the held-out share of labelled tasks."""
    with db.session() as session:
        project = session.get(Project, project_id)
        skeleton = get_skeleton(project.skeleton)
        policy = project.validation_policy
        rows = (
            session.scalars(
                select(HoldoutSample).where(HoldoutSample.project_id == project_id).order_by(HoldoutSample.id)
            ).all()
            if policy == "ground_truth"
            else []
        )
        ground_truth = [(r.sample_id, r.image, r.keypoints, r.visibility, r.box) for r in rows]
    if policy != "ground_truth":
        records = [
            r
            for r in labelled_records(db, project_id, holdout=True)
            if any(p is not None for p in r["keypoints"])
        ]
        return records_to_samples(images, records, skeleton.num_keypoints)[0]
    samples = []
    for sample_id, image, keypoints, visibility, box in ground_truth:
        path: Path | str = image
        if not Path(image).is_file():
            found = images.get_many([image])[0]
            if isinstance(found, CoordinatorError):
                continue
            path = found
        samples.append(
            Sample(
                sample_id,
                path,
                keypoints_from_json(keypoints, skeleton.num_keypoints),
                np.asarray(visibility, dtype=np.int64),
                box=np.asarray(box, float) if box else None,
            )
        )
    return samples


def evaluate_version(
    db: Database, images: ImageStore, settings: Settings, project_id: int, checkpoint: Path
) -> dict[str, Any]:
    """Held-out accuracy of a checkpoint through the Predictor (PCK@0.2, torso normaliser)."""
    # deferred on purpose: both load torch, which only a worker evaluating a version needs
    from vl4pose.evaluate import evaluate
    from vl4pose.predictor import Predictor

    samples = holdout_samples(db, images, project_id)
    if not samples:
        return {"holdout_images": 0, "holdout_pck": None}
    predictor = Predictor(checkpoint, settings.predictor_config())
    report = evaluate(predictor, samples, box=settings.eval_box)
    return clean(
        {
            "holdout_images": report["images"],
            "holdout_box": report["box"],
            "holdout_pck": report["refined"]["pck@0.2"],
            "holdout_pck_raw": report["raw"]["pck@0.2"],
            "holdout_pckh": report["refined"]["pckh@0.5"],
            "holdout_failure_auroc": report["raw"]["failure_auroc"],
        }
    )
