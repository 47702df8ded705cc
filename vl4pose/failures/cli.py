"""``vl4pose failures``: the product-path failure-detection table (:mod:`vl4pose.failures.report`) for one checkpoint
(``--checkpoint``) or for a finished ``vl4pose simulate`` folder (``--run``: every seed's round-0 model and each
strategy's last finished round, read from ``results.json``; the folder is only read, never written).

Output: a Markdown table (or ``--json``); ``--out FILE`` also writes the JSON there.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np

from vl4pose.cli_options import add_device_option
from vl4pose.data import DATASETS, load_samples
from vl4pose.errors import ConfigError, DataError
from vl4pose.failures.report import SERVED, FailureConfig, FeaturePredictor, product_path_report
from vl4pose.predictor import PredictorConfig
from vl4pose.simulate.config import ALL_STRATEGIES, VARIANTS, json_safe
from vl4pose.strategies import STRATEGIES, get_strategies

log = logging.getLogger(__name__)


def default_strategies(heads: set[str]) -> list[str]:
    """Every per-image strategy the checkpoint's heads support. Left out: ``coreset`` (needs the labelled set)
    and the joint VL4Pose variants (``vl4pose_kcentre``, ``vl4pose_mix``), whose per-image score is plain VL4Pose's."""
    return [n for n in (*ALL_STRATEGIES, *VARIANTS) if not STRATEGIES[n].joint and all(h in heads for h in STRATEGIES[n].heads)]


def checkpoint_report(path: str | Path, samples: list, args: argparse.Namespace, config: FailureConfig) -> dict:
    """:func:`product_path_report` of one checkpoint with the product's Predictor settings."""
    predictor = FeaturePredictor(path, PredictorConfig(device=args.device))
    names = args.strategies or default_strategies(set(predictor.checkpoint.heads))
    report = product_path_report(predictor, samples, get_strategies(names), config)
    report["checkpoint"] = str(path)
    return report


def run_models(run: Path) -> tuple[dict, dict[int, dict[str, str]]]:
    """The run's data description and {seed: {"round0" or strategy: checkpoint folder}} of its finished rounds
    (a strategy's model is its highest finished round)."""
    results = run / "results.json"
    if not results.is_file():
        raise DataError(f"{results} does not exist: the run has no finished round yet (or --run is not a "
                        "vl4pose simulate folder)")
    stored = json.loads(results.read_text())
    models: dict[int, dict[str, tuple[int, str]]] = {}
    for record in stored.get("records", []):
        seed, name = int(record["seed"]), "round0" if record["round"] == 0 else record["strategy"]
        best = models.setdefault(seed, {}).get(name)
        if best is None or record["round"] > best[0]:
            models[seed][name] = (int(record["round"]), str(run / record["checkpoint"]))
    return stored["data"], {seed: {name: path for name, (_, path) in sorted(m.items(), key=lambda kv: kv[0] != "round0")}
                            for seed, m in sorted(models.items())}


def failures_options(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="one checkpoint folder (e.g. models/lsp14-starter)")
    which.add_argument("--run", help="a vl4pose simulate folder: its seeds' round-0 and final models (read only)")
    p.add_argument("--dataset", choices=DATASETS, help="default: lspet, or the run's")
    p.add_argument("--data", help="dataset folder (default: the run's; required with --checkpoint)")
    p.add_argument("--split", help="split to judge on (default: test, or the run's test split)")
    p.add_argument("--split-file", help="split file (default: <data>/split.json, or the run's)")
    p.add_argument("--limit", type=int, help="only the first N images of the split")
    p.add_argument("--strategies", nargs="+", help="scores to compare (default: every per-image score the heads allow)")
    defaults = FailureConfig()
    p.add_argument("--resamples", type=int, default=defaults.resamples, help="bootstrap resamples of the images")
    p.add_argument("--seed", type=int, default=defaults.seed, help="bootstrap seed")
    p.add_argument("--chunk", type=int, default=defaults.chunk, help="images per Predictor call")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--out", help="also write the JSON to this file (never inside --run)")
    add_device_option(p)


def _ci(entry: dict, key: str = "auroc", low: str = "low", high: str = "high") -> str:
    if entry[key] is None or not math.isfinite(entry[key]):
        return "–"
    return f"{entry[key]:.3f} [{entry[low]:.3f}, {entry[high]:.3f}]"


