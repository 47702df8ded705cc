"""An in-memory stand-in for the Label Studio adapter (unit tests only; integration tests use the real one).

It keeps projects, tasks, annotations and predictions like Label Studio does and builds webhook bodies
shaped like the captured ones (``label-studio-captures/11_*.json``). ``fail`` makes chosen methods raise
:class:`LabelStudioUnavailable` a number of times, to play an unreachable server.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import urllib.parse
from pathlib import Path

import numpy as np

from backend.services.labelstudio_client import LabelStudioError, LabelStudioUnavailable

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("VL4POSE_SHARED_DATA", REPO.parent / "shared" / "data"))

SECRET = "test-webhook-secret-0123456789"
TOKEN = "test-api-token-0123456789abcdef"


def base_config(tmp_path: Path, **overrides) -> dict:
    config = {
        "database_url": f"sqlite:///{tmp_path / 'coordinator.sqlite'}",
        "storage_dir": str(tmp_path / "storage"),
        "models_dir": str(tmp_path / "models"),
        "queue": "immediate",
        "webhook_secret": SECRET,
        "api_token": TOKEN,
        "label_studio_url": "http://127.0.0.1:9",
        "label_studio_token": "unused-in-unit-tests",
        "label_studio_files_root": str(SHARED_DATA),
        "public_url": "http://127.0.0.1:8200",
        "job_retries": 3,
        "job_retry_delay_s": 0.0,
        "job_stale_s": 30.0,
        "round_budget": 3,
        "holdout_fraction": 0.0,
        "train_epochs": 1,
        "train_steps_per_epoch": 2,
        "train_batch_size": 4,
        "train_warmup_steps": 1,
        "train_val_fraction": 0.25,
        "rank_batch_size": 8,
        "import_chunk": 4,
    }
    config.update(overrides)
    return config


def gt_results(sample, config: dict, keypoints: np.ndarray | None = None) -> list[dict]:
    """Label Studio results of a sample's ground truth (what a careful annotator submits)."""
    from vl4pose.data.labelstudio import keypoints_to_results
    from vl4pose.data.sample import image_size

    points = sample.keypoints if keypoints is None else keypoints
    placed = np.isfinite(points).all(axis=1) & np.array([label is not None for label in config["labels"]])
    return keypoints_to_results(
        points,
        image_size(sample.image),
        [l or "" for l in config["labels"]],
        placed,
        None,
        config["from_name"],
        config["to_name"],
    )


def sample_for_url(pool: dict, url: str):
    """The LSPET sample behind a ``/data/local-files/?d=lspet/images/imNNNNN.jpg`` URL."""
    return pool[Path(urllib.parse.unquote(url.split("?d=", 1)[1])).stem]


