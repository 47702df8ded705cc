"""What ``scripts/bench_round.py`` measures (see its docstring): one coordinator round on real data and a real
Label Studio (``bench_round``), and the webhook's answer time over real HTTP (``bench_webhook``)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import uuid
from pathlib import Path

import requests
from sqlalchemy import select, update
from werkzeug.serving import make_server

from backend import create_app
from backend.config import Settings
from backend.models import Job, JobKind, JobState, ModelVersion, Project, Round
from backend.runtime import build_services
from backend.services.images import ImageStore
from backend.services.linking import LinkRequest, link_project
from backend.services.reconcile import reconcile
from vl4pose.data import load_samples
from vl4pose.data.labelstudio import keypoints_to_results
from vl4pose.data.sample import image_size
from vl4pose.skeletons import LSP14

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VL4POSE_SHARED_DATA", REPO.parent / "shared" / "data"))
CAPTURE = (
    SHARED.parent / "docs" / "label-studio-captures" / "11_coordinator_webhook_ANNOTATION_CREATED_from_UI_submit.json"
)
SECRET, TOKEN = "bench-webhook-secret-0123456789", "bench-api-token-0123456789abcdef"


def tiny_starter(out: Path) -> Path:
    """A tiny model trained a few steps on LSPET (only when no --checkpoint is given)."""
    # deferred on purpose: both load torch (~2 s), needed here only to train a starter when no --checkpoint is given
    from vl4pose.models import preset
    from vl4pose.train import TrainConfig, Trainer

    train = load_samples("lspet", SHARED / "lspet", "pool")[-64:]
    val = load_samples("lspet", SHARED / "lspet", "val")[:16]
    config = TrainConfig(epochs=2, batch_size=8, steps_per_epoch=4, warmup_steps=2)
    Trainer(preset("tiny"), LSP14, config, out).fit(train, val)
    return out / "best"


def settings_for(args: argparse.Namespace, work: Path, ls_url: str, ls_token: str, queue: str, db: str) -> dict:
    values = {
        "database_url": f"sqlite:///{work / db}",
        "storage_dir": str(work / "storage"),
        "models_dir": str(work / "models"),
        "queue": queue,
        "webhook_secret": SECRET,
        "api_token": TOKEN,
        "label_studio_url": ls_url,
        "label_studio_token": ls_token,
        "public_url": "http://127.0.0.1:9",
        "label_studio_files_root": str(SHARED),
        "round_budget": args.labels,
        "train_steps_per_epoch": args.steps_per_epoch,
        "torch_threads": args.torch_threads,
        "job_retries": 0,
    }
    if args.epochs:
        values["train_epochs"] = args.epochs
    if args.batch_size:
        values["train_batch_size"] = args.batch_size
    return values


def bench_round(args: argparse.Namespace, work: Path, ls_url: str, ls_token: str) -> dict:
    checkpoint = Path(args.checkpoint) if args.checkpoint else tiny_starter(work / "starter")
    overrides = settings_for(args, work, ls_url, ls_token, "memory", "round.sqlite")
    services = build_services(Settings.from_env(overrides=overrides))
    started = time.monotonic()
    result = link_project(
        services,
        LinkRequest(
            dataset="lspet",
            data=str(SHARED / "lspet"),
            split="pool",
            limit=args.pool,
            labels="ignore",
            holdout_dataset="lspet",
            holdout_data=str(SHARED / "lspet"),
            holdout_split="test",
            holdout_limit=args.holdout,
            init_checkpoint=str(checkpoint),
            round_budget=args.labels,
            title=f"bench-{uuid.uuid4().hex[:6]}",
        ).validate(),
    )
    link_s = time.monotonic() - started
    if args.download_images:  # tasks still point at local files; the coordinator fetches them over HTTP instead
        services.images = ImageStore(
            services.storage / "cache" / "images", None, services.ls, services.settings.image_max_bytes
        )
    with services.db.session() as session:  # skip the initial ranking of the whole pool (not part of a round)
        session.execute(update(Job).where(Job.kind == JobKind.RANK).values(state=JobState.DONE, stage="skipped"))
        session.execute(update(Round).values(model_version=result.initial_version))
        project = session.scalar(select(Project))
        evaluate_id = session.scalar(select(Job.id).where(Job.kind == JobKind.EVALUATE))
    ls = services.ls()
    tasks = sorted(ls.list_tasks(result.ls_project_id), key=lambda t: t["id"])[: args.labels]
    pool = {s.sample_id: s for s in load_samples("lspet", SHARED / "lspet", "pool")}
    started = time.monotonic()
    for task in tasks:
        sample = pool[Path(task["data"]["image"].split("?d=", 1)[1]).stem]
        labels = project.label_config["labels"]
        result_items = keypoints_to_results(
            sample.keypoints,
            image_size(sample.image),
            labels,
            sample.labelled,
            None,
            project.label_config["from_name"],
            project.label_config["to_name"],
        )
        ls.create_annotation(task["id"], result_items)
    annotate_s = time.monotonic() - started

    closed = time.monotonic()
    reconcile(services, project.id)
    reconcile_s = time.monotonic() - closed
    timings = {}
    for kind in (JobKind.TRAIN, JobKind.RANK):
        with services.db.session() as session:
            job_id = session.scalar(select(Job.id).where(Job.kind == kind, Job.state == JobState.QUEUED))
        if job_id is None:
            raise SystemExit(f"no {kind.value} job was queued; see the log")
        begin = time.monotonic()
        services.jobs.run(job_id)
        timings[f"{kind.value}_job_s"] = time.monotonic() - begin
        with services.db.session() as session:
            job = session.get(Job, job_id)
            if job.state != JobState.DONE:
                raise SystemExit(f"{kind.value} job failed: {job.error}")
    total = time.monotonic() - closed
    with services.db.session() as session:
        round_ = session.scalar(select(Round).where(Round.number == 1))
        metrics, round_timings = dict(round_.metrics), dict(round_.timings)
    begin = time.monotonic()
    services.jobs.run(evaluate_id)
    initial_eval_s = time.monotonic() - begin
    with services.db.session() as session:
        initial = session.scalar(select(ModelVersion).where(ModelVersion.version == result.initial_version))
        initial_pck = (initial.metrics or {}).get("holdout_pck")
    ranked = metrics.get("ranked_tasks", 0)
    train = {
        "epochs": services.settings.train_epochs,
        "batch_size": services.settings.train_batch_size,
        "steps_per_epoch": services.settings.train_steps_per_epoch or "full pass",
    }
    services.close()
    return {
        "pool": args.pool,
        "labels": args.labels,
        "holdout": args.holdout,
        "checkpoint": str(checkpoint),
        "images": "downloaded from Label Studio" if args.download_images else "read from the local-files root",
        "train": train,
        "train_images": metrics.get("train_images"),
        "ranked_tasks": ranked,
        "setup": {"link_s": round(link_s, 1), "annotate_s": round(annotate_s, 1)},
        "round": {
            "reconcile_s": round(reconcile_s, 2),
            "train_job_s": round(timings["train_job_s"], 1),
            "of_which_train_s": round_timings.get("train_s"),
            "of_which_evaluate_s": round_timings.get("evaluate_s"),
            "rank_job_s": round(timings["rank_job_s"], 1),
            "close_to_ranked_s": round(total, 1),
            "rank_images_per_s": round(ranked / timings["rank_job_s"], 2) if ranked else None,
        },
        "holdout_pck": {"initial": initial_pck, "trained": metrics.get("holdout_pck")},
        "initial_evaluate_s": round(initial_eval_s, 1),
    }


def bench_webhook(args: argparse.Namespace, work: Path) -> dict:
    """Answer time of POST /hooks/label-studio over real HTTP (store + enqueue, no processing)."""
    config = settings_for(args, work, "http://127.0.0.1:9", "unused", "sqlite", "webhook.sqlite")
    config["storage_dir"] = str(work / "webhook-storage")
    app = create_app(config)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.port}/hooks/label-studio"
    body = (
        json.loads(CAPTURE.read_text())["json"]
        if CAPTURE.is_file()
        else {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"id": 1, "task": 1, "result": []}}
    )
    counter = iter(range(1, 10**9))
    lock = threading.Lock()
    latencies: list[float] = []

    def client(count: int) -> None:
        session = requests.Session()
        session.headers.update({"X-VL4Pose-Secret": SECRET})
        for _ in range(count):
            with lock:
                body_i = {**body, "annotation": {**body["annotation"], "id": next(counter)}}
            begin = time.perf_counter()
            response = session.post(url, json=body_i, timeout=10)
            elapsed = time.perf_counter() - begin
            if response.status_code != 200:
                raise SystemExit(f"webhook answered {response.status_code}: {response.text}")
            with lock:
                latencies.append(elapsed)

    client(20)  # warm-up
    latencies.clear()
    threads = [threading.Thread(target=client, args=(args.webhooks // args.clients,)) for _ in range(args.clients)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - begin
    server.shutdown()
    app.extensions["vl4pose"].close()
    ms = sorted(1000 * x for x in latencies)
    return {
        "requests": len(ms),
        "clients": args.clients,
        "server": "werkzeug threaded, SQLite inbox + SQLite queue",
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 2),
        "max_ms": round(ms[-1], 2),
        "per_s": round(len(ms) / wall, 1),
    }