def format_report(report: dict) -> str:
    """Markdown table of one :func:`product_path_report`."""
    p, c = report["predictor"], report["config"]
    lines = [f"checkpoint {report.get('checkpoint', '?')}: {report['images']} images ({report['unreadable']} unreadable), "
             f"{report['evaluated']} with a torso; automatic box (Predictor defaults: box_passes {p['box_passes']}, "
             f"find_padding {p.get('find_padding', 1.25)}, box_padding {p['box_padding']}, flip {p['flip']}, "
             f"scales {tuple(p.get('scales', (1.0,)))})",
             f"failed (per-image PCK@{c['alpha']} < {c['fail_below']}): raw pose {report['failures']['raw']}, served "
             f"refined pose {report['failures']['refined']}; PCK@0.2 raw {report['pck@0.2']:.4f}, refined "
             f"{report['pck@0.2_refined']:.4f}",
             f"intervals: {c['resamples']} bootstrap resamples of the images (seed {c['seed']}), {100 * c['level']:.0f} % "
             "percentile; 'best − score' is paired (same resamples)", "",
             "| score | AUROC, raw-pose failures [95 % CI] | best − score [95 % CI] | AUROC, refined-pose failures [95 % CI] |",
             "| --- | ---: | ---: | ---: |"]
    for name, entry in report["failure_auroc"].items():
        label = f"**{name}**" if name == report["best"] else name
        diff = "best" if name == report["best"] else _ci(entry, "diff_to_best", "diff_low", "diff_high")
        lines.append(f"| {label} | {_ci(entry)} | {diff} | {_ci(report['failure_auroc_refined'][name])} |")
    lines.append(f"\n{SERVED}: minus the calibrated likelihood score the coordinator stores (its queue order).")
    return "\n".join(lines)


def format_run(result: dict) -> str:
    """Mean ± std over seeds of each score's AUROC per model, then every seed's table with its intervals."""
    models = list(dict.fromkeys(m for seed in result["models"].values() for m in seed))
    scores = list(dict.fromkeys(s for seed in result["models"].values() for r in seed.values() for s in r["failure_auroc"]))
    lines = [f"## Failure detection on the product path (automatic box): AUROC for raw-pose failures, mean ± std over "
             f"{len(result['models'])} seed(s)", "",
             "| score | " + " | ".join("round-0 model" if m == "round0" else f"{m} final" for m in models) + " |",
             "| --- | " + " | ".join("---:" for _ in models) + " |"]
    for score in scores:
        cells = []
        for m in models:
            values = [seed[m]["failure_auroc"][score]["auroc"] for seed in result["models"].values()
                      if m in seed and score in seed[m]["failure_auroc"]]
            values = [v for v in values if v is not None and math.isfinite(v)]
            cells.append(f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"
                         if values else "–")
        lines.append(f"| {score} | " + " | ".join(cells) + " |")
    for seed, reports in result["models"].items():
        for model, report in reports.items():
            lines += ["", f"### seed {seed}, {model}", "", format_report(report)]
    return "\n".join(lines)


def run_failures(args: argparse.Namespace) -> int:
    config = FailureConfig(resamples=args.resamples, seed=args.seed, chunk=args.chunk)
    if args.run:
        run = Path(args.run)
        data, models = run_models(run)
        if args.out and run.resolve() in Path(args.out).resolve().parents:
            raise ConfigError(f"--out {args.out} is inside the run folder {run}; write it elsewhere")
        dataset, folder = args.dataset or data["dataset"], args.data or data["data"]
        split, split_file = args.split or data["splits"][2], args.split_file or data.get("split_file")
        limit = args.limit or (data.get("limits") or [None] * 3)[2]
    else:
        if not args.data:
            raise ConfigError("--checkpoint needs --data (the dataset folder, e.g. ../shared/data/lspet)")
        dataset, folder, split, split_file, limit = args.dataset or "lspet", args.data, args.split or "test", \
            args.split_file, args.limit
    samples = load_samples(dataset, folder, split, split_file)
    samples = samples[:limit] if limit else samples
    if args.run:
        result: dict = {"run": str(run), "split": split, "models": {}}
        for seed, paths in models.items():
            for name, path in paths.items():
                log.info("seed %d, %s: %s", seed, name, path)
                result["models"].setdefault(seed, {})[name] = checkpoint_report(path, samples, args, config)
        text = format_run(result)
    else:
        result = checkpoint_report(args.checkpoint, samples, args, config)
        result["split"] = split
        text = format_report(result)
    result = json_safe(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2) if args.json else text)
    return 0
