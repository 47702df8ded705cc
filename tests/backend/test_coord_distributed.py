"""Integration: the distributed engine for real. A real Redis (huey's broker) and a real PostgreSQL (the
coordinator's database, migrated with Alembic), the web process under gunicorn and TWO workers
(``python -m backend worker``), all separate processes sharing the broker, the database and the models folder,
against the session's real Label Studio with LSPET images.

A whole round: link through the web API -> the initial ranking in shards (both workers take shards) -> two
annotations in Label Studio -> webhooks -> the round closes -> training -> the next ranking, during which one
worker is SIGKILLed in the middle of a shard: huey does not redeliver its message; the other worker re-takes the
shard through the database claim. Nothing is lost, no job runs twice, every task has one prediction per version.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from coord_fakes import REPO, TOKEN, base_config, gt_results, sample_for_url
from sqlalchemy import func, select
from waiting import wait_for

from backend.models import Job, JobKind, JobState, Project, Round, RoundState, TaskPrediction

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)


@pytest.fixture
def redis_server():
    from real_services import Missing, RedisServer

    pytest.importorskip("redis", reason='the redis client is not installed: pip install -e ".[distributed]"')
    try:
        server = RedisServer().start()
    except Missing as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
def postgres_server():
    from real_services import Missing, PostgresServer

    pytest.importorskip("psycopg", reason='the psycopg driver is not installed: pip install -e ".[distributed]"')
    try:
        server = PostgresServer().start()
    except Missing as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


def _start(command: list[str], env: dict, log_path: Path, tag: str) -> subprocess.Popen:
    handle = open(log_path, "ab")
    handle.write(f"\n===== {tag} =====\n".encode())
    handle.flush()
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _peak_rss_mb(pid: int) -> float:
    """The largest VmHWM (peak resident memory) of a process and its children (gunicorn's workers), in MB."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    pids = [pid] + ([int(p) for p in children.read_text().split()] if children.exists() else [])
    peak = 0.0
    for one in pids:
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
    return peak


def _pid(owner: str | None) -> int | None:
    return int(owner.rsplit(":", 2)[1]) if owner and owner.count(":") >= 2 else None


def test_a_round_on_redis_and_postgresql_with_two_workers_and_one_killed_mid_shard(
    redis_server, postgres_server, label_studio, tmp_path, tiny_checkpoint, lspet_dir, lspet_pool
):
    from backend.config import PREFIX, Settings
    from backend.db import Database, current_revision, head_revision
    from real_services import free_port

    port = free_port()
    web_url = f"http://127.0.0.1:{port}"
    config = base_config(
        tmp_path,
        queue=redis_server.url,
        database_url=postgres_server.url,
        label_studio_url=label_studio.url,
        label_studio_token=label_studio.token,
        public_url=web_url,
        round_budget=2,
        rank_shard_size=2,
        rank_batch_size=1,
        rank_poll_s=0.5,
        import_chunk=2,
        job_stale_s=60.0,
        reconcile_minutes=59,
        torch_threads=1,
        auto_migrate=False,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    env.update({PREFIX + k.upper(): str(v) for k, v in config.items()})
    logs = tmp_path / "processes.log"

    # the Alembic migrations on PostgreSQL, as an operator runs them before starting the processes
    migrate = subprocess.run([sys.executable, "-m", "backend", "db", "upgrade"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    db = Database(postgres_server.url)
    assert current_revision(db.engine) == head_revision()

    processes: dict[str, subprocess.Popen] = {}
    try:
        processes["web"] = _start(
            [sys.executable, "-m", "gunicorn", "--workers", "2", "--worker-class", "gthread", "--threads", "4",
             "--bind", f"127.0.0.1:{port}", "backend:create_app()"], env, logs, "web")
        for name in ("A", "B"):
            processes[name] = _start([sys.executable, "-m", "backend", "worker", "--threads", "1"], env, logs, name)
        wait_for(lambda: _get(f"{web_url}/api/health"), 60, "the web process", every=0.3)

        response = requests.post(
            f"{web_url}/api/projects",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=180,
            json={"title": f"coord-dist-{uuid.uuid4().hex[:6]}", "dataset": "lspet", "data": str(lspet_dir),
                  "split": "pool", "limit": 14, "labels": "ignore", "round_budget": 2, "strategy": "vl4pose",
                  "init_checkpoint": str(tiny_checkpoint.path)},  # per-task: each shard imports its own predictions
        )
        assert response.status_code == 201, response.text
        linked = response.json()
        v0, v1 = linked["initial_version"], f"p{linked['ls_project_id']}-v1"

        def jobs(kind: JobKind) -> list[Job]:
            with db.session() as session:
                return session.scalars(select(Job).where(Job.kind == kind).order_by(Job.id)).all()

        def rank_done(version: str) -> Job | None:
            done = [j for j in jobs(JobKind.RANK) if j.payload.get("version") == version and j.state == JobState.DONE]
            failed = [j for j in jobs(JobKind.RANK) + jobs(JobKind.TRAIN) if j.state == JobState.FAILED]
            assert not failed, [(j.kind, j.error) for j in failed]
            return done[0] if done else None

        first = wait_for(lambda: rank_done(v0), 300, "the initial ranking by two workers", every=0.3)
        workers = {processes["A"].pid: "A", processes["B"].pid: "B"}
        shards = [j for j in jobs(JobKind.RANK_SHARD) if j.parent_id == first.id]
        assert len(shards) == 7 and all(s.state == JobState.DONE and s.attempts == 1 for s in shards)
        takers = {_pid(s.owner) for s in shards}
        assert takers == set(workers), f"both workers take shards: {takers} vs {workers}"

        # two annotations in Label Studio: webhooks -> web -> Redis -> a worker; the round closes and trains
        from label_studio_sdk import LabelStudio

        sdk = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
        with db.session() as session:
            project = session.scalar(select(Project))
            selected = session.scalar(select(Round)).selected_tasks
        for task_id in selected[:2]:
            image = sdk.tasks.get(id=task_id).data["image"]
            sdk.annotations.create(id=task_id, result=gt_results(sample_for_url(lspet_pool, image),
                                                                 project.label_config))

        def running_shard() -> Job | None:
            ranks = [j for j in jobs(JobKind.RANK) if j.payload.get("version") == v1]
            if not ranks:
                return None
            for shard in jobs(JobKind.RANK_SHARD):
                if (shard.parent_id == ranks[0].id and shard.state == JobState.RUNNING
                        and shard.stage.startswith("scoring") and 0 < shard.progress < 0.9):
                    return shard
            return None

        victim = wait_for(running_shard, 600, "a shard of the new version in the middle of scoring", every=0.02)
        killed = _pid(victim.owner)
        os.killpg(killed, signal.SIGKILL)
        processes[workers[killed]].wait(10)
        survivor = next(pid for pid in workers if pid != killed)

        second = wait_for(lambda: rank_done(v1), 600, "the ranking finished by the surviving worker", every=0.3)
        shards = [j for j in jobs(JobKind.RANK_SHARD) if j.parent_id == second.id]
        retaken = next(s for s in shards if s.id == victim.id)
        assert retaken.state == JobState.DONE and retaken.attempts == 2 and _pid(retaken.owner) == survivor
        assert all(s.state == JobState.DONE and s.attempts == 1 for s in shards if s.id != victim.id)
        assert [j.attempts for j in jobs(JobKind.TRAIN)] == [1]  # no job ran twice
        with db.session() as session:
            rounds = session.scalars(select(Round).order_by(Round.number)).all()
            assert [r.state for r in rounds] == [RoundState.DONE, RoundState.OPEN] and rounds[1].model_version == v1
            per_task = session.execute(
                select(TaskPrediction.task_id, func.count())
                .where(TaskPrediction.model_version == v1)
                .group_by(TaskPrediction.task_id)
            ).all()
        assert len(per_task) == 12 and {c for _, c in per_task} == {1}
        ls = requests.Session()
        ls.headers.update(label_studio.headers)
        pid = linked["ls_project_id"]
        for task_id, _ in per_task:  # nothing lost, nothing twice in Label Studio
            predictions = ls.get(f"{label_studio.url}/api/predictions/", params={"task": task_id}).json()
            assert [p["model_version"] for p in predictions].count(v1) == 1, predictions
        assert ls.get(f"{label_studio.url}/api/projects/{pid}/").json()["model_version"] == v1
        peaks = {name: _peak_rss_mb(p.pid) for name, p in processes.items() if p.poll() is None}
        log.info("two workers on Redis + PostgreSQL: %d + %d shards, shard %d retaken by %d after SIGKILL of %d; "
                 "peak RSS (MB): %s", len([s for s in jobs(JobKind.RANK_SHARD) if s.parent_id == first.id]),
                 len(shards), victim.id, survivor, killed, {k: round(v) for k, v in peaks.items()})
    finally:
        for process in processes.values():
            _stop(process)
        db.dispose()
        if logs.is_file():
            log.info("process logs: %s", logs)


def _get(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_the_migrations_on_postgresql_give_the_models_schema_both_ways(postgres_server):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from backend.db import Database, current_revision, downgrade, head_revision
    from backend.models import Base

    db = Database(postgres_server.url)
    try:
        db.upgrade()
        assert current_revision(db.engine) == head_revision()
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        downgrade(db.engine, "0001")
        assert current_revision(db.engine) == "0001"
        db.upgrade()
        assert current_revision(db.engine) == head_revision()
    finally:
        db.dispose()
