"""Pruning superseded predictions: Label Studio and the coordinator keep the current and the previous version.

Every round adds one prediction per unlabelled task; without pruning a 100,000-task project grows by 100,000
predictions a round in Label Studio (its Data Manager, exports and task pages slow down) and in the
``task_prediction`` table. After a ranking switches the queue to a new version, every other version of the
project's models is deleted:

- in Label Studio with one request per version, ``DELETE /api/projects/<id>/model-versions/`` (Label Studio 1.23:
  deletes all predictions of that version in one transaction, which at 100,000 tasks takes minutes and, on
  Label Studio's SQLite, holds its database's write lock meanwhile: ``VL4POSE_PRUNE_TIMEOUT_S`` is that request's
  own deadline, see docs/RESULTS.md "Label Studio's prediction import"). Only versions the coordinator published
  for this project are touched (predictions someone imported under another name stay). Label Studio resets the
  project's ``model_version`` when it deletes the version the project uses, or one named like an ML backend; the
  project's version is read back afterwards and set again if that happened.
- in ``task_prediction`` with one ``DELETE`` statement.

The previous version stays: annotations of the round that just closed may still arrive (webhooks, reconcile) and
are compared with what that version served. Pruning is housekeeping: a failure is logged and recorded, never fails
the round; the next ranking prunes everything stale again.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, select

from backend.errors import CoordinatorError
from backend.db import Database
from backend.models import ModelVersion, TaskPrediction
from backend.services.labelstudio import LabelStudio


log = logging.getLogger(__name__)


def prune_predictions(
    db: Database, ls: LabelStudio, project_id: int, ls_project_id: int, keep: set[str], current: str | None,
    timeout: float | None = None,
) -> dict[str, int | str]:
    """Delete the predictions of every version of the project not in ``keep``; ``current``: the version the
    queue uses (restored on the project if Label Studio cleared it); ``timeout``: the deadline of each delete request
    (``VL4POSE_PRUNE_TIMEOUT_S``; None: the adapter's). Returns counts (``label_studio``, ``coordinator``,
    ``versions``) and ``error`` when Label Studio could not be pruned."""
    keep = {v for v in keep if v}
    with db.session() as session:
        ours = set(session.scalars(select(ModelVersion.version).where(ModelVersion.project_id == project_id)))
        deleted_rows = session.execute(
            delete(TaskPrediction).where(
                TaskPrediction.project_id == project_id, TaskPrediction.model_version.not_in(keep)
            )
        ).rowcount
    result: dict[str, int | str] = {"coordinator": int(deleted_rows or 0), "label_studio": 0, "versions": 0}
    try:
        stale = [v for v, count in ls.model_versions(ls_project_id).items() if v in ours and v not in keep and count]
        for version in stale:
            deleted = ls.delete_predictions(ls_project_id, version, timeout)
            result["label_studio"] = int(result["label_studio"]) + deleted
            result["versions"] = int(result["versions"]) + 1
        if stale and current:
            found = ls.project(ls_project_id).get("model_version")
            if found != current:
                log.warning("Label Studio cleared project %d's model version (%r) while pruning; set again to %s",
                            ls_project_id, found, current)
                ls.update_project(ls_project_id, model_version=current)
    except CoordinatorError as exc:  # housekeeping: the next ranking prunes again
        log.warning("pruning the predictions of Label Studio project %d failed: %s", ls_project_id, exc)
        result["error"] = str(exc)[:300]
    if result["coordinator"] or result["label_studio"]:
        log.info("project %d: pruned superseded predictions (kept %s): %s", project_id, sorted(keep), result)
    return result
