"""The clicks an annotator made on a task so far, so that a later click's re-solve keeps the earlier ones in place.

Label Studio 1.23.2 sends an interactive ``/predict`` only the new click and the draft's regions of the clicked
label (:mod:`ml_backend.suggestions`), and accepting a click's suggestions deletes the click's own (dynamic)
region: no later request tells where the annotator clicked before. Without this memory the second click's
re-solve clamped only the second click and re-suggested the first clicked label at a re-solved place, under
the draft's id: accepting all moved the first click.

One small JSON file per project and task under ``root`` (every gunicorn worker of the backend sees it, and a
restart keeps it): the latest click of each label, in Label Studio's percentages, and the task's annotations as
the request showed them. It is forgotten when the task's annotations change (a later request's task holds an
annotation submitted, updated or deleted since: the annotator moved on), when ``/webhook`` gets an event that ends
the task's annotation (Label Studio 1.23.2 posts them without the backend's credentials, so with auth on they are
refused: measured in the browser test), and after ``ttl`` seconds without a click on the task (an abandoned
session). Two annotators correcting the same task at the same minute share it (the request does not say who
clicked).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from vl4pose.atomic import write_atomic

log = logging.getLogger(__name__)


def _key(value: object) -> str | None:
    """A project or task id as a file-name part (digits only), None for anything else."""
    if isinstance(value, bool):
        return None
    text = str(value).strip() if isinstance(value, (int, str)) else ""
    return text if text.isdigit() else None


def _label(item: dict) -> str:
    return item["value"]["keypointlabels"][0]


def annotations_seen(task: dict) -> list:
    """What changes when an annotation of the task is submitted, updated or deleted: its annotations' ids and
    update times, as the request's task lists them (JSON-comparable)."""
    seen = []
    annotations = task.get("annotations")
    for item in annotations if isinstance(annotations, list) else []:
        if isinstance(item, dict):
            seen.append([str(item.get("id")), str(item.get("updated_at")), bool(item.get("was_cancelled"))])
        elif isinstance(item, (int, str)):
            seen.append([str(item), "", False])
    return sorted(seen)


class ClickMemory:
    """Per task, the latest click of each label (Label Studio context results), kept for ``ttl`` seconds.

    Args:
        root: the folder of the task files (created on the first click).
        ttl: seconds a task's clicks are kept after its last click; 0 keeps nothing (each request stands alone).
    """

    def __init__(self, root: Path, ttl: float) -> None:
        self.root = Path(root)
        self.ttl = float(ttl)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def _path(self, project_id: object, task_id: object) -> Path | None:
        project, task = _key(project_id), _key(task_id)
        return self.root / f"{project}-{task}.json" if project and task and self.enabled else None

    def recall(self, project_id: object, task: dict) -> list[dict]:
        """The task's earlier clicks (keypointlabels results, ``value.x``/``y`` in percent); [] when none are kept,
        and the kept ones are dropped when the task's annotations changed since they were made."""
        path = self._path(project_id, task.get("id"))
        if path is None:
            return []
        try:
            if time.time() - path.stat().st_mtime > self.ttl:
                return []
            kept = json.loads(path.read_text())
            clicks, seen = kept["clicks"], kept["annotations"]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("click memory %s is unreadable; the task's earlier clicks are not clamped", path)
            return []
        if seen != annotations_seen(task):
            log.info("task %s: its annotations changed since the last click (submitted, updated or deleted); its "
                     "earlier clicks are forgotten", task.get("id"))
            self._unlink(path)
            return []
        return [item for item in clicks if isinstance(item, dict)]

    def remember(self, project_id: object, task: dict, clicks: list[dict]) -> None:
        """Add the clicks of one request (a label clicked again replaces its earlier click); prune expired tasks."""
        path = self._path(project_id, task.get("id"))
        if path is None or not clicks:
            return
        with self._lock:
            kept = {_label(item): item for item in self.recall(project_id, task)}
            for item in clicks:
                kept[_label(item)] = {"type": "keypointlabels", "from_name": item.get("from_name"),
                                      "to_name": item.get("to_name"), "is_positive": True,
                                      "value": {"x": item["value"]["x"], "y": item["value"]["y"],
                                                "keypointlabels": [_label(item)]}}
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                write_atomic(path, json.dumps({"annotations": annotations_seen(task), "clicks": list(kept.values())}))
            except OSError as exc:
                log.warning("cannot keep the clicks of task %s in %s (%s): a later click will not clamp them",
                            task.get("id"), self.root, exc.strerror)
            self._prune()

    def forget(self, project_id: object, task_id: object | None = None) -> int:
        """Drop a task's clicks, or every task's of the project when ``task_id`` is None; returns how many tasks."""
        project = _key(project_id)
        if project is None or not self.root.is_dir():
            return 0
        task = _key(task_id) if task_id is not None else None
        if task_id is not None and task is None:
            return 0
        paths = [self.root / f"{project}-{task}.json"] if task else list(self.root.glob(f"{project}-*.json"))
        return sum(self._unlink(path) for path in paths)

    def _prune(self) -> None:
        now = time.time()
        for path in self.root.glob("*.json"):
            try:
                if now - path.stat().st_mtime > self.ttl:
                    self._unlink(path)
            except OSError:
                continue

    @staticmethod
    def _unlink(path: Path) -> bool:
        try:
            path.unlink()
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("cannot forget the clicks in %s (%s)", path, exc.strerror)
            return False


def forget_for_event(memory: ClickMemory, event: dict) -> int:
    """Forget what a Label Studio webhook event ends: an annotation of a task created or updated (that task), tasks
    deleted (those tasks), annotations deleted (the project's tasks: the event names no task). Returns how many."""
    action = event.get("action")
    project = event.get("project")
    project_id = project.get("id") if isinstance(project, dict) else None
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        task, annotation = event.get("task"), event.get("annotation")
        task_id = task.get("id") if isinstance(task, dict) else None
        if task_id is None and isinstance(annotation, dict):
            task_id = annotation.get("task")
        return memory.forget(project_id, task_id) if task_id is not None else 0
    if action == "TASKS_DELETED":
        tasks = event.get("tasks") if isinstance(event.get("tasks"), list) else []
        return sum(memory.forget(project_id, t.get("id")) for t in tasks if isinstance(t, dict) and "id" in t)
    if action == "ANNOTATIONS_DELETED":
        return memory.forget(project_id)
    return 0
