"""The ``rank`` job: score every unlabelled task with a model version and re-order the annotators' queue.

Stages (each resumable): list unlabelled tasks -> predict them in chunks through
``Predictor.predict_batch`` (the ML backend's code path), storing each chunk's predictions in the
database -> bulk-import them into Label Studio -> set the project's ``model_version`` (and
``sampling="Uncertainty sampling"``) so the queue serves the lowest score first -> make the version
current in the registry -> finish the round and open the next one. The project's model version only
moves once every prediction is in, so the queue is never half re-ranked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select

from backend.errors import CoordinatorError
from backend.job_context import Handler, JobContext
from backend.models import AnnotationRecord, AnnotationStatus, Project, Round, RoundState, TaskPrediction, utcnow
from backend.services.annotations import keypoints_from_json, keypoints_to_json
from backend.services.rounds import open_round, set_round_state
from vl4pose.data.labelstudio import keypoints_to_results
from vl4pose.errors import ImageError

if TYPE_CHECKING:
    from backend.services import Services

log = logging.getLogger(__name__)

UNCERTAINTY_SAMPLING = "Uncertainty sampling"


def unlabelled_tasks(services: Services, project: Project) -> list[tuple[int, str]]:
    """(task id, image URL) of every task without a submitted annotation, in Label Studio or here."""
    with services.db.session() as session:
        labelled = set(
            session.scalars(
                select(AnnotationRecord.task_id).where(
                    AnnotationRecord.project_id == project.id, AnnotationRecord.status == AnnotationStatus.SUBMITTED
                )
            ).all()
        )
    key = project.label_config.get("image_key", "image")
    out = []
    for task in services.ls().list_tasks(project.ls_project_id):
        done = int(task.get("total_annotations") or 0) - int(task.get("cancelled_annotations") or 0)
        url = (task.get("data") or {}).get(key)
        if done <= 0 and task["id"] not in labelled and isinstance(url, str):
            out.append((int(task["id"]), url))
    return out


def _score(project: Project, task_id: int, prediction) -> float:
    """The queue score: VL4Pose's calibrated likelihood, or a fixed pseudo-random number (``random``)."""
    if project.strategy == "random":
        digest = hashlib.sha256(f"{project.ls_project_id}:{task_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64
    return float(prediction.score)


def predict_tasks(ctx: JobContext, project: Project, version: str, tasks: list[tuple[int, str]]) -> int:
    """Predict the tasks that have no stored prediction of ``version`` yet; returns how many failed."""
    from vl4pose.predictor import Predictor, PredictorConfig

    services = ctx.services
    with services.db.session() as session:
        done = set(
            session.scalars(
                select(TaskPrediction.task_id).where(
                    TaskPrediction.project_id == project.id, TaskPrediction.model_version == version
                )
            ).all()
        )
    todo = [t for t in tasks if t[0] not in done]
    if not todo:
        return 0
    batch = services.settings.rank_batch_size
    predictor = Predictor(services.registry().path(version), PredictorConfig(batch_size=batch))
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
                    score=_score(project, task_id, prediction),
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
            0.05 + 0.75 * (start + len(chunk)) / len(todo),
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


def import_predictions(ctx: JobContext, project: Project, version: str, task_ids: list[int]) -> int:
    """Bulk-import stored predictions in chunks (``imported`` in the payload records progress); returns
    how many predictions the version has for these tasks."""
    services = ctx.services
    chunk = services.settings.import_chunk
    start = int(ctx.payload.get("imported", 0))
    with services.db.session() as session:
        rows = session.scalars(
            select(TaskPrediction)
            .where(TaskPrediction.project_id == project.id, TaskPrediction.model_version == version)
            .order_by(TaskPrediction.task_id)
        ).all()
    wanted = set(task_ids)
    rows = [r for r in rows if r.task_id in wanted]
    ls = services.ls()
    for begin in range(start, len(rows), chunk):
        ls.import_predictions(
            project.ls_project_id, [prediction_payload(project, r) for r in rows[begin : begin + chunk]]
        )
        ctx.save_payload(imported=min(begin + chunk, len(rows)))
        ctx.progress(
            0.8 + 0.15 * min(begin + chunk, len(rows)) / len(rows),
            f"importing predictions into Label Studio: {min(begin + chunk, len(rows))}/{len(rows)}",
        )
    return len(rows)


class RankHandler(Handler):
    """Payload: ``{"version"}``; ``initial: true`` ranks the first round's queue without closing a round."""

    def run(self, ctx: JobContext) -> None:
        services, version = ctx.services, ctx.payload["version"]
        started = time.monotonic()
        with services.db.session() as session:
            project = session.get(Project, ctx.project_id)
            session.expunge(project)
        if not ctx.payload.get("initial"):
            set_round_state(services, ctx.round_id, RoundState.RANKING)
        ctx.progress(0.01, "listing unlabelled tasks", force=True)
        listing = ctx.dir / "tasks.json"
        if not listing.is_file():
            listing.write_text(json.dumps(unlabelled_tasks(services, project)))
        tasks = [(int(t), str(u)) for t, u in json.loads(listing.read_text())]
        failed = predict_tasks(ctx, project, version, tasks)
        task_ids = [t for t, _ in tasks]
        imported = import_predictions(ctx, project, version, task_ids)
        ctx.progress(0.96, "switching the queue to the new model version", force=True)
        ls = services.ls()
        if imported:  # Label Studio refuses a model version that no prediction carries
            ls.update_project(project.ls_project_id, model_version=version, sampling=UNCERTAINTY_SAMPLING)
        services.registry().set_current(version, project.ls_project_id)  # this project's model only
        self._finish_round(ctx, project, version, time.monotonic() - started, len(tasks) - failed, failed)

    def _finish_round(
        self, ctx: JobContext, project: Project, version: str, rank_s: float, ranked: int, failed: int
    ) -> None:
        services = ctx.services
        with services.db.session() as session:
            head = session.scalars(
                select(TaskPrediction.task_id)
                .where(TaskPrediction.project_id == project.id, TaskPrediction.model_version == version)
                .order_by(TaskPrediction.score, TaskPrediction.task_id)
                .limit(project.round_budget)
            ).all()
            round_ = session.get(Round, ctx.round_id) if ctx.round_id else None
            if ctx.payload.get("initial"):
                if round_ is not None and round_.state == RoundState.OPEN:
                    round_.model_version, round_.selected_tasks = version, list(head)
                return
            now = utcnow()
            round_.state, round_.ranked_at = RoundState.DONE, now
            timings = {**(round_.timings or {}), "rank_s": round(rank_s, 2)}
            if round_.closed_at is not None:
                timings["close_to_ranked_s"] = round((now - round_.closed_at).total_seconds(), 2)
            round_.timings = timings
            round_.metrics = {**(round_.metrics or {}), "ranked_tasks": ranked, "unreadable_tasks": failed}
            open_round(session, session.get(Project, project.id), version, list(head))

    def failed(self, ctx: JobContext, message: str) -> None:
        if not ctx.payload.get("initial"):
            set_round_state(ctx.services, ctx.round_id, RoundState.FAILED, f"ranking failed: {message}")

    def reset(self, services: Services, job_id: int) -> None:
        from backend.services.training import _reset_round

        _reset_round(services, job_id, RoundState.RANKING)
