"""``python -m stack start|stop|status``: the whole system on 127.0.0.1 (what ``scripts/start.sh`` and
``scripts/stop.sh`` run). ``python -m stack.annotator`` is the simulated annotator."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from stack import services
from stack.config import StackError
from stack.start import StartOptions, describe, load_state, stack_config, start, storage_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start everything and link the demo (or --data) project")
    start.add_argument("--data", type=Path, help="your images folder, LSP folder, COCO file or Label Studio export")
    start.add_argument("--dataset", default="folder", help="lspet, lsp, coco, labelstudio or folder (default)")
    start.add_argument("--split", help="split of the data set (LSP split.json name, COCO train/val)")
    start.add_argument("--image-dir", type=Path, help="images of a COCO file or Label Studio export")
    start.add_argument("--skeleton", help="lsp14 (default), mpii16, coco17 or hand21")
    start.add_argument("--labels", default="annotations", choices=["annotations", "ground-truth", "ignore"],
                       help="what existing labels of --data become (default: annotations)")
    start.add_argument("--limit", type=int, help="import at most this many images")
    start.add_argument("--checkpoint", type=Path, help="a model checkpoint to start from (round 0)")
    start.add_argument("--title", help="Label Studio project title")
    start.add_argument("--round-budget", type=int, help="labelled tasks per round")
    start.add_argument("--json", action="store_true", help="print the summary as JSON at the end")
    sub.add_parser("stop", help="stop every service")
    status = sub.add_parser("status", help="services, URLs and login")
    status.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        if args.command == "start":
            options = StartOptions(args.data, args.dataset, args.split, args.image_dir, args.skeleton, args.labels,
                                   args.limit, args.checkpoint, args.title, args.round_budget)
            summary = start(options)
            if args.json:
                print(json.dumps({k: v for k, v in summary.items() if k not in ("text", "api_token")}, indent=2))
            return 0
        storage = storage_dir()
        state = load_state(storage)
        if not state:
            print(f"nothing was started from {storage}")
            return 0
        config = stack_config(storage, state)
        if args.command == "stop":
            stopped = services.stop_all(config)
            print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
            return 0
        report = services.status(config)
        active = state.get("projects", {}).get(state.get("active", ""))
        if args.json:
            print(json.dumps({"services": report, "project": active}, indent=2))
        else:
            for name, item in report.items():
                where = f"port {item['port']}" if item["port"] else ""
                state_text = "stopped" if item["pid"] is None else f"pid {item['pid']}"
                answering = {True: "answering", False: "NOT answering", None: ""}[item["answering"]]
                print(f"{name:12s} {state_text:12s} {where:10s} {answering}")
            if active:
                print(describe(config, active)["text"])
        return 0
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
