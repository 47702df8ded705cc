"""Rank as score: a joint strategy's order (``vl4pose_mix``) reaches Label Studio as the prediction scores, so the
queue (lowest score first) is that order; and the acquisition-strategy setting (fake Label Studio and predictor of
``test_coord_scale``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import test_coord_scale as scale
from sqlalchemy import select

from backend.config import Settings, SettingsError
from backend.models import Job, JobKind, Project, TaskPrediction

STARTER = Path(__file__).resolve().parents[2] / "models" / "lsp14-starter"


class ScoredFake(scale.BigFakeLabelStudio):
    """Also keeps every imported prediction's score and how many imports each task got."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.scores: dict[int, float] = {}

    def import_predictions(self, project_id: int, predictions: list[dict]) -> int:
        self.scores.update({p["task"]: p["score"] for p in predictions})
        return super().import_predictions(project_id, predictions)


def test_a_joint_strategys_order_becomes_the_prediction_scores(tmp_path, monkeypatch):
    import backend.services.rank_shards as shards
    from backend.services.queue_order import order_seed, queue_order_scores

    monkeypatch.setattr(shards, "load_predictor", shards.load_predictor)  # restored after build() replaces it
    monkeypatch.setattr(scale, "BigFakeLabelStudio", ScoredFake)
    size, budget = 40, 10
    services, fake, project_id = scale.build(tmp_path, size, STARTER, rank_shard_size=10)  # published, never run
    with services.db.session() as session:
        project = session.get(Project, project_id)
        project.strategy, project.round_budget = "vl4pose_mix", budget
        ls_id = project.ls_project_id
    version = f"p{ls_id}-v0"
    rank_id = scale._rank(services, project_id, version)
    with services.db.session() as session:
        rank = session.get(Job, rank_id)
        assert rank.error is None and rank.payload["ordered"] == size
        parts = session.scalars(select(Job).where(Job.kind == JobKind.RANK_SHARD, Job.parent_id == rank_id)).all()
        assert len(parts) == 4 and all(p.payload["imported"] == 0 and p.payload["ranked"] == 10 for p in parts)
        stored = dict(session.execute(select(TaskPrediction.task_id, TaskPrediction.score)
                                      .where(TaskPrediction.model_version == version)).all())
        likelihood = dict(session.execute(select(TaskPrediction.task_id, TaskPrediction.log_likelihood)
                                          .where(TaskPrediction.model_version == version)).all())
    assert set(fake.per_version[version]) == {1}  # every task imported once, by the rank job after all shards
    assert fake.scores == stored and fake.projects[ls_id]["model_version"] == version
    queue = sorted(fake.scores, key=fake.scores.get)  # Label Studio's uncertainty sampling: lowest score first
    assert sorted(fake.scores.values()) == [i / size for i in range(size)]
    by_likelihood = sorted(likelihood, key=likelihood.get)  # lowest likelihood first
    assert queue[0:budget:2] == by_likelihood[:5]  # half the batch: the lowest likelihoods, in that order ...
    assert not set(queue[1:budget:2]) & set(by_likelihood[:5])  # ... interleaved with draws from the rest
    assert queue[budget:] == [t for t in by_likelihood if t not in queue[:budget]]  # then the rest by likelihood
    tasks = sorted(likelihood)
    again = queue_order_scores("vl4pose_mix", np.array([likelihood[t] for t in tasks]), budget, order_seed(ls_id, version))
    assert dict(zip(tasks, again)) == stored  # fixed per project and version: a resumed job gives the same order


def test_the_acquisition_strategy_setting(make_app, link):
    with pytest.raises(SettingsError, match="ACQUISITION_STRATEGY"):
        Settings.from_env({}, {"acquisition_strategy": "vl4pose_kcentre"}, require_secrets=False)
    app = make_app(acquisition_strategy="vl4pose_mix")
    services = app.extensions["vl4pose"]

    def strategy() -> str:
        with services.db.session() as session:
            return session.scalars(select(Project.strategy)).one()

    result = link(app, limit=2)
    assert strategy() == "vl4pose_mix"  # a new project takes the setting
    link(app, limit=2, project_id=result.ls_project_id, strategy="random")
    assert strategy() == "random"
    link(app, limit=2, project_id=result.ls_project_id)
    assert strategy() == "random"  # a re-link without a strategy keeps the project's
