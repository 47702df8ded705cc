"""Training's bookkeeping: a round's TrainConfig fields, a published version's database row, the calibration
summary of a trained checkpoint. The ``train`` and ``evaluate`` jobs themselves are :mod:`backend.jobs.train` and
:mod:`backend.jobs.evaluate`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from backend.config import Settings
from backend.db import Database
from backend.models import AnnotationRecord, AnnotationStatus, ModelVersion
from backend.services.samples import clean

if TYPE_CHECKING:
    from vl4pose.registry import ModelRegistry

log = logging.getLogger(__name__)


def train_config(settings: Settings, round_number: int, heads: list[str]) -> dict:
    """The TrainConfig fields of a round (stored in the job so that a resumed run uses the same ones)."""
    s = settings
    budget = s.train_time_budget_minutes * 60.0 or None
    return {
        "epochs": 1000 if budget else s.train_epochs,  # with a time budget the budget ends the run
        "time_budget_s": budget,
        "batch_size": s.train_batch_size,
        "steps_per_epoch": s.train_steps_per_epoch or None,
        "lr": s.train_lr,
        "aux_lr": s.train_aux_lr,
        "warmup_steps": s.train_warmup_steps,
        "save_every_s": s.train_save_every_s,
        "seed": round_number,
        "heads": [h for h in heads if h != "bones"],
    }


def record_version(
    db: Database,
    registry: ModelRegistry,
    project_id: int,
    round_id: int | None,
    version: str,
    parent: str | None,
    train_images: int,
    metrics: dict,
) -> None:
    """The database row of a published version (idempotent)."""
    folder = str(registry.path(version))
    with db.session() as session:
        row = session.scalar(select(ModelVersion).where(ModelVersion.version == version))
        if row is None:
            session.add(
                ModelVersion(
                    project_id=project_id,
                    round_id=round_id,
                    version=version,
                    folder=folder,
                    parent=parent,
                    train_images=train_images,
                    metrics=clean(metrics),
                )
            )
        else:
            row.metrics = clean({**(row.metrics or {}), **metrics})


def current_round_count(db: Database, round_id: int | None, val: list) -> int:
    """How many validation samples (ids ``task:<id>``) were labelled in this round; the rest are earlier rounds'."""
    with db.session() as session:
        tasks = set(
            session.scalars(
                select(AnnotationRecord.task_id).where(
                    AnnotationRecord.round_id == round_id, AnnotationRecord.status == AnnotationStatus.SUBMITTED
                )
            )
        )
    return sum(1 for s in val if s.sample_id.startswith("task:") and int(s.sample_id[5:]) in tasks)


def calibration_summary(checkpoint: Path) -> dict:
    """``{"calibration": {fallback, validation_images, current_images, min_images, temperature}}`` of a trained
    checkpoint (what :func:`vl4pose.calibrate.calibrate` chose), or {} when there is none."""
    try:
        report = json.loads((checkpoint / "metrics.json").read_text()).get("calibration") or {}
    except (OSError, ValueError):
        return {}
    keys = ("fallback", "validation_images", "current_images", "min_images", "temperature")
    return {"calibration": {k: report.get(k) for k in keys}} if "fallback" in report else {}
