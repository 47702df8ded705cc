"""The prepared GPU protocol (scripts/gpu_protocol.sh) runs here in its CPU dry-run mode, so no device time is
lost to a bug; its real command line is checked against the protocol it promises."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _protocol_module():
    spec = importlib.util.spec_from_file_location("gpu_protocol", REPO / "scripts" / "gpu_protocol.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def pack(gpu_pack) -> Path:
    return gpu_pack


def _dry_run(pack: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VL4POSE_GPU_PACK": str(pack), "PYTHON": sys.executable}
    return subprocess.run(["bash", "scripts/gpu_protocol.sh", "--dry-run", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_gpu_protocol_dry_run_writes_results_table_and_curve_and_resumes(pack, tmp_path):
    out = tmp_path / "out"
    done = _dry_run(pack, out)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:],
                                  [(out / f"seed{s}.log").read_text()[-1500:] for s in range(3)])
    results = json.loads((out / "results.json").read_text())
    assert results["dry_run"] and results["device"] == "cpu" and results["protocol"]["seeds"] == [0, 1, 2]
    records = results["records"]
    assert sorted({(r["strategy"], r["seed"], r["round"]) for r in records}) == sorted(
        (s, seed, r) for s in ("random", "multipeak_entropy", "vl4pose") for seed in (0, 1, 2) for r in (0, 1, 2))
    assert {r["labelled"] for r in records} == {16, 24, 32}
    assert all(r["val_pck@0.2"] is not None and 0.0 <= r["pck@0.2"] <= 1.0 for r in records)
    table = (out / "table.md").read_text()
    assert "3 seed(s) [0, 1, 2]" in table and "## Validation PCK@0.2" in table and "mean of rounds 1–2" in table
    assert (out / "curve.png").read_bytes().startswith(b"\x89PNG") and (out / "failure.md").is_file()

    again = _dry_run(pack, out)  # every seed folder is finished: nothing is trained again
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((out / "results.json").read_text())["records"] == records
    assert "round0 (shared) seed 0 round 0: start" not in (out / "seed0.log").read_text().split("$ ")[-1]


def test_the_real_run_is_the_promised_protocol_within_eight_minutes():
    module = _protocol_module()
    args = argparse.Namespace(
        pack=Path("build/gpu-pack/lspet"), dry_run=False, strategies=list(module.STRATEGIES), initial_minutes=1.25,
        round_minutes=0.6, val_images=0)
    command = module.simulate_command(args, 1, Path("/tmp/x"), 5)
    joined = " ".join(command)
    for part in ("--preset paper", "--device cuda", "--initial 2000", "--budget 1000", "--rounds 2", "--seeds 1",
                 "--strategies random multipeak_entropy vl4pose", "--initial-time-budget 1.25", "--time-budget 0.6",
                 "--threads 5"):
        assert part in joined, part
    assert "--limit-val" not in joined
    args.val_images = 250
    assert "--limit-val 250" in " ".join(module.simulate_command(args, 1, Path("/tmp/x"), 5))
    rounds = 2 * len(module.STRATEGIES)
    assert 1.25 + rounds * 0.6 <= 5.0  # training per seed process; the rest of 8 minutes for scoring and start-up


def test_gpu_protocol_without_a_pack_says_how_to_build_it(tmp_path):
    env = {**os.environ, "VL4POSE_GPU_PACK": str(tmp_path / "missing")}
    done = subprocess.run(["bash", "scripts/gpu_protocol.sh", "--dry-run", str(tmp_path / "out")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "scripts/gpu_pack.py" in done.stderr
