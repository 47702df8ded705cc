"""Pieces of the scale benchmark (``scripts/bench_scale.py``) around the product's own process supervision.

Processes are started and stopped by :mod:`stack.services` (``start_service`` / ``stop_service``, as
``scripts/start.sh`` and the end-to-end tests do); a second worker is the same service with its own pid record and
log folder (:func:`instance`). Here: the synthetic image folder (LSPET images hard-linked under many names inside
Label Studio's local-files root), the ground truth the simulated annotator finds for those names, peak memory of
process trees, and what the coordinator's database and Label Studio say after a run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import shutil
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from backend.db import Database
from backend.errors import CoordinatorError
from backend.models import Job, JobKind, TaskPrediction
from stack import labelstudio
from stack.annotator import GroundTruth
from stack.config import StackConfig
from vl4pose.data.sample import Sample

log = logging.getLogger(__name__)

MB = 1024 * 1024


class BenchError(RuntimeError):
    """The benchmark cannot go on (a service failed, Label Studio answered something unexpected)."""


# -- processes ------------------------------------------------------------------------------------
@dataclass
class Instance(StackConfig):
    """The stack's configuration for one copy of a service: its pid record in ``run/<tag>/`` and its log in
    ``logs/<tag>/``, so that :func:`stack.services.start_service` runs several workers side by side."""

    tag: str = "1"

    @property
    def run_dir(self) -> Path:
        return self.storage / "run" / self.tag

    @property
    def log_dir(self) -> Path:
        return self.storage / "logs" / self.tag


def instance(config: StackConfig, tag: str, **changes: object) -> Instance:
    """``config`` as an :class:`Instance` named ``tag``, with some fields changed (``worker_threads``, ...)."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(StackConfig)}
    values.update(changes)
    return Instance(**values, tag=tag)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``/proc/<pid>/task/<tid>/children``)."""
    out, todo = [], [pid]
    while todo:
        one = todo.pop()
        out.append(one)
        for children in Path(f"/proc/{one}/task").glob("*/children"):
            try:
                todo += [int(c) for c in children.read_text().split()]
            except OSError:
                pass
    return out


def _peak_mb(pid: int) -> float | None:
    """The kernel's high-water mark of resident memory (``VmHWM``) of one process in MB; psutil's current RSS
    where ``/proc`` has none (then sampling keeps the largest reading)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        # deferred on purpose: psutil is optional (not in the project's venv), only where /proc has no VmHWM
        import psutil

        return psutil.Process(pid).memory_info().rss / MB
    except Exception:  # psutil absent, or the process is gone
        return None


