"""Large projects stay bounded (unit tests: a fake Label Studio adapter and a fake predictor, the real job runner,
ranking, shards, pruning and reconcile on SQLite, huey immediate or memory).

- 20,000 fake tasks are ranked three times in shards: every shard at most ``rank_shard_size`` tasks, every task
  predicted and imported exactly once per version, Label Studio and ``task_prediction`` keep two versions after
  three rankings, and the peak resident memory of a process ranking 20,000 tasks is about that of 2,000.
- A shard whose worker died (its owner a process that is gone) is re-queued through the database and finished.
- Incremental reconcile reads only changed tasks, page by page; a full one also finds bulk deletions.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from coord_fakes import FakeLabelStudio
from sqlalchemy import func, select

from backend.models import Job, JobKind, JobState, ModelVersion, Project, TaskPrediction

log = logging.getLogger(__name__)
LABELS = ["Right ankle", "Right knee", "Right hip", "Left hip", "Left knee", "Left ankle", "Right wrist",
          "Right elbow", "Right shoulder", "Left shoulder", "Left elbow", "Left wrist", "Neck", "Head top"]


class BigFakeLabelStudio(FakeLabelStudio):
    """Many tasks, stored compactly; imported predictions kept as counts per version and task (a bytearray), so the
    fake's own memory does not grow with what is imported."""

    def __init__(self, size: int) -> None:
        super().__init__(None)
        self.size = size
        self.first = 1000
        self.per_version: dict[str, bytearray] = {}
        self.imports: list[int] = []

    def add_project(self) -> int:
        return self.create_project("big", "<View/>")

    def task_page(self, project_id: int, page: int, page_size: int) -> tuple[list[dict], int]:
        self._check("task_page")
        start = self.first + (page - 1) * page_size
        stop = min(self.first + self.size, start + page_size)
        return [
            {"id": t, "data": {"image": f"/data/upload/1/{t}.jpg"}, "total_annotations": 0, "cancelled_annotations": 0}
            for t in range(start, stop)
        ], self.size

    def import_predictions(self, project_id: int, predictions: list[dict]) -> int:
        self._check("import_predictions")
        self.imports.append(len(predictions))
        for p in predictions:
            seen = self.per_version.setdefault(p["model_version"], bytearray(self.size))
            seen[p["task"] - self.first] += 1
        return len(predictions)

    def model_versions(self, project_id: int) -> dict[str, int]:
        self._check("model_versions")
        return {v: sum(1 for c in counts if c) for v, counts in self.per_version.items()}

    def delete_predictions(self, project_id: int, model_version: str, timeout: float | None = None) -> int:
        self._check("delete_predictions")
        counts = self.per_version.pop(model_version, bytearray())
        return sum(counts)

    def update_project(self, project_id: int, **fields) -> None:
        self._check("update_project")
        self.projects[project_id].update(fields)


class FakePredictor:
    """Cheap deterministic predictions shaped like ``vl4pose.predictor`` results."""

    def predict_batch(self, files):
        out = []
        for f in files:
            task = int(Path(f).stem)
            score = ((task * 7919) % 10007) / 10007
            out.append(SimpleNamespace(score=score, log_likelihood=math.log(score + 1e-6), image_size=(640, 480),
                                       refined=np.full((14, 2), 100.0), placed=[True] * 14, confidence=[0.5] * 14))
        return out


