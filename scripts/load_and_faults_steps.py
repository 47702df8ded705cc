"""Steps 1-4 of ``scripts/load_and_faults.py`` (see its docstring): ``/predict`` under load, a webhook burst, faults in
the middle of a round, and a poison event; the hostile probes (step 5) are :mod:`stack.probes`."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from sqlalchemy import select

from backend.db import Database
from backend.models import AnnotationRecord, AnnotationStatus, WebhookEvent
from backend.services.labelstudio import LabelStudio
from stack import labelstudio, services
from stack.annotator import GroundTruth, SimulatedAnnotator
from stack.project import Coordinator, ml_serves

UNLINKED_PROJECT = 987654


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def predict_load(config, ls: LabelStudio, project: int, clients: int, seconds: float) -> dict:
    xml = labelstudio.label_config(ls, project)
    tasks = [{"id": t["id"], "data": t["data"]} for t in ls.task_page(project, 1, 64)[0]]
    if not tasks:
        raise SystemExit(f"Label Studio project {project} has no tasks to predict")
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        http, n = requests.Session(), index
        while time.monotonic() < deadline:
            task = tasks[n % len(tasks)]
            n += clients
            started = time.monotonic()
            try:
                response = http.post(config.url("ml") + "/predict", timeout=120, auth=config.ml_auth,
                                     json={"tasks": [task], "project": f"{project}.0", "label_config": xml})
                ok = response.status_code == 200 and response.json()["results"][0]
                problem = None if ok else f"{response.status_code}: {response.text[:200]}"
            except (requests.RequestException, ValueError, KeyError, IndexError) as exc:
                problem = str(exc)
            with lock:
                (errors.append(problem) if problem else latencies.append(time.monotonic() - started))

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.monotonic() - started
    return {"clients": clients, "seconds": round(wall, 1), "requests": len(latencies) + len(errors),
            "errors": len(errors), "first_errors": errors[:3], "throughput_rps": round(len(latencies) / wall, 2),
            "p50_ms": round(1000 * percentile(latencies, 50), 1), "p95_ms": round(1000 * percentile(latencies, 95), 1),
            "max_ms": round(1000 * max(latencies, default=float("nan")), 1)}


def webhook_burst(config, count: int) -> dict:
    marker = uuid.uuid4().hex
    headers = {"X-VL4Pose-Secret": config.secrets.webhook_secret}

    def send(n: int) -> tuple[int, float]:
        body = {"action": "ANNOTATION_CREATED", "project": {"id": UNLINKED_PROJECT}, "task": {"id": n},
                "annotation": {"id": 10**9 + n, "task": n, "result": [], "marker": marker,
                               "updated_at": "2026-01-01T00:00:00Z"}}
        started = time.monotonic()
        response = requests.post(config.url("coordinator") + "/hooks/label-studio", json=body, headers=headers,
                                 timeout=30)
        return response.status_code, time.monotonic() - started

    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(send, range(count)))
    wall = time.monotonic() - started
    db = Database(f"sqlite:///{config.storage / 'coordinator.sqlite'}")

    def stored() -> tuple[int, int]:
        with db.session() as session:
            rows = session.scalars(select(WebhookEvent).where(WebhookEvent.ls_project_id == UNLINKED_PROJECT)).all()
            mine = [r for r in rows if (r.body.get("annotation") or {}).get("marker") == marker]
            return len(mine), sum(r.processed for r in mine)

    deadline = time.monotonic() + 120
    while stored()[1] < count and time.monotonic() < deadline:
        time.sleep(1)
    in_inbox, processed = stored()
    latencies = [t for _, t in answers]
    db.dispose()
    return {"sent": count, "answered_200": sum(s == 200 for s, _ in answers), "stored": in_inbox,
            "processed": processed, "lost": count - in_inbox, "wall_s": round(wall, 2),
            "p50_ms": round(1000 * percentile(latencies, 50), 1), "p95_ms": round(1000 * percentile(latencies, 95), 1),
            "max_ms": round(1000 * max(latencies), 1)}


def restart(config, name: str) -> float:
    """SIGKILL a service's process group (a crash), start it again; seconds until it answers."""
    services.stop_service(config, name, kill=True)
    started = time.monotonic()
    services.start_service(config, name)
    return round(time.monotonic() - started, 1)


