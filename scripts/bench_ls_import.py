"""Label Studio's prediction import as a project's prediction table grows: seconds per ``import_chunk`` call.

Starts a throw-away Label Studio 1.23.2 the way the stack does (:class:`stack.labelstudio.LabelStudioServer`), with
its batched prediction import (:data:`stack.labelstudio.BATCHED_PREDICTION_IMPORT`) on, then again off; each run
imports ``--tasks`` tasks and then ``--versions`` model versions' predictions (one per task, the coordinator's
format: 14 keypoints of ``lsp14``) in chunks of ``--chunk``, as a ranking does, then deletes version ``v0`` in one
request, as pruning does. Prints JSON and a table::

    .venv/bin/python scripts/bench_ls_import.py --tasks 6000 --out docs/results/bench_ls_import.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from backend.services.labelstudio import LabelStudio  # noqa: E402
from common.labelconfig import parse_label_config  # noqa: E402
from stack.labelstudio import LabelStudioServer  # noqa: E402
from vl4pose.data.labelstudio import keypoints_to_results  # noqa: E402

log = logging.getLogger("bench_ls_import")


def run(batched: bool, tasks: int, versions: int, chunk: int, work: Path) -> dict:
    """One Label Studio: ``tasks`` tasks, then ``versions`` x ``tasks`` predictions; seconds of each import call."""
    config = (REPO / "annotation_configs" / "lsp14.xml").read_text()
    parsed = parse_label_config(config)
    labels = list(parsed.labels)
    result = keypoints_to_results(np.full((len(labels), 2), 50.0), (200, 200), labels, np.ones(len(labels), bool),
                                  np.ones(len(labels)), parsed.keypoint_control, parsed.image_name)
    with LabelStudioServer(work / ("on" if batched else "off"), batched_prediction_import=batched) as server:
        ls = LabelStudio(server.url, server.token, timeout=1800)
        project = ls.create_project("import benchmark", config)
        for start in range(0, tasks, 1000):
            ls.import_tasks(project, [{"image": f"/data/local-files/?d=t{i}.jpg"}
                                      for i in range(start, min(start + 1000, tasks))])
        ids = sorted(t["id"] for t in ls.list_tasks(project))
        seconds: dict[str, list[float]] = {}
        for v in range(versions):
            seconds[f"v{v}"] = []
            for start in range(0, len(ids), chunk):
                began = time.perf_counter()
                ls.import_predictions(project, [{"task": t, "result": result, "score": 0.5, "model_version": f"v{v}"}
                                                for t in ids[start:start + chunk]])
                seconds[f"v{v}"].append(round(time.perf_counter() - began, 3))
            log.info("batched %s: v%d imported in %.1f s", batched, v, sum(seconds[f"v{v}"]))
        began = time.perf_counter()
        deleted = ls.delete_predictions(project, "v0")  # what pruning sends: one request for a whole version
        delete_s = round(time.perf_counter() - began, 2)
        log.info("batched %s: deleting v0's %d predictions took %.1f s", batched, deleted, delete_s)
        return {"batched_import": batched, "tasks": len(ids), "chunk": chunk, "seconds_per_call": seconds,
                "delete_version": {"deleted": deleted, "seconds": delete_s}}


def table(runs: list[dict]) -> str:
    rows = ["| batched import | version (predictions already there) | calls | first call s | last call s | total s |",
            "| --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        for v, (name, calls) in enumerate(r["seconds_per_call"].items()):
            rows.append(f"| {'on' if r['batched_import'] else 'off'} | {name} ({v * r['tasks']:,}) | {len(calls)} | "
                        f"{calls[0]:.2f} | {calls[-1]:.2f} | {sum(calls):.1f} |")
    rows += ["", "| batched import | predictions of v0 deleted in one request | seconds |", "| --- | --- | --- |"]
    rows += [f"| {'on' if r['batched_import'] else 'off'} | {r['delete_version']['deleted']:,} | "
             f"{r['delete_version']['seconds']} |" for r in runs]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=6000, help="tasks of the project (6000)")
    p.add_argument("--versions", type=int, default=2, help="model versions imported one after the other (2)")
    p.add_argument("--chunk", type=int, default=500, help="predictions per import call (the coordinator's 500)")
    p.add_argument("--batched", choices=("both", "on", "off"), default="both",
                   help="Label Studio's batched prediction import: both runs (on, then off), or one")
    p.add_argument("--out", type=Path, help="write the JSON here too")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.batched]
        runs = [run(batched, args.tasks, args.versions, args.chunk, Path(tmp)) for batched in modes]
    text = json.dumps({"runs": runs}, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n\n" + table(runs) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
