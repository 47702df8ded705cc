"""The paper's active-learning experiment on one GPU, as far as 8 minutes allow (run ``scripts/gpu_protocol.sh``).

``vl4pose simulate`` on the packed LSPET (``scripts/gpu_pack.py``: the loaders read it unchanged) with the
``paper`` preset (2 stacks, 256 channels, 256 px input) on CUDA: random, multi-peak entropy and VL4Pose,
3 seeds, 2,000 random initial labels + 2 rounds of 1,000 (2,000 -> 3,000 -> 4,000 labels), each round
fine-tuned from the previous one. The three seeds run as three processes side by side on the one GPU
(one ``simulate`` folder each, ``OUT/run-seed<S>``), then their records are merged into ``OUT/results.json``,
``OUT/table.md`` (test and validation PCK@0.2, mean ± std over the seeds), ``OUT/curve.png`` and
``OUT/failure.md``; each seed's log is ``OUT/seed<S>.log``. A run stopped at the deadline resumes when the
same command runs again (each seed's folder is a resumable simulation).

What had to be cut to fit 8 minutes (the paper: LSP + LSPET, 1,000 initial + 1,000 per cycle up to 6,000
labels, 5 runs, training to convergence, six baselines):
- 3 seeds, not 5; 2,000 -> 4,000 labels (2 acquisition cycles), not 1,000 -> 6,000;
- training is bounded by wall-clock time budgets instead of run to convergence: ``--initial-minutes``
  (1.25) for each round-0 model from scratch, ``--round-minutes`` (0.6) for each fine-tuning round, the
  learning-rate schedule following the share of the budget used (``TrainConfig.time_budget_s``); with
  three seeds sharing the GPU each gets about a third of it;
- LSPET only (no LSP), as the pack's 160 px person canvases (JPEG quality 75) that the 256 px input
  upsamples, and whole test images downscaled to 256 px;
- three strategies (no Core-Set, Learning Loss, aleatoric, EGL++); ``--strategies`` may add the VL4Pose
  variants at about +0.6 x 2 minutes of each seed's time per strategy;
- a deadline (``--deadline-minutes``, 7.5): seeds still running are stopped and what finished is reported.

A known cost outside this script: ``Trainer._finish`` (vl4pose/train.py) reloads ``best/`` with
``load_checkpoint``, which puts the networks on the CPU, so the final calibration pass over the validation
split runs on the CPU (about 20 s per training run for the ``paper`` preset and 500 images, 21 runs) and is
not covered by the time budget. Until it runs on the device, ``--val-images 250`` halves that cost. The
simulation itself moves every checkpoint it scores with to the run's device.

Expected time (not yet measured on a GPU): per seed process about 0.5 min start-up and pool decoding,
1.25 min round 0, 6 x 0.6 min fine-tuning, about 1 min of pool scoring (4 passes over about 6,500 images),
test evaluations and analysis: about 6.5 minutes with the three seeds side by side.
``--dry-run`` does the same on the CPU with the ``tiny`` preset, a few images and seconds of training, so
that a bug costs seconds here instead of device time there.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vl4pose.simulate.report import format_table, write_reports  # noqa: E402

STRATEGIES = ("random", "multipeak_entropy", "vl4pose")


def simulate_command(args: argparse.Namespace, seed: int, out: Path, threads: int) -> list[str]:
    """The ``vl4pose simulate`` command line of one seed."""
    common = ["--dataset", "lspet", "--data", str(args.pack.resolve()), "--strategies", *args.strategies,
              "--seeds", str(seed), "--out", str(out)]
    if args.dry_run:
        sizes = ["--preset", "tiny", "--initial", "16", "--budget", "8", "--rounds", "2", "--limit-val", "16",
                 "--limit-test", "24", "--initial-time-budget", "0.1", "--time-budget", "0.05",
                 "--initial-epochs", "2", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8",
                 "--warmup-steps", "1", "--inference-batch", "16", "--device", "cpu"]
    else:
        sizes = ["--preset", "paper", "--initial", "2000", "--budget", "1000", "--rounds", "2",
                 "--initial-time-budget", str(args.initial_minutes), "--time-budget", str(args.round_minutes),
                 "--batch-size", "32", "--inference-batch", "128", "--device", "cuda"]
        if args.val_images:
            sizes += ["--limit-val", str(args.val_images)]
    return [sys.executable, "-m", "vl4pose", "--threads", str(threads), "simulate", *common, *sizes]


def run_seeds(args: argparse.Namespace, out: Path) -> dict[int, dict]:
    """Run every seed (side by side unless ``--sequential``) until done or the deadline; returns per seed
    its return code (124: stopped at the deadline) and seconds."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PYTHONUNBUFFERED": "1"}
    threads = max(1, (os.cpu_count() or 2) // (1 if args.sequential else len(args.seeds)))
    if args.dry_run:
        threads = 1
    deadline = time.monotonic() + 60 * args.deadline_minutes
    status: dict[int, dict] = {}
    waves = [[s] for s in args.seeds] if args.sequential else [list(args.seeds)]
    for wave in waves:
        running = {}
        for seed in wave:
            log = open(out / f"seed{seed}.log", "a")  # noqa: SIM115 (closed below)
            command = simulate_command(args, seed, out / f"run-seed{seed}", threads)
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            running[seed] = (process, log, time.monotonic())
        for seed, (process, log, started) in running.items():
            try:
                code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                code = 124
            log.close()
            status[seed] = {"returncode": code, "seconds": round(time.monotonic() - started, 1)}
    return status


def merge(out: Path, seeds: list[int]) -> tuple[list[dict], dict, dict | None]:
    """Every seed folder's records and analysis, and one folder's machine description."""
    records: list[dict] = []
    analysis: dict = {}
    machine = None
    for seed in seeds:
        folder = out / f"run-seed{seed}"
        if (folder / "results.json").is_file():
            results = json.loads((folder / "results.json").read_text())
            records += results.get("records", [])
            machine = machine or results.get("machine")
        if (folder / "analysis.json").is_file():
            analysis |= json.loads((folder / "analysis.json").read_text())
    return records, analysis, machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, required=True, help="the LSPET pack (scripts/gpu_pack.py)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny preset, a few images, seconds of training")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--initial-minutes", type=float, default=1.25, help="time budget of each round-0 model")
    parser.add_argument("--round-minutes", type=float, default=0.6, help="time budget of each fine-tuning round")
    parser.add_argument("--deadline-minutes", type=float, default=7.5, help="stop seeds still running after this")
    parser.add_argument("--sequential", action="store_true", help="one seed after another, not side by side")
    parser.add_argument("--val-images", type=int, default=0,
                        help="use only the first N validation images (0: all 500); see the note on calibration")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    status = run_seeds(args, out)
    records, analysis, machine = merge(out, args.seeds)
    write_reports(out, records, analysis)
    results = {"dry_run": args.dry_run, "device": "cpu" if args.dry_run else "cuda",
               "pack": json.loads(pack_file.read_text()) if (pack_file := args.pack / "PACK.json").is_file() else None,
               "protocol": {"preset": "tiny" if args.dry_run else "paper", "strategies": args.strategies,
                            "seeds": args.seeds, "labels": [16, 24, 32] if args.dry_run else [2000, 3000, 4000],
                            "initial_minutes": args.initial_minutes, "round_minutes": args.round_minutes,
                            "parallel_seeds": not args.sequential},
               "seeds": {str(k): v for k, v in status.items()}, "seconds": round(time.monotonic() - started, 1),
               "machine": machine, "records": records}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if records:
        print(format_table(records))
    complete = len(records) == len(args.seeds) * len(args.strategies) * 3
    print(f"{len(records)} records, {'complete' if complete else 'INCOMPLETE (rerun the same command to resume)'}; "
          f"{results['seconds']} s; outputs in {out}")
    return 0 if complete and all(s["returncode"] == 0 for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