def build(root: Path, size: int, checkpoint: Path, **settings):
    """(services, fake, project id): a linked project of ``size`` fake tasks under ``root``, versions v0-v2
    published (``checkpoint``), predictions from :class:`FakePredictor`, images never read. Replaces
    ``rank_shards.load_predictor`` (tests in this process restore it with monkeypatch)."""
    import backend.services.rank_shards as shards
    from backend import create_app
    from coord_fakes import base_config

    shards.load_predictor = lambda path, settings: FakePredictor()
    fake = BigFakeLabelStudio(size)
    config = base_config(root, rank_batch_size=50, import_chunk=250, **settings)
    app = create_app(config, ls_factory=lambda: fake)
    services = app.extensions["vl4pose"]
    services.images.get_many = lambda urls, workers=4: [Path(u.rsplit("/", 1)[1]) for u in urls]
    ls_id = fake.add_project()
    with services.db.session() as session:
        project = Project(ls_project_id=ls_id, title="big", skeleton="lsp14", round_budget=10,
                          label_config={"from_name": "kp", "to_name": "image", "image_key": "image",
                                        "labels": LABELS})
        session.add(project)
        session.flush()
        for n in range(3):
            version = f"p{ls_id}-v{n}"
            services.registry().publish(checkpoint, version)
            session.add(ModelVersion(project_id=project.id, version=version, folder=version))
        project_id = project.id
    return services, fake, project_id


def _rank(services, project_id: int, version: str) -> int:
    return services.jobs.submit(JobKind.RANK, project_id, None, {"version": version, "initial": True})


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def drive(root: str, size: int, shard: int, checkpoint: str) -> None:
    """In a fresh process (``python -c``): rank ``size`` fake tasks three times; prints one JSON line with the
    resident memory before, the peak (VmHWM) after, seconds per ranking and what the fake Label Studio holds."""
    import json

    services, fake, project_id = build(Path(root), size, Path(checkpoint), rank_shard_size=shard)
    ls_id = next(iter(fake.projects))
    before = _rss_mb("VmRSS")
    seconds = []
    for n in range(3):
        started = time.perf_counter()
        _rank(services, project_id, f"p{ls_id}-v{n}")
        seconds.append(round(time.perf_counter() - started, 2))
    services.close()
    summary = {
        "size": size,
        "shard": shard,
        "rss_before_mb": round(before, 1),
        "peak_mb": round(_rss_mb("VmHWM"), 1),
        "seconds": seconds,
        "imports_max": max(fake.imports),
        "ls_versions": {v: [sum(c), min(c), max(c)] for v, c in fake.per_version.items()},
        "model_version": fake.projects[ls_id]["model_version"],
    }
    sys.stdout.write(json.dumps(summary) + "\n")


