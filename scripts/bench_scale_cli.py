"""Options, the table and the entry point of ``scripts/bench_scale.py`` (see its docstring)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VL4POSE_SHARED_DATA", REPO.parent / "shared" / "data"))
STARTER = str(REPO / "models" / "lsp14-starter")
FULL = {"tasks": 100_000, "compare_tasks": 10_000, "budget": 20, "shard_size": 500, "train_steps": 20,
        "pool_tasks": 8500, "pool_labels": 100, "pool_holdout": 100, "pool_train_minutes": 3.0,
        "compare_checkpoint": STARTER, "pool_checkpoint": STARTER}
"""The issue's figures (what an option left out means)."""
QUICK = {"tasks": 300, "compare_tasks": 100, "budget": 5, "shard_size": 25, "train_steps": 2, "pool_tasks": 40,
         "pool_labels": 5, "pool_holdout": 8, "pool_train_minutes": 0.0, "compare_checkpoint": "tiny",
         "pool_checkpoint": "tiny"}
"""``--quick``: a smoke run of every phase (the tiny model everywhere); options given explicitly still win."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_scale.py", description="Scale benchmark through the real processes "
                                "(see the module docstring of scripts/bench_scale.py)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    p.add_argument("--tasks", type=int, help=f"tasks of the scale project ({FULL['tasks']})")
    p.add_argument("--rounds", type=int, default=3, help="rounds closed and re-ranked on the scale project (3)")
    p.add_argument("--budget", type=int, help=f"annotations per round of the scale project ({FULL['budget']})")
    p.add_argument("--compare-tasks", type=int, help=f"tasks of the worker comparison ({FULL['compare_tasks']})")
    p.add_argument("--compare-checkpoint", help="version 0 of the comparison (the shipped cpu-preset starter; 'tiny': "
                   "a tiny model trained first)")
    p.add_argument("--pool-tasks", type=int, help=f"LSPET pool tasks of the pool figure ({FULL['pool_tasks']})")
    p.add_argument("--pool-labels", type=int, help=f"annotations that close the pool round ({FULL['pool_labels']})")
    p.add_argument("--pool-holdout", type=int, help=f"LSPET test images held out ({FULL['pool_holdout']})")
    p.add_argument("--pool-train-minutes", type=float, help="training budget of the pool round (3; 0: one epoch)")
    p.add_argument("--pool-checkpoint", help="version 0 of the pool project (the shipped cpu-preset starter)")
    p.add_argument("--skip-compare", action="store_true", help="leave out the worker comparison")
    p.add_argument("--skip-pool", action="store_true", help="leave out the LSPET pool round")
    p.add_argument("--shard-size", type=int, help=f"VL4POSE_RANK_SHARD_SIZE ({FULL['shard_size']})")
    p.add_argument("--train-steps", type=int,
                   help=f"training steps per round of the scale project ({FULL['train_steps']})")
    p.add_argument("--data", type=Path, default=SHARED / "lspet", help="the LSPET folder (read, linked, never copied)")
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds to wait for one ranking or round")
    p.add_argument("--start-timeout", type=float, default=600, help="seconds to wait for a service to answer")
    p.add_argument("--work-dir", type=Path, help="keep everything here (default: a temporary folder, removed after "
                   "a successful run and kept after a failed one)")
    p.add_argument("--out", type=Path, help="write the JSON here too")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.tasks, args.compare_tasks, args.budget, args.rounds, args.shard_size) < 1:
        p.error("--tasks, --compare-tasks, --budget, --rounds and --shard-size must be at least 1")
    if args.rounds * args.budget >= args.tasks:
        p.error(f"--rounds x --budget ({args.rounds * args.budget}) must stay below --tasks ({args.tasks})")
    if args.compare_tasks > args.tasks:
        p.error("--compare-tasks cannot exceed --tasks (the comparison links the first images of the scale project)")
    if not (args.data / "joints.mat").is_file():
        p.error(f"LSPET not found at {args.data} (joints.mat); give --data or set VL4POSE_SHARED_DATA")
    return args


def _s(value) -> str:
    return "n/a" if value is None else f"{value:g} s" if isinstance(value, (int, float)) else str(value)


def table(report: dict) -> str:
    rows = [("Label Studio start", _s(report.get("label_studio_start_s")))]
    scale = report.get("scale")
    if scale:
        rows.append((f"link {scale['tasks']} tasks ({scale['images']})",
                     f"{_s(scale['link_s'])} ({scale['link_tasks_per_s']} tasks/s)"))
        for rank in scale["rankings"]:
            what = "initial ranking" if rank["initial"] else f"ranking {rank['version']}"
            rows.append((f"{what}, tiny, 1 worker x 2 threads", f"{rank['ranked']}/{rank['expected']} tasks in "
                         f"{_s(rank['rank_s'])} ({rank['tasks_per_s']} tasks/s, {rank['shards']} shards)"))
        for r in scale["rounds"]:
            rows.append((f"round {r['number']}: close -> re-ranked queue",
                         f"{_s(r['close_to_ranked_s'])} (training {_s(r['train_s'])}, ranking {_s(r['rank_s'])})"))
        rec = scale["reconcile"]
        rows.append(("reconcile job, incremental / full", f"{_s(rec['incremental']['seconds'])} / "
                                                             f"{_s(rec['full']['seconds'])}"))
        ls, co = scale["label_studio"], scale["coordinator"]
        rows.append((f"Label Studio predictions after {len(scale['rounds'])} rounds",
                     f"{ls['predictions']} ({ls['max_per_task']} per task at most; {len(ls['by_version'])} versions)"))
        rows.append(("Label Studio database", f"{ls['db_mb']} MB"))
        rows.append(("coordinator task_prediction rows", f"{co['rows']} ({co['max_per_task']} per task at most), "
                                                          f"database {co['db_mb']} MB"))
        if scale.get("link_command_peak_mb"):
            rows.append(("peak memory: link command", f"{scale['link_command_peak_mb']} MB"))
    compare = report.get("compare")
    if compare:
        for c in compare["configs"]:
            rows.append((f"rank {compare['tasks']} tasks, {c['name']}",
                         f"{c['tasks_per_s']} tasks/s ({c['vs_one_worker']}x one worker; shards by worker process "
                         f"{c['shards_by_worker']})"))
    pool = report.get("pool")
    if pool:
        r = pool["round"]
        budget = f"{pool['train_minutes']:g}-minute training budget" if pool["train_minutes"] else "one epoch"
        rows.append((f"LSPET pool {pool['tasks']} tasks, {pool['labels']} labels, {budget}: close -> re-ranked",
                     f"{_s(r['close_to_ranked_s'])} (training {_s(r['train_s'])}, held-out evaluation "
                     f"{_s(r['evaluate_s'])}, ranking {_s(r['rank_s'])})"))
    for role, peak in sorted(report.get("peak_memory", {}).items()):
        rows.append((f"peak memory: {role}", f"{peak['peak_mb']} MB ({len(peak['processes'])} processes)"))
    return "\n".join(["| measure | value |", "| --- | --- |"] + [f"| {a} | {b} |" for a, b in rows])


def main(run: Callable[[argparse.Namespace, Path], dict], argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="bench_scale_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = run(args, work)
    except BaseException:
        logging.getLogger("bench_scale").error("the benchmark failed; its processes' logs are in %s", work / "storage")
        raise
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n\n" + table(report) + "\n")
    return 0
