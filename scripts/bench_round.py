#!/usr/bin/env python
"""Benchmark one coordinator round on real data and a real Label Studio, and the webhook answer time.

Round: link an LSPET pool of ``--pool`` images (local files) with an initial checkpoint, have ``--labels``
tasks annotated through Label Studio's API (ground truth), then time what the coordinator does when the
round closes: reconcile + train (fine-tune from the initial version) + evaluate on ``--holdout`` LSPET test
images + publish, then rank every unlabelled task with the new version and bulk-import the predictions.
The jobs run in this process exactly as a worker runs them (``JobRunner.run``).

Webhook: ``--webhooks`` POSTs of a captured ANNOTATION_CREATED body to the coordinator served on
127.0.0.1 (werkzeug, threaded, SQLite queue), from ``--clients`` concurrent clients; p50/p99 of the answer.

Prints one JSON object, then a table. Example (the figure the issue asks for; long on a CPU):
    .venv/bin/python scripts/bench_round.py --pool 8500 --labels 500 --holdout 1000 --checkpoint runs/cpu/best
A quick check: --pool 200 --labels 40 --holdout 40 --epochs 1 (trains a tiny starter model without --checkpoint).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from bench_round_measure import SHARED, bench_round, bench_webhook  # noqa: E402
from stack.labelstudio import LabelStudioServer  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=int, default=8500, help="tasks in the project (LSPET pool images)")
    parser.add_argument("--labels", type=int, default=500, help="annotations that close the round")
    parser.add_argument("--holdout", type=int, default=1000, help="held-out ground-truth images (LSPET test)")
    parser.add_argument("--checkpoint", help="initial model (version 0); default: train a tiny one first")
    parser.add_argument("--epochs", type=int, help="training epochs per round (default: the coordinator's)")
    parser.add_argument("--steps-per-epoch", type=int, default=0, help="cap steps per epoch (0: a full pass)")
    parser.add_argument("--batch-size", type=int, help="training batch size (default: the coordinator's)")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--download-images",
        action="store_true",
        help="fetch images from Label Studio over HTTP instead of reading the local-files root",
    )
    parser.add_argument("--label-studio-url", help="use a running Label Studio (default: start one from .lsvenv)")
    parser.add_argument("--label-studio-token")
    parser.add_argument("--webhooks", type=int, default=1000, help="webhook POSTs to time (0: skip)")
    parser.add_argument("--clients", type=int, default=1, help="concurrent webhook clients")
    parser.add_argument("--skip-round", action="store_true", help="only time the webhook")
    parser.add_argument("--work-dir", help="keep the run's storage here (default: a temporary folder)")
    return parser.parse_args(argv)


def _pct(value: float | None) -> str:
    return f"{100 * value:.1f}%" if value is not None else "n/a"


def table(report: dict) -> str:
    lines = ["| measure | value |", "| --- | --- |"]
    round_ = report.get("round")
    if round_:
        lines += [
            f"| round | pool {round_['pool']}, {round_['labels']} new labels, {round_['holdout']} held-out |",
            f"| train job (reconcile + fetch + train + evaluate + publish) | {round_['round']['train_job_s']} s |",
            f"| of which training | {round_['round']['of_which_train_s']} s |",
            f"| of which held-out evaluation | {round_['round']['of_which_evaluate_s']} s |",
            f"| rank job ({round_['ranked_tasks']} tasks, import, switch) | {round_['round']['rank_job_s']} s "
            f"({round_['round']['rank_images_per_s']} images/s) |",
            f"| round close -> re-ranked queue | {round_['round']['close_to_ranked_s']} s |",
            f"| held-out PCK@0.2 initial -> trained | {_pct(round_['holdout_pck']['initial'])} -> "
            f"{_pct(round_['holdout_pck']['trained'])} |",
        ]
    hook = report.get("webhook")
    if hook:
        lines += [
            f"| webhook answer p50 / p99 / max ({hook['requests']} requests, {hook['clients']} clients) | "
            f"{hook['p50_ms']} / {hook['p99_ms']} / {hook['max_ms']} ms |"
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if args.torch_threads:
        # deferred on purpose: torch (~1.5 s to import) only for --torch-threads; --help and --skip-round never load it
        import torch

        torch.set_num_threads(args.torch_threads)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_round_"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch_threads": args.torch_threads or "default",
        }
    }
    server = None
    try:
        if not args.skip_round:
            url, token = args.label_studio_url, args.label_studio_token
            if not url:
                server = LabelStudioServer(work / "label_studio", files_root=SHARED).start()
                url, token = server.url, server.token
            report["round"] = bench_round(args, work, url, token)
        if args.webhooks:
            report["webhook"] = bench_webhook(args, work)
    finally:
        if server is not None:
            server.stop()
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    print()
    print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
