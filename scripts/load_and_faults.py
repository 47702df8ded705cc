"""Load and faults against the system started by ``scripts/start.sh`` (127.0.0.1 only; bounded in time and count).

1. ``/predict`` under load: ``--clients`` threads post one task each to the ML backend, as Label Studio does when
   a task opens, for ``--seconds``: throughput, p50/p95/max latency, errors.
2. A burst of ``--webhooks`` events posted at once to the coordinator (for a Label Studio project that is not
   linked, so the demo's rounds are untouched): every one answered and stored in the inbox, and processed.
3. Faults in the middle of a round, the simulated annotator labelling through Label Studio's API: half the
   round is labelled; the ML backend is killed (SIGKILL) and restarted; Label Studio is killed and restarted;
   the rest of the round is labelled, which closes it; the worker is killed while it trains and restarted.
   Then: the round is trained, ranked and the next one opens; no annotation and no model version is lost.
4. A poison event: a well-signed webhook whose annotation ``result`` is not a list, for a real task, sent before
   the faults' round is labelled: it must end *failed* with its reason while the round's annotations count and
   the round closes (step 3's checks).
5. Hostile probes (``stack/probes.py``): /predict and /setup without the ML backend's credentials (401), a hostile
   /setup moving the live project to a listener (no token or cookie may arrive there), four images from a server
   trickling one byte every 3 s (bounded; /health keeps answering), a 12000 x 12000 PNG bomb served by Label
   Studio (its task gets [], the good one its predictions, the ML worker's RSS grows < 50 MB).

    .venv/bin/python scripts/load_and_faults.py [--clients 8 --seconds 60 --webhooks 200] [--json-out FILE]

Prints one JSON object, then a table. Exit code 1 when a check fails, 2 when the system is not started or Label
Studio fails (its calls go through the stack's adapter, :mod:`stack.labelstudio`).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.errors import CoordinatorError  # noqa: E402
from backend.services.labelstudio import LabelStudio  # noqa: E402
from stack import labelstudio, services  # noqa: E402
from stack.annotator import GroundTruth, SimulatedAnnotator  # noqa: E402
from stack.probes import run_probes  # noqa: E402
from stack.project import Coordinator, ml_serves  # noqa: E402
from stack.start import load_state, stack_config, storage_dir  # noqa: E402

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
    from backend.db import Database
    from backend.models import WebhookEvent
    from sqlalchemy import select

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
    from backend.db import Database
    from backend.models import AnnotationRecord, AnnotationStatus
    from sqlalchemy import select

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


def table(result: dict) -> str:
    p, w, f = result["predict"], result["webhooks"], result["faults"]
    rows = [
        ("/predict clients x seconds", f"{p['clients']} x {p['seconds']:.0f} s"),
        ("/predict requests / errors", f"{p['requests']} / {p['errors']}"),
        ("/predict throughput", f"{p['throughput_rps']} req/s"),
        ("/predict latency p50 / p95 / max", f"{p['p50_ms']} / {p['p95_ms']} / {p['max_ms']} ms"),
        ("webhooks sent / answered 200 / stored / processed", f"{w['sent']} / {w['answered_200']} / {w['stored']} / "
                                                              f"{w['processed']}"),
        ("webhook burst wall time, answer p50 / p95 / max", f"{w['wall_s']} s, {w['p50_ms']} / {w['p95_ms']} / "
                                                            f"{w['max_ms']} ms"),
        ("ML backend killed + restarted (answering / model loaded)", f"{f['ml_restart_s']} / "
                                                                      f"{f['ml_model_loaded_s']} s"),
        ("Label Studio killed + restarted (until answering)", f"{f['labelstudio_restart_s']} s"),
        ("worker killed during training, restarted", f"{f['worker_restart_s']} s (at: {f['worker_killed_at_stage']}; "
                                                     f"train job attempts {f['train_job_attempts']})"),
        ("round close -> next round open (with the worker kill)", f"{f['close_to_next_round_s']} s"),
        ("annotations labelled in the faulty round", str(f["labelled_during_faults"])),
        ("annotations missing from the coordinator", str(f["annotations_missing_from_coordinator"])),
        ("model versions lost", str(len(f["versions_lost"]))),
        ("new version served", f["new_version"]),
        ("poison event (result not a list) before the round: state, reason",
         f"{result['poison_event']['state']}, {result['poison_event']['error'][:60]}"),
    ]
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"| {a.ljust(width)} | {b} |" for a, b in rows)


def probe_table(probes: dict) -> str:
    a, h, s, b = probes["auth"], probes["hostile_setup"], probes["slow_image"], probes["pixel_bomb"]
    rows = [
        ("no credentials: /predict, /setup status", f"{a['predict_status']}, {a['setup_status']}"),
        ("hostile /setup: requests / with credentials at the attacker",
         f"{h['requests_at_attacker']} / {h['credentials_at_attacker']} (unlinked project: {h['unlinked_setup_status']})"),
        ("4 images trickling 1 byte / 3 s: statuses, wall time, connections",
         f"{s['statuses']}, {s['wall_s']} s, {s['connections_at_server']} (/health meanwhile {s['health_s_meanwhile']} s)"),
        ("12000x12000 PNG bomb: bomb task empty / good task predicted",
         f"{b['bomb_task_empty']} / {b['good_task_predicted']}"),
        ("ML worker RSS before -> after the bomb", f"{b['rss_before_mb']} -> {b['rss_after_mb']} MB "
                                                    f"(+{b['rss_growth_mb']} MB)"),
    ]
    width = max(len(x) for x, _ in rows)
    return "\n".join(f"| {x.ljust(width)} | {y} |" for x, y in rows)


def poison_event(config, ls_project: int, task: dict) -> Callable[[], dict]:
    """Send a well-signed webhook whose annotation ``result`` is not a list, for a real task of the live project,
    before the faults' round is labelled. Returns a function that, after the round, reports what became of it:
    it must be *failed* with its reason (never pending, never counted) while the round's real annotations count."""
    from backend.db import Database
    from backend.models import WebhookEvent
    from sqlalchemy import select

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--webhooks", type=int, default=200)
    parser.add_argument("--skip-faults", action="store_true")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    state = load_state(storage_dir())
    active = state.get("projects", {}).get(state.get("active", ""))
    if not active:
        print("start the system first: bash scripts/start.sh", file=sys.stderr)
        return 2
    config = stack_config(storage_dir(), state)
    try:
        return run(args, config, state, active)
    except CoordinatorError as exc:  # Label Studio refused, failed or could not be reached
        print(f"load_and_faults: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, config, state: dict, active: dict) -> int:
    ls = labelstudio.connect(config.url("labelstudio"), config.secrets.ls_token)
    try:
        result = {"predict": predict_load(config, ls, active["ls_project_id"], args.clients, args.seconds)}
        result["webhooks"] = webhook_burst(config, args.webhooks)
        xml = labelstudio.label_config(ls, active["ls_project_id"])
        first = ls.task_page(active["ls_project_id"], 1, 1)[0][0]
    finally:
        ls.close()
    result["probes"], probe_checks = run_probes(config, active["ls_project_id"], xml,
                                                next(iter(first["data"].values())))
    poison = poison_event(config, active["ls_project_id"], first)
    result["faults"] = {} if args.skip_faults else faults(config, state, active)
    result["poison_event"] = poison()
    checks = {
        **probe_checks,
        "predict_errors_zero": result["predict"]["errors"] == 0,
        "webhooks_none_lost": result["webhooks"]["lost"] == 0 and result["webhooks"]["processed"] == args.webhooks,
        "poison_event_isolated": result["poison_event"]["answered"] == 200 and result["poison_event"]["state"] == "failed"
        and "list" in result["poison_event"]["error"],
    }
    if not args.skip_faults:
        checks["no_annotation_lost"] = result["faults"]["annotations_missing_from_coordinator"] == 0
        checks["no_model_version_lost"] = not result["faults"]["versions_lost"]
    result["checks"] = checks
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text)
    print(probe_table(result["probes"]))
    if not args.skip_faults:
        print(table(result))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