def faults(config, state: dict, active: dict) -> dict:
    coordinator = Coordinator(config.url("coordinator"), config.secrets.api_token)
    project, ls_project = active["project_id"], active["ls_project_id"]
    truth_info = active.get("truth") or {}
    truth = GroundTruth.load(truth_info["dataset"], Path(truth_info["data"]), None, config.files_root)
    annotator = SimulatedAnnotator(config.url("labelstudio"), config.secrets.ls_token, ls_project, truth)
    registry_before = sorted(p.name for p in (config.storage / "models").iterdir() if p.is_dir())
    report = coordinator.project(project)
    round_before = report["current_round"]
    if round_before["state"] != "open":
        raise SystemExit("the current round is not open (a job runs); wait for it and run again")
    left = round_before["budget"] - round_before["labelled"]
    out: dict = {"round": round_before["number"], "budget": round_before["budget"], "labelled_before": left}
    labelled = annotator.run(left // 2)
    started = time.monotonic()
    out["ml_restart_s"] = restart(config, "ml")
    ml_serves(config, round_before["model_version"], ls_project)
    out["ml_model_loaded_s"] = round(time.monotonic() - started, 1)
    out["labelstudio_restart_s"] = restart(config, "labelstudio")
    labelled += annotator.run(left - len(labelled))
    closed_at = time.monotonic()

    def training(report: dict) -> bool:
        job = report["current_job"] or {}
        return job.get("kind") == "train" and job.get("progress", 0) > 0.06

    coordinator.wait(project, training, "training to start", 600)
    out["worker_killed_at_stage"] = coordinator.project(project)["current_job"]["stage"]
    out["worker_restart_s"] = restart(config, "worker")

    def next_round(report: dict) -> bool:
        current = report["current_round"]
        return current["number"] == round_before["number"] + 1 and current["state"] == "open" \
            and report["current_job"] is None

    report = coordinator.wait(project, next_round, "the next round", 1800)
    out["close_to_next_round_s"] = round(time.monotonic() - closed_at, 1)
    new_version = report["current_round"]["model_version"]
    ml_serves(config, new_version, ls_project)
    ls = labelstudio.connect(config.url("labelstudio"), config.secrets.ls_token)  # after Label Studio's restart
    try:
        ids = labelstudio.annotation_ids(ls, ls_project)
    finally:
        ls.close()
    db = Database(f"sqlite:///{config.storage / 'coordinator.sqlite'}")
    with db.session() as session:
        recorded = set(session.scalars(select(AnnotationRecord.annotation_id).where(
            AnnotationRecord.project_id == project, AnnotationRecord.status == AnnotationStatus.SUBMITTED)))
    db.dispose()
    registry_after = sorted(p.name for p in (config.storage / "models").iterdir() if p.is_dir())
    out.update({
        "labelled_during_faults": len(labelled), "annotations_in_label_studio": len(ids),
        "annotations_missing_from_coordinator": len(ids - recorded),
        "new_version": new_version, "versions_lost": sorted(set(registry_before) - set(registry_after)),
        "ml_serves": new_version,
        "train_job_attempts": next((j["attempts"] for j in report["jobs"]
                                    if j["kind"] == "train" and j["version"] == new_version), None),
    })
    return out


def poison_event(config, ls_project: int, task: dict) -> Callable[[], dict]:
    """Send a well-signed webhook whose annotation ``result`` is not a list, for a real task of the live project,
    before the faults' round is labelled. Returns a function that, after the round, reports what became of it:
    it must be *failed* with its reason (never pending, never counted) while the round's real annotations count."""
    marker = 3 * 10**9 + int(time.time()) % 10**6
    body = {"action": "ANNOTATION_CREATED", "project": {"id": ls_project}, "task": {"id": task["id"], "data": task["data"]},
            "annotation": {"id": marker, "task": task["id"], "result": "not-a-list",
                           "updated_at": "2026-01-01T00:00:00Z"}}
    sent = requests.post(config.url("coordinator") + "/hooks/label-studio", json=body, timeout=30,
                         headers={"X-VL4Pose-Secret": config.secrets.webhook_secret})

    def outcome() -> dict:
        db = Database(f"sqlite:///{config.storage / 'coordinator.sqlite'}")
        deadline = time.monotonic() + 120  # the worker processes the inbox every few seconds
        try:
            while True:
                with db.session() as session:
                    rows = [r for r in session.scalars(select(WebhookEvent).where(
                        WebhookEvent.ls_project_id == ls_project)) if (r.body.get("annotation") or {}).get("id") == marker]
                    state = rows[0].state.value if rows else None
                    error = rows[0].error if rows else None
                if state not in (None, "pending") or time.monotonic() > deadline:
                    break
                time.sleep(2)
        finally:
            db.dispose()
        return {"answered": sent.status_code, "state": state, "error": (error or "")[:120]}

    return outcome
