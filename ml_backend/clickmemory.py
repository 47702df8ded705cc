"""The clicks an annotator made on a task so far, so that a later click's re-solve keeps the earlier ones in place.

Label Studio 1.23.2 sends an interactive ``/predict`` only the new click and the draft's regions of the clicked
label (:mod:`ml_backend.suggestions`), and accepting a click's suggestions deletes the click's own (dynamic)
region: no later request tells where the annotator clicked before. Without this memory the second click's
re-solve clamped only the second click and re-suggested the first clicked label at a re-solved place, under
the draft's id: accepting all moved the first click.

One small JSON file per project and task under ``root`` (every gunicorn worker of the backend sees it, and a
restart keeps it): the latest click of each label, in Label Studio's percentages, where the last answer and the
ones before it put each label, which clicks an accepted answer settled (:func:`answer_accepted`), and the task's
annotations as the request showed them. It is forgotten when the task's annotations change (a later request's task holds an
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
from dataclasses import dataclass, field
from pathlib import Path

from ml_backend.interactive import click_label
from vl4pose.atomic import write_atomic

log = logging.getLogger(__name__)

SAME_PLACE = 1e-3
"""Percent within which two places are the same (a draft region "where the last answer put it")."""


def _key(value: object) -> str | None:
    """A project or task id as a file-name part (digits only), None for anything else."""
    if isinstance(value, bool):
        return None
    text = str(value).strip() if isinstance(value, (int, str)) else ""
    return text if text.isdigit() else None


def _is_place(xy: object) -> bool:
    return (isinstance(xy, list) and len(xy) == 2
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in xy))


def _same(a: list[float], b: list[float]) -> bool:
    return abs(a[0] - b[0]) <= SAME_PLACE and abs(a[1] - b[1]) <= SAME_PLACE


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


@dataclass
class Kept:
    """A task's earlier clicks (keypointlabels results, ``value.x``/``y`` in percent), where the last answer put
    each label (label -> [x, y] percent), where the answers before it put each label (label -> list of [x, y]), and
    the clicked labels known to be in the annotation (an answer suggesting them at their click was accepted since).
    """

    clicks: list[dict] = field(default_factory=list)
    suggested: dict[str, list[float]] = field(default_factory=dict)
    settled: list[str] = field(default_factory=list)
    before: dict[str, list[list[float]]] = field(default_factory=dict)


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

    def recall(self, project_id: object, task: dict) -> Kept:
        """The task's earlier clicks and last answer; nothing when none are kept, and the kept ones are dropped when
        the task's annotations changed since they were made."""
        path = self._path(project_id, task.get("id"))
        if path is None:
            return Kept()
        try:
            if time.time() - path.stat().st_mtime > self.ttl:
                return Kept()
            kept = json.loads(path.read_text())
            clicks, seen, suggested = kept["clicks"], kept["annotations"], kept.get("suggested") or {}
            settled, before = kept.get("settled") or [], kept.get("before") or {}
            if not all(isinstance(v, t) for v, t in ((clicks, list), (suggested, dict), (settled, list), (before, dict))):
                raise TypeError("clicks, suggested, settled or before")
        except FileNotFoundError:
            return Kept()
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("click memory %s is unreadable; the task's earlier clicks are not clamped", path)
            return Kept()
        if seen != annotations_seen(task):
            log.info("task %s: its annotations changed since the last click (submitted, updated or deleted); its "
                     "earlier clicks are forgotten", task.get("id"))
            self._unlink(path)
            return Kept()
        places = {str(label): xy for label, xy in suggested.items() if _is_place(xy)}
        earlier = {str(label): [xy for xy in xys if _is_place(xy)] for label, xys in before.items()
                   if isinstance(xys, list)}
        return Kept([item for item in clicks if isinstance(item, dict)], places, [str(label) for label in settled],
                    earlier)

    def remember(self, project_id: object, task: dict, clicks: list[dict], suggested: dict[str, list[float]],
                 settled: list[str]) -> None:
        """Add the clicks of one request (a label clicked again replaces its earlier click), where its answer put
        each label and the clicked labels settled in the annotation; prune expired tasks."""
        path = self._path(project_id, task.get("id"))
        if path is None or not clicks:
            return
        with self._lock:
            previous = self.recall(project_id, task)
            kept = {click_label(item): item for item in previous.clicks}
            for item in clicks:
                kept[click_label(item)] = {"type": "keypointlabels", "from_name": item.get("from_name"),
                                      "to_name": item.get("to_name"), "is_positive": True,
                                      "value": {"x": item["value"]["x"], "y": item["value"]["y"],
                                                "keypointlabels": [click_label(item)]}}
            before = {label: list(xys) for label, xys in previous.before.items()}
            for label, xy in previous.suggested.items():
                if not any(_same(xy, other) for other in before.get(label, [])):
                    before.setdefault(label, []).append(xy)
            state = {"annotations": annotations_seen(task), "clicks": list(kept.values()), "suggested": suggested,
                     "settled": sorted(set(settled) - {click_label(item) for item in clicks}), "before": before}
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                write_atomic(path, json.dumps(state))
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


def answer_accepted(kept: Kept, existing: list[dict], served: dict[str, list[float]]) -> bool:
    """Whether the annotation took the task's last answer, on positive evidence only: a draft region of the clicked
    label lies where that answer put the label, and no other place the label had (the served pose, the answers
    before) is that place. When the answer left the label where it already could be, nothing tells: not accepted
    (the caller then suggests the unsettled clicks at their place, which an accepted answer had done already).

    Args:
        kept: the task's memory before this request.
        existing: the context's other regions of the clicked labels (the draft's).
        served: label -> [x, y] percent in the prediction the draft was copied from.
    """
    for item in existing:
        label = click_label(item)
        last = kept.suggested.get(label)
        if last is None:
            continue
        others = kept.before.get(label, []) + ([served[label]] if label in served else [])
        if any(_same(last, other) for other in others):
            continue
        if _same([item["value"]["x"], item["value"]["y"]], last):
            return True
    return False