class PeakMemory:
    """Peak resident memory of watched process trees (a service and the processes it forks, e.g. gunicorn's
    workers), read every ``every`` seconds in a thread and once more before a service is stopped."""

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self.roots: dict[str, int] = {}
        self.peaks: dict[str, dict[int, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="peak-memory", daemon=True)
        self._thread.start()

    def watch(self, role: str, pid: int) -> None:
        with self._lock:
            self.roots[role] = pid
        self.sample()

    def forget(self, role: str) -> None:
        """Read a role a last time and stop watching it (before its process is stopped)."""
        self.sample()
        with self._lock:
            self.roots.pop(role, None)

    def sample(self) -> None:
        with self._lock:
            roots = dict(self.roots)
        for role, root in roots.items():
            for pid in _tree(root):
                value = _peak_mb(pid)
                if value is not None:
                    with self._lock:
                        seen = self.peaks.setdefault(role, {})
                        seen[pid] = max(seen.get(pid, 0.0), value)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def close(self) -> None:
        self._stop.set()

    def report(self) -> dict[str, dict]:
        """Per role: the largest process's peak (MB), and every process's."""
        with self._lock:
            return {role: {"peak_mb": round(max(p.values()), 1),
                           "processes": {str(k): round(v, 1) for k, v in p.items()}}
                    for role, p in self.peaks.items() if p}


# -- images and ground truth ----------------------------------------------------------------------
def link_files(pairs: list[tuple[Path, Path]]) -> str:
    """Hard-link each source to its target (a copy where the folders are on different file systems; never a
    symbolic link: the coordinator resolves links, which would lead every name back to the same original).
    Returns how the files were made."""
    how = "hard links"
    for source, target in pairs:
        if target.exists():
            continue
        try:
            os.link(source, target)
        except OSError as exc:
            if how == "hard links":
                log.warning("cannot hard-link %s into %s (%s): copying instead", source, target.parent, exc)
            shutil.copyfile(source, target)
            how = "copies (the work folder is on another file system than the data)"
    return how


def synthetic_name(index: int, count: int, suffix: str = ".jpg") -> str:
    return f"s{index:0{max(6, len(str(count - 1)))}d}{suffix}"


def synthetic_images(pool: list[Sample], folder: Path, count: int) -> str:
    """``count`` distinct file names ``s000000.jpg``... in ``folder``, image ``i`` being pool sample ``i mod len``."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = [(Path(str(pool[i % len(pool)].image)), folder / synthetic_name(i, count)) for i in range(count)]
    return link_files(pairs)


def mirror_lspet(source: Path, target: Path) -> str:
    """LSPET (annotations, split and images) as links under ``target``, inside Label Studio's files root."""
    (target / "images").mkdir(parents=True, exist_ok=True)
    pairs = [(source / name, target / name) for name in ("joints.mat", "split.json") if (source / name).is_file()]
    pairs += [(p, target / "images" / p.name) for p in sorted((source / "images").iterdir()) if p.is_file()]
    return link_files(pairs)


class SyntheticTruth(GroundTruth):
    """The simulated annotator's ground truth for the synthetic names: ``s<i>.jpg`` is pool sample ``i mod len``."""

    def __init__(self, pool: list[Sample], folder: Path) -> None:
        super().__init__([], None)
        self.pool, self.folder = pool, folder

    def find(self, url: str) -> Sample | None:
        relative = urllib.parse.parse_qs(urllib.parse.urlparse(url).query).get("d", [""])[0]
        stem = Path(relative).stem
        if not (stem.startswith("s") and stem[1:].isdigit()):
            return None
        sample = self.pool[int(stem[1:]) % len(self.pool)]
        return dataclasses.replace(sample, image=self.folder / Path(relative).name)


# -- what the run left behind ---------------------------------------------------------------------
def _owner_pid(owner: str | None) -> int | None:
    return int(owner.rsplit(":", 2)[1]) if owner and owner.count(":") >= 2 else None


def _epoch(value: dt.datetime | None) -> float | None:
    return value.replace(tzinfo=dt.UTC).timestamp() if value else None


def rank_jobs(db_url: str, project_id: int) -> list[dict]:
    """Every rank job of a project from the coordinator's database: version, seconds from its start to its end,
    tasks ranked and unreadable (added up over its shards), shards, and shards taken per worker process."""
    db = Database(db_url)
    try:
        with db.session() as session:
            jobs = session.scalars(
                select(Job).where(Job.project_id == project_id, Job.kind == JobKind.RANK).order_by(Job.id)
            ).all()
            out = []
            for job in jobs:
                shards = session.scalars(select(Job).where(Job.parent_id == job.id)).all()
                started, finished = job.payload.get("started"), _epoch(job.finished_at)
                seconds = finished - float(started) if started and finished else None
                ranked = sum(int(s.payload.get("ranked", 0)) for s in shards)
                out.append({
                    "job_id": job.id, "version": job.payload.get("version"), "state": job.state.value,
                    "initial": bool(job.payload.get("initial")), "rank_s": round(seconds, 2) if seconds else None,
                    "ranked": ranked, "unreadable": sum(int(s.payload.get("failed", 0)) for s in shards),
                    "tasks_per_s": round(ranked / seconds, 2) if seconds and ranked else None,
                    "shards": len(shards), "shard_attempts": sum(s.attempts for s in shards),
                    "shards_by_worker": dict(Counter(str(_owner_pid(s.owner)) for s in shards)),
                })
            return out
    finally:
        db.dispose()


def coordinator_predictions(db_url: str, project_id: int) -> dict:
    """``task_prediction`` rows of a project: total, largest count for one task, versions kept."""
    db = Database(db_url)
    try:
        with db.session() as session:
            where = TaskPrediction.project_id == project_id
            per_task = (select(func.count().label("n")).where(where).group_by(TaskPrediction.task_id)).subquery()
            return {
                "rows": int(session.scalar(select(func.count()).select_from(TaskPrediction).where(where)) or 0),
                "max_per_task": int(session.scalar(select(func.max(per_task.c.n))) or 0),
                "versions": sorted(session.scalars(select(TaskPrediction.model_version).where(where).distinct())),
            }
    finally:
        db.dispose()


def label_studio_predictions(url: str, token: str, project: int, page_size: int = 1000,
                             exact_up_to: int = 20_000) -> dict:
    """Label Studio's predictions of a project: per model version (one request), per task from the tasks' own
    counter (every task read in pages with only ``id`` and ``total_predictions``), and, up to ``exact_up_to``
    predictions, counted per task from the predictions themselves (``exact_max_per_task``; None above).
    Through the stack's Label Studio functions (:mod:`stack.labelstudio`); their errors become BenchError."""
    client = labelstudio.connect(url, token, timeout=300.0)
    try:
        by_version = client.model_versions(project)
        counts = labelstudio.prediction_counts(client, project, page_size)
        exact = None
        if sum(by_version.values()) <= exact_up_to:
            listed = labelstudio.predictions(client, project)
            exact = max(Counter(int(p["task"]) for p in listed).values(), default=0)
    except (CoordinatorError, ValueError, TypeError) as exc:
        raise BenchError(f"counting Label Studio's predictions of project {project}: {exc}") from None
    finally:
        client.close()
    return {"predictions": sum(by_version.values()), "by_version": by_version, "tasks": len(counts),
            "max_per_task": max(counts, default=0), "sum_per_task": sum(counts), "exact_max_per_task": exact}


def files_mb(folder: Path, pattern: str) -> float:
    """Size of the files matching ``pattern`` in ``folder`` (a SQLite database with its -wal and -shm), MB."""
    return round(sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file()) / MB, 2)
