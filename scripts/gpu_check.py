"""The engine's GPU check, step by step (``scripts/gpu_check.sh`` is the one command to run).

Steps, each through the project's own command line so the figures are the ones a user would get:
1. the CUDA-marked tests (``pytest -m cuda``),
2. ``vl4pose train`` of the ``paper`` preset on the packed LSPET pool under a time budget,
3. ``vl4pose evaluate`` on the packed test split with ground-truth and automatic boxes,
4. ``vl4pose bench`` of batched ranking throughput.
``--dry-run`` does the same on the CPU with the ``tiny`` preset and a few steps, so that a bug costs seconds
here instead of device time there. Writes ``results.json`` (every figure), ``table.md`` and the logs to OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(name: str, command: list[str], out: Path, env: dict[str, str], timeout: float) -> dict:
    """Run one step; its output goes to OUT/<name>.log; returns status, seconds and stdout."""
    started = time.monotonic()
    with open(out / f"{name}.log", "w") as log:
        try:
            done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                                  timeout=timeout)
            code, stdout = done.returncode, done.stdout
        except subprocess.TimeoutExpired as exc:
            code, stdout = 124, exc.stdout if isinstance(exc.stdout, str) else ""
        log.write("\n--- stdout ---\n" + stdout)
    return {"step": name, "returncode": code, "seconds": round(time.monotonic() - started, 1), "stdout": stdout}


def _json(step: dict) -> dict | None:
    try:
        return json.loads(step["stdout"][step["stdout"].index("{"):]) if step["returncode"] == 0 else None
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, required=True, help="the LSPET pack (scripts/gpu_pack.py)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny preset, a few steps")
    parser.add_argument("--train-minutes", type=float, default=3.5, help="training time budget on the GPU")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    pack = args.pack.resolve()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "VL4POSE_SHARED_DATA": str(pack.parent), "PYTHONUNBUFFERED": "1"}
    py = sys.executable
    device = "cpu" if args.dry_run else "cuda"
    cli = [py, "-m", "vl4pose"]
    data = ["--dataset", "lspet", "--data", str(pack)]
    run_dir = out / "run"
    if args.dry_run:
        train = ["--preset", "tiny", "--limit", "48", "--time-budget", "0.3", "--batch-size", "8"]
        evaluate_limit, rank = ["--limit", "24"], ["--preset", "tiny", "--rank-images", "16", "--repeats", "2",
                                                   "--refine-images", "4", "--batch-size", "8"]
    else:
        train = ["--preset", "paper", "--time-budget", str(args.train_minutes), "--batch-size", "32"]
        evaluate_limit, rank = [], ["--rank-images", "512", "--batch-size", "64"]
    steps = [
        _run("cuda_tests", [py, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                            "tests/vl4pose/test_engine.py"], out, env, 180),
        _run("train", cli + ["train", *data, "--split", "pool", "--out", str(run_dir), "--device", device, *train],
             out, env, 60 * args.train_minutes + 150),
    ]
    checkpoint = str(run_dir / "best")
    for box in ("gt", "auto"):
        steps.append(_run(f"evaluate_{box}", cli + ["evaluate", *data, "--split", "test", "--checkpoint", checkpoint,
                                                    "--box", box, "--json", "--device", device, *evaluate_limit],
                          out, env, 240))
    steps.append(_run("bench", cli + ["bench", "--checkpoint", checkpoint, "--data", str(pack), "--json",
                                      "--device", device, *rank], out, env, 240))
    results = {"dry_run": args.dry_run, "device": device, "pack": json.loads((pack / "PACK.json").read_text()),
               "steps": {s["step"]: {"returncode": s["returncode"], "seconds": s["seconds"]} for s in steps}}
    train_summary = _json(steps[1])
    results["train"] = train_summary
    history = run_dir / "history.json"
    if history.is_file():
        results["history"] = json.loads(history.read_text())
    for step in steps[2:4]:
        report = _json(step)
        results[step["step"]] = {k: report[k] for k in ("images", "pck@0.2", "failure_auroc")} | {
            "pck@0.2_refined": report["refined"]["pck@0.2"]} if report else None
    bench = _json(steps[4])
    results["bench"] = {k: bench.get(k) for k in ("rank_images_per_s", "rank_passes", "pose_forward_ms",
                                                  "flip_forward_ms", "vl4pose_overhead_ms", "machine")} if bench else None
    results["cuda_tests"] = steps[0]["stdout"].strip().splitlines()[-1:] if steps[0]["stdout"] else []
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "table.md").write_text(table(results))
    print(table(results))
    return 0 if all(s["returncode"] == 0 for s in steps) else 1


def table(results: dict) -> str:
    """The figures as a Markdown table."""
    rows = [("device", results["device"] + (" (dry run)" if results["dry_run"] else ""))]
    rows += [(f"step {name}", f"exit {s['returncode']}, {s['seconds']} s") for name, s in results["steps"].items()]
    if results.get("history"):
        last = results["history"][-1]
        rows.append(("training", f"{len(results['history'])} validations, {last['train_seconds']} s of steps, "
                                 f"val PCK@0.2 {last['pck@0.2']:.3f}"))
    for box in ("gt", "auto"):
        report = results.get(f"evaluate_{box}")
        if report:
            rows.append((f"test PCK@0.2, {box} box", f"{100 * report['pck@0.2']:.1f} % "
                                                      f"(refined {100 * report['pck@0.2_refined']:.1f} %), "
                                                      f"failure AUROC {report['failure_auroc']:.3f}, "
                                                      f"{report['images']} images"))
    bench = results.get("bench")
    if bench:
        rows.append(("ranking (images/s)", f"{bench['rank_images_per_s']:.1f} ({bench['rank_passes']})"))
        rows.append(("pose forward per image in a batch (ms)", f"{bench['pose_forward_ms']['batch']:.3f}"))
    lines = ["| figure | value |", "| --- | --- |"] + [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
