"""The steps of the ``rank_shard`` job (:mod:`backend.jobs.rank_shard`): one shard of a round's ranking, taken by
whichever worker claims it.

A shard holds at most ``VL4POSE_RANK_SHARD_SIZE`` unlabelled tasks (``payload["tasks"]``: ``[task id, image URL]``
pairs, written by the ``rank`` job that listed them). Running it predicts the tasks that have no stored prediction
of the version yet through ``Predictor.predict_batch`` (the ML backend's code path), stores each batch, then
imports the shard's predictions into Label Studio in chunks of ``VL4POSE_IMPORT_CHUNK`` (``imported`` in the
payload records how far it got). Both stages resume: a shard re-run after its worker died predicts and imports only
the rest. When it is done its task list is dropped from the payload and replaced by its counts
(``ranked``, ``failed``, ``imported``), which the ``rank`` job adds up. Under a joint strategy
(:mod:`backend.services.queue_order`) a shard only stores its predictions: the ``rank`` job orders the whole round
and imports them once all shards are in.

Every query is restricted to the shard's tasks, so a worker's memory depends on the shard size, never on the
project's size.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from backend.config import Settings
from backend.db import Database
from backend.errors import CoordinatorError
from backend.jobs.context import JobContext
from backend.models import Project, TaskPrediction
from backend.services.annotations import keypoints_from_json, keypoints_to_json
from vl4pose.data.labelstudio import keypoints_to_results
from vl4pose.errors import ImageError


log = logging.getLogger(__name__)

_local = threading.local()


def load_predictor(path: Path, settings: Settings) -> Any:
    """A :class:`vl4pose.predictor.Predictor` for a version folder with the settings' batch size and person finding,
    kept per thread (one load per version and worker thread, not one per shard)."""
    from vl4pose.predictor import Predictor  # deferred on purpose: loads torch (workers only)

    config = settings.predictor_config()
    key = (str(path), config)
    cached = getattr(_local, "predictor", None)
    if cached is None or cached[0] != key:
        _local.predictor = (key, Predictor(path, config))
    return _local.predictor[1]


def queue_score(project: Project, task_id: int, prediction: Any) -> float:
    """The queue score: VL4Pose's calibrated likelihood, or a fixed pseudo-random number (``random``)."""
    if project.strategy == "random":
        digest = hashlib.sha256(f"{project.ls_project_id}:{task_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64
    return float(prediction.score)


def predict_tasks(ctx: JobContext, project: Project, version: str, tasks: list[tuple[int, str]]) -> int:
    """Predict the tasks that have no stored prediction of ``version`` yet; returns how many could not be read."""
    services = ctx.services
    ids = [t for t, _ in tasks]
    with services.db.session() as session:
        done = set(
            session.scalars(
                select(TaskPrediction.task_id).where(
                    TaskPrediction.project_id == project.id,
                    TaskPrediction.model_version == version,
                    TaskPrediction.task_id.in_(ids),
                )
            ).all()
        )
    todo = [t for t in tasks if t[0] not in done]
    if not todo:
        return 0
    batch = services.settings.rank_batch_size
    predictor = load_predictor(services.registry().path(version), services.settings)
    failed = 0
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        files = services.images.get_many([url for _, url in chunk])
        readable = [(t, f) for t, f in zip(chunk, files) if not isinstance(f, CoordinatorError)]
        predictions = predictor.predict_batch([f for _, f in readable]) if readable else []
        rows = []
        for ((task_id, url), _), prediction in zip(readable, predictions):
            if isinstance(prediction, ImageError):
                continue
            rows.append(
                TaskPrediction(
                    project_id=project.id,
                    task_id=task_id,
                    model_version=version,
                    score=queue_score(project, task_id, prediction),
                    log_likelihood=float(prediction.log_likelihood),
                    image_url=url,
                    image_size=list(prediction.image_size),
                    keypoints=keypoints_to_json(prediction.refined),
                    placed=[bool(p) for p in prediction.placed],
                    confidence=[round(float(c), 4) for c in prediction.confidence],
                )
            )
        failed += len(chunk) - len(rows)
        with services.db.session() as session:
            session.add_all(rows)
        ctx.progress(
            0.9 * (start + len(chunk)) / len(todo),
            f"scoring tasks with {version}: {min(start + batch, len(todo))}/{len(todo)}",
        )
    return failed


def prediction_payload(project: Project, row: TaskPrediction) -> dict:
    """One Label Studio prediction: the refined pose, per-keypoint scores, the likelihood score."""
    labels = project.label_config["labels"]
    keypoints = keypoints_from_json(row.keypoints, len(labels))
    placed = np.asarray(row.placed, dtype=bool) & np.array([label is not None for label in labels])
    result = keypoints_to_results(
        keypoints,
        tuple(row.image_size),
        labels,
        placed,
        np.asarray(row.confidence, dtype=float),
        project.label_config["from_name"],
        project.label_config["to_name"],
    )
    return {"task": row.task_id, "result": result, "score": row.score, "model_version": row.model_version}


def import_predictions(ctx: JobContext, project: Project, version: str, task_ids: list[int] | None) -> int:
    """Import the stored predictions of these tasks (``None``: every task of the version, what the ``rank`` job
    does for a joint strategy) into Label Studio in task id order, in chunks of ``import_chunk``;
    ``imported_through`` (the last task id sent) and ``imported`` in the payload record progress, so a re-run sends
    only the rest. Returns how many predictions were imported in all."""
    services = ctx.services
    chunk = services.settings.import_chunk
    where = (
        TaskPrediction.project_id == project.id,
        TaskPrediction.model_version == version,
        *((TaskPrediction.task_id.in_(task_ids),) if task_ids is not None else ()),
    )
    with services.db.session() as session:
        total = int(session.scalar(select(func.count()).select_from(TaskPrediction).where(*where)) or 0)
    ls = services.ls()
    while True:
        after = int(ctx.payload.get("imported_through", -1))
        with services.db.session() as session:
            rows = session.scalars(
                select(TaskPrediction)
                .where(*where, TaskPrediction.task_id > after)
                .order_by(TaskPrediction.task_id)
                .limit(chunk)
            ).all()
            payload = [prediction_payload(project, r) for r in rows]
        if not payload:
            return int(ctx.payload.get("imported", 0))
        ls.import_predictions(project.ls_project_id, payload)
        imported = int(ctx.payload.get("imported", 0)) + len(payload)
        ctx.save_payload(imported_through=payload[-1]["task"], imported=imported)
        ctx.progress(0.9 + 0.1 * min(1.0, imported / max(total, 1)),
                     f"importing predictions into Label Studio: {imported}/{total}")


def stored_count(db: Database, project: Project, version: str, task_ids: list[int]) -> int:
    """How many of these tasks have a stored prediction of ``version``."""
    if not task_ids:
        return 0
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(TaskPrediction).where(
            TaskPrediction.project_id == project.id, TaskPrediction.model_version == version,
            TaskPrediction.task_id.in_(task_ids))) or 0)