def _run_drive(tmp_path: Path, size: int, shard: int, checkpoint: Path) -> dict:
    import json
    import subprocess

    here = Path(__file__).resolve().parent
    code = f"import test_coord_scale as t; t.drive({str(tmp_path / str(size))!r}, {size}, {shard}, {str(checkpoint)!r})"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VL4POSE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(here), str(here.parents[1])])
    done = subprocess.run([sys.executable, "-c", code], cwd=here, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_twenty_thousand_tasks_rank_in_bounded_shards_and_only_two_versions_are_kept(tmp_path, tiny_checkpoint):
    """Each size in a fresh process: the peak resident memory of ranking 20,000 tasks three times is about that of
    2,000 (a page, a shard's rows and an import chunk at a time), never the project's size."""
    from backend.db import Database

    size, shard = 20_000, 1_000
    small = _run_drive(tmp_path, 2_000, shard, tiny_checkpoint.path)
    large = _run_drive(tmp_path, size, shard, tiny_checkpoint.path)
    db = Database(f"sqlite:///{tmp_path / str(size) / 'coordinator.sqlite'}")
    try:
        with db.session() as session:
            ranks = session.scalars(select(Job).where(Job.kind == JobKind.RANK).order_by(Job.id)).all()
            assert [r.state for r in ranks] == [JobState.DONE] * 3, [r.error for r in ranks]
            shards = session.scalars(
                select(Job).where(Job.kind == JobKind.RANK_SHARD, Job.parent_id == ranks[-1].id)
            ).all()
            assert len(shards) == size // shard
            assert all(s.state == JobState.DONE and s.attempts == 1 for s in shards)
            assert sorted(s.payload["index"] for s in shards) == list(range(size // shard))
            assert all(s.payload["ranked"] == shard and "tasks" not in s.payload for s in shards)
            kept = dict(
                session.execute(
                    select(TaskPrediction.model_version, func.count()).group_by(TaskPrediction.model_version)
                ).all()
            )
            pruned = ranks[-1].payload["pruned"]
    finally:
        db.dispose()
    assert kept == {"p1-v1": size, "p1-v2": size}  # the current and the previous version
    assert pruned == {"coordinator": size, "label_studio": size, "versions": 1}
    assert large["ls_versions"] == {"p1-v1": [size, 1, 1], "p1-v2": [size, 1, 1]}  # every task once per version
    assert large["imports_max"] <= 250 and large["model_version"] == "p1-v2"
    grow_small = small["peak_mb"] - small["rss_before_mb"]
    grow_large = large["peak_mb"] - large["rss_before_mb"]
    log.info("ranking x3: 2,000 tasks %s (+%.1f MB peak), 20,000 tasks in %d shards %s (+%.1f MB peak)",
             small, grow_small, size // shard, large, grow_large)
    assert grow_large < grow_small * 1.5 + 25, (small, large)  # ten times the tasks, about the same memory


def test_a_shard_left_by_a_dead_worker_is_taken_again_through_the_database(tmp_path, tiny_checkpoint, monkeypatch):
    import backend.services.rank_shards as shards

    monkeypatch.setattr(shards, "load_predictor", shards.load_predictor)  # restored after build() replaces it
    services, fake, project_id = build(tmp_path, 40, tiny_checkpoint.path, rank_shard_size=10, queue="memory")
    ls_id = next(iter(fake.projects))
    rank_id = _rank(services, project_id, f"p{ls_id}-v0")  # memory queue: nothing runs by itself
    with services.db.session() as session:
        session.get(Job, rank_id).payload = {"version": f"p{ls_id}-v0", "initial": True}
    from backend.jobs.rank import RankHandler

    handler = services.jobs.handlers[JobKind.RANK]
    assert isinstance(handler, RankHandler)
    # list the shards without running them: a worker "claims" the second one and dies
    original = services.jobs.run
    services.jobs.run = lambda job_id: None if job_id != rank_id else original(job_id)
    try:
        original(rank_id)
    except Exception:
        pass
    services.jobs.run = original
    with services.db.session() as session:
        shards = session.scalars(select(Job).where(Job.parent_id == rank_id).order_by(Job.id)).all()
        assert len(shards) == 4 and {s.state for s in shards} == {JobState.QUEUED}
        shards[1].state, shards[1].owner, shards[1].attempts = JobState.RUNNING, "gone-host:1:dead", 1
        import datetime as dt

        shards[1].heartbeat_at = dt.datetime(2020, 1, 1)  # silent for years: stale on any host
        dead = shards[1].id
    original(rank_id)  # the ranking runs again: takes the free shards, re-queues and finishes the dead one
    with services.db.session() as session:
        rank = session.get(Job, rank_id)
        taken = session.get(Job, dead)
        assert rank.state == JobState.DONE, rank.error
        assert taken.state == JobState.DONE and taken.attempts == 2
    assert set(fake.per_version[f"p{ls_id}-v0"]) == {1}  # nothing lost, nothing twice


def test_the_image_cache_keeps_to_its_size_limit_and_evicts_the_least_recently_used(tmp_path, lspet_dir):
    from coord_fakes import SHARED_DATA

    from backend.services.images import ImageStore

    fake = FakeLabelStudio(SHARED_DATA)
    limit = 300 * 1024
    store = ImageStore(tmp_path / "cache", None, lambda: fake, 10**7, max_cache_bytes=limit)
    urls = [f"/data/local-files/?d=lspet/images/im{n:05d}.jpg" for n in range(1, 41)]
    favourite = store.get(urls[0])
    for url in urls[1:]:
        os.utime(favourite, (time.time() + 1, time.time() + 1))  # used again (what a cache hit does), after each
        path = store.get(url)
        size = sum(p.stat().st_size for p in (tmp_path / "cache").rglob("*") if p.is_file())
        assert size <= limit and path.is_file()
    assert favourite.is_file()  # recently used: kept
    assert not store.cache_path(urls[1]).is_file()  # the least recently used went first
    assert store.get(urls[0]) == favourite and fake.calls.count("fetch") == len(urls)
