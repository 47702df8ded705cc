"""Rank as score: the annotators' queue in a *joint* strategy's order (docs/SIMULATION.md, "Queue order").

A joint acquisition strategy (``Strategy.joint``: it chooses its batch as a set, e.g. ``vl4pose_mix``) has no
per-task score whose ascending order is its order. So when a project's strategy is joint, the rank shards store
their predictions without importing them; once every shard is in, the ``rank`` job calls
:func:`apply_queue_order`: the strategy orders the whole round's tasks at once (``Strategy.order`` with the
project's round budget and a seed fixed per project and version, so a resumed job gives the same order), each
task's stored score becomes its rank (``queue_scores``: position ``i`` of ``N`` -> ``i / N``, first = 0.0), and
the predictions are imported with those scores. Label Studio's uncertainty sampling serves the lowest score
first, so the queue is the strategy's order.

Supported joint strategies are those whose per-task values the stored prediction carries: ``vl4pose_mix``
(minus the expected log-likelihood). ``vl4pose_kcentre``, ``vl4pose_strata``, ``stratified`` and ``coreset``
need the pooled bottleneck embedding, which the Predictor does not return.

Shapes: N tasks of the version.
"""

from __future__ import annotations

import hashlib
import logging
import numpy as np
from sqlalchemy import select, update

from backend.db import Database
from backend.errors import CoordinatorError
from backend.models import Project, TaskPrediction

log = logging.getLogger(__name__)

JOINT_STRATEGIES = ("vl4pose_mix",)
"""Strategies ordered over the whole round (rank as score); the others score each task on its own."""


def is_joint(strategy: str) -> bool:
    """Whether a project's queue is ordered by :func:`apply_queue_order` (after all shards) instead of per task."""
    return strategy in JOINT_STRATEGIES


def order_seed(ls_project_id: int, version: str) -> int:
    """The order's random seed: fixed per Label Studio project and model version."""
    return int.from_bytes(hashlib.sha256(f"queue-order:{ls_project_id}:{version}".encode()).digest()[:8], "big")


def task_values(strategy: str, log_likelihood: np.ndarray) -> np.ndarray:
    """(N,) values the strategy orders from the stored (N,) expected log-likelihoods (``Strategy.values``)."""
    if strategy == "vl4pose_mix":
        return -np.asarray(log_likelihood, dtype=np.float64)  # VL4Pose's score: low likelihood first
    raise CoordinatorError(f"strategy {strategy!r} cannot order the queue from stored predictions; "
                           f"choose one of {list(JOINT_STRATEGIES)} or a per-task strategy (vl4pose, random)")


def queue_order_scores(strategy: str, log_likelihood: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """(N,) rank-as-score of N tasks (in a fixed order, e.g. task id) under a joint strategy."""
    from vl4pose.strategies import get_strategies, queue_scores  # deferred on purpose: loads torch (ranking only)

    [chosen] = get_strategies([strategy])
    order = chosen.order(task_values(strategy, log_likelihood), budget, np.random.default_rng(seed))
    return queue_scores(order)


def apply_queue_order(db: Database, project: Project, version: str) -> int:
    """Replace the stored score of every prediction of ``version`` by its rank in the strategy's order; returns
    how many tasks were ordered. Tasks are taken in task id order, so the result depends only on the stored
    predictions, the round budget and the seed."""
    with db.session() as session:
        rows = session.execute(
            select(TaskPrediction.id, TaskPrediction.log_likelihood)
            .where(TaskPrediction.project_id == project.id, TaskPrediction.model_version == version)
            .order_by(TaskPrediction.task_id)
        ).all()
        if not rows:
            return 0
        scores = queue_order_scores(project.strategy, np.array([r[1] for r in rows]), project.round_budget,
                                    order_seed(project.ls_project_id, version))
        session.execute(update(TaskPrediction), [{"id": r[0], "score": float(s)} for r, s in zip(rows, scores)])
    log.info("project %d: %d tasks of %s put in %s order (rank as score)", project.id, len(rows), version,
             project.strategy)
    return len(rows)