class FakeLabelStudio:
    def __init__(self, files_root: Path | None = None) -> None:
        self.files_root = files_root
        self.projects: dict[int, dict] = {}
        self.tasks: dict[int, dict] = {}
        self.predictions: list[dict] = []
        self.webhooks_: list[dict] = []
        self.ml: list[dict] = []
        self.storages: list[dict] = []
        self.views_: list[dict] = []
        self.fail: dict[str, int] = {}
        self.calls: list[str] = []
        self.on_call = None  # fn(name, failing) called before every adapter call
        self._ids = itertools.count(1)
        self._clock = dt.datetime(2026, 1, 1, 12, 0, 0)

    # -- helpers for tests --------------------------------------------------------------------------
    def _check(self, name: str) -> None:
        self.calls.append(name)
        left = self.fail.get(name, 0)
        if self.on_call is not None:
            self.on_call(name, bool(left))
        if left:
            self.fail[name] = left - 1
            raise LabelStudioUnavailable(
                f"Label Studio at http://fake is unreachable (ConnectError) while trying to {name}"
            )

    def _now(self) -> str:
        self._clock += dt.timedelta(seconds=1)
        return self._clock.isoformat(timespec="microseconds") + "Z"

    def annotate(
        self, task_id: int, result: list[dict], prediction: dict | None = None, was_cancelled: bool = False
    ) -> dict:
        """Submit an annotation as an annotator would; returns the ANNOTATION_CREATED webhook body."""
        now = self._now()
        annotation = {
            "id": next(self._ids),
            "task": task_id,
            "project": self.tasks[task_id]["project"],
            "result": result,
            "was_cancelled": was_cancelled,
            "created_at": now,
            "updated_at": now,
            "parent_prediction": prediction.get("id") if prediction else None,
            "prediction": prediction or {},
        }
        self.tasks[task_id]["annotations"].append(annotation)
        self.tasks[task_id]["updated_at"] = now
        return self.event("ANNOTATION_CREATED", annotation)

    def update(self, annotation_id: int, result: list[dict]) -> dict:
        annotation = self.annotation(annotation_id)
        annotation.update(result=result, updated_at=self._now())
        self.tasks[annotation["task"]]["updated_at"] = annotation["updated_at"]
        return self.event("ANNOTATION_UPDATED", annotation)

    def delete(self, annotation_id: int) -> dict:
        task = next(t for t in self.tasks.values() if any(a["id"] == annotation_id for a in t["annotations"]))
        task["annotations"] = [a for a in task["annotations"] if a["id"] != annotation_id]
        task["updated_at"] = self._now()
        return {
            "action": "ANNOTATIONS_DELETED",
            "annotations": [{"id": annotation_id}],
            "project": {"id": task["project"], "token": "project-invite-token"},
        }

    def annotation(self, annotation_id: int) -> dict:
        return next(a for t in self.tasks.values() for a in t["annotations"] if a["id"] == annotation_id)

    def event(self, action: str, annotation: dict) -> dict:
        task = self.tasks[annotation["task"]]
        return {
            "action": action,
            "annotation": dict(annotation),
            "project": {"id": task["project"], "title": "fake", "token": "project-invite-token"},
            "task": {"id": task["id"], "data": task["data"], "project": task["project"]},
        }

    def task_predictions(self, task_id: int, version: str | None = None) -> list[dict]:
        return [
            p for p in self.predictions if p["task"] == task_id and (version is None or p["model_version"] == version)
        ]

    # -- the adapter interface ----------------------------------------------------------------------
    def whoami(self) -> dict:
        self._check("whoami")
        return {"id": 1, "email": "admin@example.com"}

    def create_project(self, title: str, label_config: str) -> int:
        self._check("create_project")
        project_id = next(self._ids)
        self.projects[project_id] = {
            "id": project_id,
            "title": title,
            "label_config": label_config,
            "model_version": "",
            "sampling": "Sequential sampling",
        }
        return project_id

    def project(self, project_id: int) -> dict:
        self._check("project")
        if project_id not in self.projects:
            raise LabelStudioError(f"Label Studio refused (404) to read project {project_id}")
        return dict(self.projects[project_id])

    def update_project(self, project_id: int, **fields) -> None:
        self._check("update_project")
        if "model_version" in fields and not any(
            p["model_version"] == fields["model_version"]
            for p in self.predictions
            if self.tasks[p["task"]]["project"] == project_id
        ):
            raise LabelStudioError("Label Studio refused (400) to update project: unknown model version")
        self.projects[project_id].update(fields)

    def local_storages(self, project_id: int) -> list[dict]:
        self._check("local_storages")
        return [s for s in self.storages if s["project"] == project_id]

    def add_local_storage(self, project_id: int, path: str, title: str) -> int:
        self._check("add_local_storage")
        storage_id = next(self._ids)
        self.storages.append({"id": storage_id, "project": project_id, "path": path, "title": title})
        return storage_id

    def import_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        self._check("import_tasks")
        ids = []
        for task in tasks:
            task_id = next(self._ids)
            self.tasks[task_id] = {
                "id": task_id,
                "project": project_id,
                "data": dict(task["data"]),
                "annotations": [],
                "updated_at": self._now(),
            }
            for annotation in task.get("annotations", []):
                now = self._now()
                self.tasks[task_id]["annotations"].append(
                    {
                        "id": next(self._ids),
                        "task": task_id,
                        "project": project_id,
                        "result": annotation["result"],
                        "was_cancelled": False,
                        "created_at": now,
                        "updated_at": now,
                        "prediction": {},
                    }
                )
            ids.append(task_id)
        return ids

    def create_annotation(self, task_id: int, result: list[dict]) -> int:
        self._check("create_annotation")
        return self.annotate(task_id, result)["annotation"]["id"]

    def upload_files(self, project_id: int, paths: list[Path]) -> list[int]:
        self._check("upload_files")
        return self.import_tasks(
            project_id, [{"data": {"image": f"/data/upload/{project_id}/abc123-{p.name}"}} for p in paths]
        )

    def list_tasks(self, project_id: int):
        self._check("list_tasks")
        for task in self.tasks.values():
            if task["project"] == project_id:
                done = [a for a in task["annotations"] if not a["was_cancelled"]]
                yield {
                    "id": task["id"],
                    "data": task["data"],
                    "total_annotations": len(task["annotations"]),
                    "cancelled_annotations": len(task["annotations"]) - len(done),
                }

    def task_page(self, project_id: int, page: int, page_size: int) -> tuple[list[dict], int]:
        self._check("task_page")
        rows = list(self.list_tasks(project_id))
        return rows[(page - 1) * page_size : page * page_size], len(rows)

    def tasks_after(self, project_id: int, key: str, after, page_size: int) -> list[dict]:
        """Keyset pages like Label Studio's Data Manager (``updated_at`` strings compare in time order here)."""
        self._check("tasks_after")
        rows = [t for t in self.tasks.values() if t["project"] == project_id]
        if key == "updated_at" and after is not None:
            rows = [t for t in rows if t.get("updated_at", "") > after]
        elif after is not None:
            rows = [t for t in rows if t["id"] > after]
        rows.sort(key=lambda t: (t.get(key) or "", t["id"]) if key == "updated_at" else t["id"])
        return [
            {"id": t["id"], "data": t["data"], "updated_at": t.get("updated_at"),
             "annotations": [dict(a, prediction={}) for a in t["annotations"]]}
            for t in rows[:page_size]
        ]

    def model_versions(self, project_id: int) -> dict[str, int]:
        self._check("model_versions")
        counts: dict[str, int] = {}
        for p in self.predictions:
            if self.tasks[p["task"]]["project"] == project_id:
                counts[p["model_version"]] = counts.get(p["model_version"], 0) + 1
        return counts

    def delete_predictions(self, project_id: int, model_version: str, timeout: float | None = None) -> int:
        self._check("delete_predictions")
        keep = [
            p for p in self.predictions
            if not (p["model_version"] == model_version and self.tasks[p["task"]]["project"] == project_id)
        ]
        deleted, self.predictions = len(self.predictions) - len(keep), keep
        return deleted

    def export_annotated(self, project_id: int) -> list[dict]:
        self._check("export_annotated")
        return [
            {"id": t["id"], "data": t["data"], "annotations": [dict(a, prediction={}) for a in t["annotations"]]}
            for t in self.tasks.values()
            if t["project"] == project_id and t["annotations"]
        ]

    def import_predictions(self, project_id: int, predictions: list[dict]) -> int:
        self._check("import_predictions")
        for prediction in predictions:
            if self.tasks[prediction["task"]]["project"] != project_id:
                raise LabelStudioError("task of another project")
            self.predictions.append({**prediction, "id": next(self._ids)})
        return len(predictions)

    def fetch(self, url: str, max_bytes: int) -> bytes:
        self._check("fetch")
        if self.files_root is not None and "?d=" in url:
            return (self.files_root / urllib.parse.unquote(url.split("?d=", 1)[1])).read_bytes()
        raise LabelStudioError(f"Label Studio refused (404) to download image {url}")

    def ml_backends(self, project_id: int) -> list[dict]:
        self._check("ml_backends")
        return [b for b in self.ml if b["project"] == project_id]

    def add_ml_backend(self, project_id: int, url: str, title: str) -> int:
        self._check("add_ml_backend")
        backend_id = next(self._ids)
        self.ml.append({"id": backend_id, "project": project_id, "url": url, "title": title, "is_interactive": True})
        self.projects[project_id]["model_version"] = title  # what Label Studio does on connect
        return backend_id

    def webhooks(self, project_id: int) -> list[dict]:
        self._check("webhooks")
        return [h for h in self.webhooks_ if h["project"] == project_id]

    def add_webhook(self, project_id: int, url: str, headers: dict) -> int:
        self._check("add_webhook")
        hook_id = next(self._ids)
        self.webhooks_.append({"id": hook_id, "project": project_id, "url": url, "headers": dict(headers)})
        return hook_id

    def update_webhook(self, webhook_id: int, url: str, headers: dict) -> None:
        self._check("update_webhook")
        next(h for h in self.webhooks_ if h["id"] == webhook_id).update(url=url, headers=dict(headers))

    def views(self, project_id: int) -> list[dict]:
        self._check("views")
        return [v for v in self.views_ if v["project"] == project_id]

    def add_view(self, project_id: int, title: str, ordering: list[str]) -> int:
        self._check("add_view")
        view_id = next(self._ids)
        self.views_.append({"id": view_id, "project": project_id, "title": title, "data": {"ordering": ordering}})
        return view_id

    def close(self) -> None:
        pass


OLD_PROJECT_SQL = (
    "INSERT INTO project (id, ls_project_id, title, skeleton, strategy, round_budget, validation_policy, "
    "holdout_fraction, label_config, image_source, created_at) VALUES (1, 7, 'old', 'lsp14', 'vl4pose', 5, "
    "'share', 0.1, '{}', 'local-files', '2026-01-01 00:00:00')")


def insert_old_project(connection) -> None:
    """Project 1 (Label Studio project 7) written with plain SQL, for migration tests on an older schema."""
    from sqlalchemy import text

    connection.execute(text(OLD_PROJECT_SQL))
