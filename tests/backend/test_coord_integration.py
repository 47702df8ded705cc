"""Integration: the coordinator against a real Label Studio 1.23.2 on 127.0.0.1 (the session's ``label_studio``),
with the coordinator's web app served on a real port, and real worker processes."""

from __future__ import annotations

import threading
import uuid

import pytest
import requests
from coord_fakes import SECRET, SHARED_DATA, TOKEN, base_config, gt_results, sample_for_url
from flask import Flask, jsonify, request
from sqlalchemy import select
from waiting import wait_for
from werkzeug.serving import make_server

from backend.models import AnnotationRecord, Job, JobState, Project, Round, RoundState, WebhookEvent

pytestmark = pytest.mark.integration


class Served:
    """A WSGI app on a free port of 127.0.0.1, in a thread."""

    def __init__(self, app) -> None:
        self.http = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.http.port}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.http.shutdown()
        self.thread.join(5)


@pytest.fixture
def ml_stub():
    """A minimal ML backend: answers /health and /setup like ours, records what Label Studio sent."""
    app, seen = Flask("ml_stub"), []

    @app.get("/health")
    def health():
        return jsonify({"status": "UP", "model_class": "stub"})

    @app.post("/setup")
    def setup():
        seen.append(("setup", request.get_json(silent=True) or {}))
        return jsonify({"model_version": "stub"})

    @app.post("/predict")
    def predict():
        return jsonify({"results": []})

    @app.post("/webhook")
    def webhook():
        return jsonify({})

    served = Served(app)
    served.seen = seen
    yield served
    served.stop()


def _run_queued_jobs(services) -> list[int]:
    """Play the worker: run every queued job (and the follow-ups they queue) in this process."""
    ran = []
    while True:
        with services.db.session() as session:
            job_id = session.scalar(select(Job.id).where(Job.state == JobState.QUEUED).order_by(Job.id).limit(1))
        if job_id is None:
            return ran
        services.jobs.run(job_id)
        ran.append(job_id)


