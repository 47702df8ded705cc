"""Shared pieces of the end-to-end and browser tests (a module of its own: conftest modules are not importable)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("VL4POSE_SHARED_DATA", REPO.parent / "shared" / "data"))
POOL, BUDGET, HOLDOUT = 40, 8, 8


@dataclass
class Live:
    config: object
    link: dict
    coordinator: object
    ls: requests.Session
    ls_url: str

    @property
    def ls_project(self) -> int:
        return self.link["ls_project_id"]

    @property
    def project(self) -> int:
        return self.link["project_id"]

    def db(self):
        """The coordinator's database (SQLAlchemy, read-only use)."""
        from backend.db import Database

        return Database(f"sqlite:///{self.config.storage / 'coordinator.sqlite'}")

    def ls_get(self, path: str, **params):
        response = self.ls.get(self.ls_url + path, params=params, timeout=60)
        response.raise_for_status()
        return response.json()

    def predictions(self, version: str) -> dict[int, dict]:
        """Label Studio's stored predictions of a model version, by task id."""
        out = {}
        for task in self.ls_get("/api/tasks/", project=self.ls_project, page_size=500, fields="all")["tasks"]:
            for prediction in task.get("predictions") or []:
                if prediction.get("model_version") == version:
                    out[task["id"]] = prediction
        return out

    def labelled_tasks(self) -> set[int]:
        tasks = self.ls_get("/api/tasks/", project=self.ls_project, page_size=500)["tasks"]
        return {t["id"] for t in tasks if t.get("total_annotations", 0) > 0}


@dataclass
class RoundLog:
    """What one round looked like from the annotator's side."""

    version: str
    scores_before: dict[int, float]
    labelled: list = field(default_factory=list)
    ml_health_version: str | None = None
    registry_current: str | None = None


def pct_cell(value: float | None) -> str:
    """A share as the dashboard shows it."""
    return "—" if value is None else f"{100 * value:.1f}%"


def effort_cell(r: dict) -> str:
    """The dashboard's "Corrections per task" cell of a round summary (``/api/projects/<id>`` ``rounds[]``)."""
    text = "—" if r.get("corrections_per_task") is None else \
        f"{r['corrections_per_task']:.2f} ({pct_cell(r['no_correction_share'])} none)"
    if r.get("unserved_tasks"):
        text += f" · {r['unserved_tasks']} unserved: {r['unserved_keypoints_per_task']:.1f} kp"
    return text
