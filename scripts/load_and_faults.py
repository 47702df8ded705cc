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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from backend.errors import CoordinatorError  # noqa: E402
from load_and_faults_steps import faults, poison_event, predict_load, webhook_burst  # noqa: E402
from stack import labelstudio  # noqa: E402
from stack.probes import run_probes  # noqa: E402
from stack.start import load_state, stack_config, storage_dir  # noqa: E402


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
