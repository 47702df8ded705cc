"""Integration: the scale benchmark's smoke run (``scripts/bench_scale.py --quick``) through the real processes
(its own Label Studio, the coordinator's web process and workers started by ``stack.services``), and the
invariants its JSON must hold: every unlabelled task ranked by every ranking, at most two predictions per task in
Label Studio and in the coordinator after three rounds (the current and the previous version), every
configuration of the worker comparison ranking everything at a positive rate, peak memory read for each process.
The figures themselves are not asserted (the machine may be busy); ``docs/RESULTS.md`` has measured ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TASKS, COMPARE_TASKS, BUDGET, ROUNDS, POOL_TASKS, POOL_LABELS = 300, 100, 5, 3, 40, 5  # bench_scale_cli.QUICK


def check_scale(scale: dict) -> None:
    assert scale["tasks"] == TASKS and scale["link_s"] > 0
    rankings, rounds = scale["rankings"], scale["rounds"]
    assert len(rankings) == ROUNDS + 1 and rankings[0]["initial"] and len(rounds) == ROUNDS
    for number, rank in enumerate(rankings):  # every unlabelled task, each ranking, nothing unreadable
        assert rank["state"] == "done" and rank["unreadable"] == 0, rank
        assert rank["ranked"] == rank["expected"] == TASKS - number * BUDGET, rank
        assert rank["tasks_per_s"] > 0 and rank["shards"] == -(-TASKS // 25)  # a shard per page, rank
        assert sum(rank["shards_by_worker"].values()) == rank["shards"], rank
    for closed, rank in zip(rounds, rankings[1:]):
        assert closed["labelled"] == BUDGET and closed["ranked_tasks"] == rank["ranked"], closed
        assert closed["close_to_ranked_s"] > 0 and closed["trained_version"] == rank["version"], closed
    kept = {rankings[-1]["version"], rankings[-2]["version"]}  # pruning keeps the current and the previous version
    ls = scale["label_studio"]
    assert ls["tasks"] == TASKS and 0 < ls["max_per_task"] <= 2 and 0 < ls["exact_max_per_task"] <= 2, ls
    assert ls["predictions"] == ls["sum_per_task"] <= 2 * TASKS and set(ls["by_version"]) == kept, ls
    assert ls["db_mb"] > 0
    coordinator = scale["coordinator"]
    assert 0 < coordinator["max_per_task"] <= 2 and set(coordinator["versions"]) == kept, coordinator
    assert coordinator["rows"] <= 2 * TASKS and coordinator["db_mb"] > 0, coordinator
    for kind in ("incremental", "full"):
        assert scale["reconcile"][kind]["seconds"] > 0


def check_compare(compare: dict) -> None:
    assert compare["tasks"] == COMPARE_TASKS
    shapes = [(c["workers"], c["threads"]) for c in compare["configs"]]
    assert shapes == [(1, 1), (2, 1), (1, 2)]
    for config in compare["configs"]:
        assert config["state"] == "done" and config["ranked"] == COMPARE_TASKS and config["unreadable"] == 0, config
        assert config["tasks_per_s"] > 0 and config["vs_one_worker"] > 0, config
        assert len(config["shards_by_worker"]) <= config["workers"], config  # no shard taken by a stranger
    assert compare["configs"][0]["vs_one_worker"] == 1.0


def check_pool(pool: dict) -> None:
    closed = pool["round"]
    assert pool["tasks"] == POOL_TASKS and closed["labelled"] == POOL_LABELS
    assert closed["close_to_ranked_s"] > 0 and closed["ranked_tasks"] == POOL_TASKS - POOL_LABELS, closed
    assert [r["ranked"] for r in pool["rankings"]] == [POOL_TASKS, POOL_TASKS - POOL_LABELS]


def check_memory(peaks: dict) -> None:
    expected = {"label_studio", "coordinator_web", "worker scale #1", "worker 1x1 #1", "worker 2x1 #1",
                "worker 2x1 #2", "worker 1x2 #1", "worker pool #1"}
    assert set(peaks) == expected, sorted(peaks)
    assert len(peaks["coordinator_web"]["processes"]) == 3  # gunicorn's arbiter and its two workers
    for role, peak in peaks.items():
        assert peak["peak_mb"] > 10, (role, peak)
        if role != "label_studio":  # ours stay far below the 2 GB at this size
            assert peak["peak_mb"] < 2048, (role, peak)


def test_the_quick_scale_benchmark_keeps_its_invariants(tmp_path, lspet_dir):
    from stack.labelstudio import DEFAULT_VENV

    if not (DEFAULT_VENV / "bin" / "label-studio").exists():
        pytest.fail(f"Label Studio is not installed in {DEFAULT_VENV}; run `bash scripts/setup.sh`")
    out = tmp_path / "bench_scale.json"
    done = subprocess.run(
        [sys.executable, "scripts/bench_scale.py", "--quick", "--data", str(lspet_dir), "--out", str(out),
         "--work-dir", str(tmp_path / "work"), "--timeout", "600"],
        cwd=REPO, capture_output=True, text=True, timeout=840,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert json.loads(done.stdout.split("\n\n| measure")[0]) == report  # the printed JSON is the written one
    assert "| measure | value |" in done.stdout and "close -> re-ranked queue" in done.stdout
    check_scale(report["scale"])
    check_compare(report["compare"])
    check_pool(report["pool"])
    check_memory(report["peak_memory"])