def test_link_webhooks_reconcile_and_one_round_through_a_real_label_studio(
    label_studio, tmp_path, tiny_checkpoint, lspet_dir, lspet_pool, ml_stub
):
    from backend import create_app

    placeholder = Served(Flask("placeholder"))  # reserve a port for the coordinator
    port_url = placeholder.url
    placeholder.stop()
    config = base_config(
        tmp_path,
        queue="memory",
        label_studio_url=label_studio.url,
        label_studio_token=label_studio.token,
        public_url=port_url,
        ml_backend_url=ml_stub.url,
        round_budget=2,
    )
    app = create_app(config)
    services = app.extensions["vl4pose"]
    host, port = port_url.rsplit(":", 1)
    coordinator = make_server("127.0.0.1", int(port), app, threaded=True)
    thread = threading.Thread(target=coordinator.serve_forever, daemon=True)
    thread.start()
    api = {"Authorization": f"Bearer {TOKEN}"}
    ls = requests.Session()
    ls.headers.update(label_studio.headers)
    try:
        title = f"coord-it-{uuid.uuid4().hex[:6]}"
        response = requests.post(
            f"{port_url}/api/projects",
            headers=api,
            timeout=120,
            json={
                "title": title,
                "dataset": "lspet",
                "data": str(lspet_dir),
                "split": "pool",
                "limit": 6,
                "labels": "ignore",
                "holdout_dataset": "lspet",
                "holdout_data": str(lspet_dir),
                "holdout_split": "val",
                "holdout_limit": 2,
                "init_checkpoint": str(tiny_checkpoint.path),
                "round_budget": 2,
            },
        )
        assert response.status_code == 201, response.text
        linked = response.json()
        pid, v0 = linked["ls_project_id"], linked["initial_version"]
        assert linked["tasks_imported"] == 6 and linked["image_source"] == "local-files" and linked["warnings"] == []

        project = ls.get(f"{label_studio.url}/api/projects/{pid}/").json()
        assert project["title"] == title and "KeyPointLabels" in project["label_config"]
        assert project["sampling"] == "Uncertainty sampling"
        hooks = ls.get(f"{label_studio.url}/api/webhooks/", params={"project": pid}).json()
        [hook] = [h for h in hooks if h["url"] == f"{port_url}/hooks/label-studio"]  # (the other: the ML backend's)
        assert hook["headers"] == {"X-VL4Pose-Secret": SECRET} and hook["project"] == pid
        assert set(hook["actions"]) == {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"}
        [backend] = ls.get(f"{label_studio.url}/api/ml/", params={"project": pid}).json()
        assert backend["url"] == ml_stub.url and backend["title"] == v0 and backend["is_interactive"] is True
        tasks = ls.get(f"{label_studio.url}/api/tasks/", params={"project": pid, "page_size": 100}).json()["tasks"]
        assert len(tasks) == 6 and all(
            t["data"]["image"].startswith("/data/local-files/?d=lspet/images/") for t in tasks
        )
        image = ls.get(label_studio.url + tasks[0]["data"]["image"])
        assert (
            image.status_code == 200
            and image.content == (SHARED_DATA / tasks[0]["data"]["image"].split("?d=")[1]).read_bytes()
        )

        url = tasks[0]["data"]["image"]  # the adapter downloads task images with the token
        assert services.ls().fetch(url, 10**7) == (SHARED_DATA / url.split("?d=")[1]).read_bytes()

        assert len(_run_queued_jobs(services)) == 2  # rank with v0, evaluate v0
        project = ls.get(f"{label_studio.url}/api/projects/{pid}/").json()
        assert project["model_version"] == v0
        scores = {}
        for task in tasks:
            [prediction] = ls.get(f"{label_studio.url}/api/predictions/", params={"task": task["id"]}).json()
            assert prediction["model_version"] == v0 and prediction["result"]
            scores[task["id"]] = prediction["score"]
        first = ls.get(f"{label_studio.url}/api/projects/{pid}/next/").json()
        assert first["id"] == min(scores, key=scores.get)

        # the annotator accepts the suggestion of the first task: Label Studio delivers our webhook
        [prediction] = ls.get(f"{label_studio.url}/api/predictions/", params={"task": first["id"]}).json()
        created = ls.post(
            f"{label_studio.url}/api/tasks/{first['id']}/annotations/",
            json={"result": prediction["result"], "parent_prediction": prediction["id"]},
        )
        assert created.status_code == 201, created.text

        def stored_event():
            with services.db.session() as session:
                return session.scalar(select(WebhookEvent))

        event = wait_for(stored_event, 10, "the webhook from Label Studio", every=0.2)
        assert event.action == "ANNOTATION_CREATED" and event.body["annotation"]["id"] == created.json()["id"]
        from backend.services.events import process_pending

        assert process_pending(services.db, services.jobs) == 1
        with services.db.session() as session:
            record = session.scalar(select(AnnotationRecord))
            assert record.source == "webhook" and record.accepted is True and record.served_model_version == v0

        # the coordinator is unreachable for the second annotation: reconcile finds it and closes the round
        ls.patch(
            f"{label_studio.url}/api/webhooks/{hook['id']}/", json={"url": "http://127.0.0.1:9/hooks/label-studio"}
        )
        second = sorted(scores, key=scores.get)[1]
        sample = sample_for_url(lspet_pool, next(t for t in tasks if t["id"] == second)["data"]["image"])
        with services.db.session() as session:
            label_config = session.scalar(select(Project)).label_config
        from label_studio_sdk import LabelStudio

        sdk = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
        sdk.annotations.create(id=second, result=gt_results(sample, label_config))
        summary = requests.post(f"{port_url}/api/projects/{linked['project_id']}/reconcile", headers=api, timeout=60)
        assert summary.status_code == 202 and summary.json()["state"] == "queued", summary.text  # answered at once
        assert _run_queued_jobs(services)  # reconcile -> train -> rank
        with services.db.session() as session:
            job = session.get(Job, summary.json()["job_id"])
            assert job.state == JobState.DONE and job.payload["result"]["changed"] == 1, job.payload
        v1 = f"p{pid}-v1"
        with services.db.session() as session:
            rounds = session.scalars(select(Round).order_by(Round.number)).all()
            assert [r.state for r in rounds] == [RoundState.DONE, RoundState.OPEN]
            assert rounds[0].labelled_count == 2 and rounds[0].accepted_count == 1 and rounds[1].model_version == v1
        project = ls.get(f"{label_studio.url}/api/projects/{pid}/").json()
        assert project["model_version"] == v1
        rest = [t for t in scores if t not in (first["id"], second)]
        new_scores = {}
        for task_id in rest:
            predictions = ls.get(f"{label_studio.url}/api/predictions/", params={"task": task_id}).json()
            [mine] = [p for p in predictions if p["model_version"] == v1]
            new_scores[task_id] = mine["score"]
        assert ls.get(f"{label_studio.url}/api/projects/{pid}/next/").json()["id"] == min(
            new_scores, key=new_scores.get
        )
        assert services.registry().current() == v1
    finally:
        coordinator.shutdown()
        thread.join(5)
        services.close()


def _worker(env: dict, log_path, tag: str):
    import subprocess
    import sys

    from coord_fakes import REPO

    log = open(log_path, "ab")
    log.write(f"\n===== worker {tag} =====\n".encode())
    log.flush()
    return subprocess.Popen(
        [sys.executable, "-m", "backend", "worker", "--threads", "2"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(process) -> None:
    import os
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except Exception:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def test_a_worker_killed_mid_training_is_replaced_and_the_job_publishes_one_version(
    label_studio, tmp_path, tiny_checkpoint, lspet_dir, lspet_pool
):
    """Real worker processes on the SQLite queue: SIGKILL the worker while it trains; a new worker re-queues
    the job, the Trainer resumes from its state, and exactly one new version is published and ranked."""
    import os
    import signal

    from backend.config import PREFIX, Settings
    from backend.models import ModelVersion
    from backend.runtime import build_services
    from backend.services.linking import LinkRequest, link_project
    from backend.services.reconcile import reconcile

    config = base_config(
        tmp_path,
        queue="sqlite",
        label_studio_url=label_studio.url,
        label_studio_token=label_studio.token,
        public_url="http://127.0.0.1:9",
        round_budget=2,
        train_epochs=6,
        train_steps_per_epoch=3,
        train_save_every_s=0.0,
        torch_threads=1,
        job_stale_s=600.0,
        reconcile_minutes=59,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    env.update({PREFIX + k.upper(): str(v) for k, v in config.items()})
    services = build_services(Settings.from_env(overrides=config))
    workers = []
    try:
        result = link_project(
            services,
            LinkRequest(
                dataset="lspet",
                data=str(lspet_dir),
                split="pool",
                limit=6,
                labels="ignore",
                round_budget=2,
                title=f"coord-crash-{uuid.uuid4().hex[:6]}",
                init_checkpoint=str(tiny_checkpoint.path),
            ).validate(),
        )
        workers.append(_worker(env, tmp_path / "worker.log", "A"))

        def job(kind):
            with services.db.session() as session:
                return session.scalar(select(Job).where(Job.kind == kind).order_by(Job.id.desc()).limit(1))

        wait_for(lambda: job("rank") and job("rank").state == JobState.DONE, 180, "the initial ranking", every=0.2)
        with services.db.session() as session:
            project = session.scalar(select(Project))
            selected = session.scalar(select(Round)).selected_tasks
        from label_studio_sdk import LabelStudio

        sdk = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
        for task_id in selected[:2]:
            image = sdk.tasks.get(id=task_id).data["image"]
            sdk.annotations.create(
                id=task_id, result=gt_results(sample_for_url(lspet_pool, image), project.label_config)
            )
        reconcile(services, project.id)  # closes round 1 and queues the train job
        train = wait_for(lambda: job("train"), 10, "the train job", every=0.2)
        state = services.job_dir(train.id) / "run" / "state.pt"
        wait_for(lambda: job("train").progress >= 0.4 and state.is_file(), 300, "training to get going", every=0.05)
        os.killpg(workers[0].pid, signal.SIGKILL)
        workers[0].wait(10)
        left = job("train")
        assert left.state == JobState.RUNNING and left.attempts == 1 and 0.4 <= left.progress < 0.95
        assert services.registry().versions() == [result.initial_version]

        workers.append(_worker(env, tmp_path / "worker.log", "B"))
        wait_for(lambda: job("rank").id > train.id and job("rank").state == JobState.DONE, 300, "training and ranking",
                 every=0.2)
        done = job("train")
        assert done.state == JobState.DONE and done.attempts == 2
        v1 = f"p{result.ls_project_id}-v1"
        assert services.registry().versions() == [result.initial_version, v1] and services.registry().current() == v1
        with services.db.session() as session:
            assert [v.version for v in session.scalars(select(ModelVersion).order_by(ModelVersion.id))] == [
                result.initial_version,
                v1,
            ]
            assert [r.state for r in session.scalars(select(Round).order_by(Round.number))] == [
                RoundState.DONE,
                RoundState.OPEN,
            ]
        log = (tmp_path / "worker.log").read_text()
        assert "re-queued jobs left running by a stopped worker" in log and "resuming" in log
        import json

        history = json.loads((services.job_dir(train.id) / "run" / "history.json").read_text())
        assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    finally:
        for worker in workers:
            _stop(worker)
        services.close()
