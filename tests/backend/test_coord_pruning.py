"""Pruning superseded predictions (``backend.services.pruning``) gives Label Studio's bulk delete its own deadline:
at 100,000 tasks one version's delete takes minutes (docs/RESULTS.md), far past the adapter's 30 s per call."""

from __future__ import annotations

import pytest

from backend.config import Settings, SettingsError
from backend.db import Database
from backend.models import ModelVersion, Project, TaskPrediction
from backend.services.pruning import prune_predictions

GOOD = {"VL4POSE_WEBHOOK_SECRET": "s" * 20, "VL4POSE_API_TOKEN": "t" * 20}


class StubLabelStudio:
    """Holds ``counts`` predictions per version of one project; records each delete with its deadline."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts, self.deleted = dict(counts), []

    def model_versions(self, project_id: int) -> dict[str, int]:
        return dict(self.counts)

    def delete_predictions(self, project_id: int, model_version: str, timeout: float | None = None) -> int:
        self.deleted.append((model_version, timeout))
        return self.counts.pop(model_version)

    def project(self, project_id: int) -> dict:
        return {"model_version": "p1-v2"}


def test_each_delete_request_gets_the_prune_deadline_and_two_versions_stay(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'coordinator.sqlite'}")
    db.upgrade()
    try:
        with db.session() as session:
            project = Project(ls_project_id=1, title="p", skeleton="lsp14", round_budget=10,
                              label_config={"labels": []})
            session.add(project)
            session.flush()
            for n in range(3):
                session.add(ModelVersion(project_id=project.id, version=f"p1-v{n}", folder=f"p1-v{n}"))
                session.add(TaskPrediction(project_id=project.id, task_id=1, model_version=f"p1-v{n}", score=0.5,
                                           log_likelihood=0.0, image_url="x.jpg", keypoints=[], placed=[],
                                           confidence=[], image_size=[1, 1]))
            project_id = project.id
        ls = StubLabelStudio({"p1-v0": 7, "p1-v1": 7, "p1-v2": 7, "someone-elses": 3})
        result = prune_predictions(db, ls, project_id, 1, {"p1-v1", "p1-v2"}, "p1-v2", timeout=1800.0)
    finally:
        db.dispose()
    assert ls.deleted == [("p1-v0", 1800.0)]  # only our stale version, with the long deadline
    assert result == {"coordinator": 1, "label_studio": 7, "versions": 1}


def test_the_prune_deadline_is_a_setting():
    assert Settings.from_env(GOOD).prune_timeout_s == 1800.0
    assert Settings.from_env({**GOOD, "VL4POSE_PRUNE_TIMEOUT_S": "600"}).prune_timeout_s == 600.0
    with pytest.raises(SettingsError, match="VL4POSE_PRUNE_TIMEOUT_S"):
        Settings.from_env({**GOOD, "VL4POSE_PRUNE_TIMEOUT_S": "0"})
