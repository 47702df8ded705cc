"""``vl4pose simulate`` and ``vl4pose analyse-scores``: the active-learning experiment from the command line.

``simulate`` runs (or resumes) the protocol of :mod:`vl4pose.simulate.protocol` and writes
``results.json``, ``table.md``, ``curve.png`` and the failure/refinement tables (``failure.md``).
``analyse-scores`` produces the failure-detection and refinement figures for any checkpoint.
See docs/SIMULATION.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from vl4pose.checkpoint import load_checkpoint
from vl4pose.cli_options import add_device_option
from vl4pose.data import DATASETS, dataset_skeleton, load_samples
from vl4pose.data.crops import CropCache
from vl4pose.errors import DataError
from vl4pose.simulate.analysis import analyse_model, format_analysis
from vl4pose.simulate.config import ALL_STRATEGIES, VARIANTS, SimulationConfig, SimulationData
from vl4pose.simulate.protocol import Simulation
from vl4pose.strategies import get_strategies

log = logging.getLogger(__name__)


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=DATASETS, default="lspet")
    p.add_argument("--data", required=True, help="dataset folder or file (LSPET: the folder with joints.mat)")
    p.add_argument("--split-file", help="split file (default: <data>/split.json)")
    p.add_argument("--skeleton", help="skeleton of a Label Studio export (default lsp14)")
    p.add_argument("--images", help="image folder for COCO and Label Studio exports")


def load_simulation_data(args: argparse.Namespace) -> SimulationData:
    """Pool, validation and test samples named by the options (``--limit-*`` keep the first N)."""
    skeleton = dataset_skeleton(args.dataset, args.skeleton)

    def split(name: str, limit: int | None) -> list:
        samples = load_samples(args.dataset, args.data, name, args.split_file, args.skeleton, args.images)
        return samples[:limit] if limit else samples

    source = {"dataset": args.dataset, "data": str(Path(args.data).resolve()),
              "split_file": str(Path(args.split_file).resolve()) if args.split_file else None,
              "splits": [args.pool_split, args.val_split, args.test_split], "skeleton": skeleton.name,
              "limits": [args.limit_pool, args.limit_val, args.limit_test]}
    return SimulationData(skeleton, split(args.pool_split, args.limit_pool), split(args.val_split, args.limit_val),
                          split(args.test_split, args.limit_test), source)


def simulate_options(p: argparse.ArgumentParser) -> None:
    _data_options(p)
    defaults = SimulationConfig()
    p.add_argument("--pool-split", default="pool", help="unlabelled pool split (default pool)")
    p.add_argument("--val-split", default="val", help="validation split: model selection, calibration")
    p.add_argument("--test-split", default="test", help="split the accuracy is reported on")
    p.add_argument("--limit-pool", type=int, help="use only the first N pool images (smoke runs)")
    p.add_argument("--limit-val", type=int)
    p.add_argument("--limit-test", type=int)
    p.add_argument("--strategies", nargs="+", default=list(defaults.strategies), help="strategy names")
    p.add_argument("--initial", type=int, default=defaults.initial, help="random initial labelled images")
    p.add_argument("--budget", type=int, default=defaults.budget, help="images added per round")
    p.add_argument("--rounds", type=int, default=defaults.rounds, help="acquisition rounds after round 0")
    p.add_argument("--seeds", type=int, nargs="+", default=list(defaults.seeds))
    p.add_argument("--preset", default=defaults.preset, help="model preset: cpu, paper, tiny")
    p.add_argument("--epochs", type=int, default=defaults.epochs,
                   help=f"epochs per fine-tuning round; with a time budget only a cap (default {defaults.epochs})")
    p.add_argument("--initial-epochs", type=int, default=defaults.initial_epochs,
                   help=f"epochs of the round-0 model, trained from scratch (0 = --epochs; default "
                        f"{defaults.initial_epochs}, a cap with a time budget)")
    p.add_argument("--time-budget", type=float, default=defaults.time_budget_min, metavar="MIN",
                   help=f"wall-clock minutes per fine-tuning round's training (default {defaults.time_budget_min}; "
                        "the schedule follows the share used, the run ends on time)")
    p.add_argument("--initial-time-budget", type=float, default=defaults.initial_time_budget_min, metavar="MIN",
                   help=f"wall-clock minutes of each round-0 training (default {defaults.initial_time_budget_min})")
    p.add_argument("--no-time-budget", action="store_true", help="train fixed epochs (--epochs, --initial-epochs)")
    p.add_argument("--steps-per-epoch", type=int, help="cap on steps per epoch")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--pool-subset", type=int, default=0,
                   help="score only N random unlabelled images per round (0 = the whole pool)")
    p.add_argument("--inference-batch", type=int, default=defaults.inference_batch)
    p.add_argument("--no-analysis", action="store_true", help="skip the failure-detection and refinement tables")
    p.add_argument("--out", required=True, help="output folder; rerun the same command to resume")
    add_device_option(p)


def run_simulate(args: argparse.Namespace) -> int:
    if args.device:
        os.environ["VL4POSE_DEVICE"] = args.device  # every Trainer and Predictor of the run resolves it
    config = SimulationConfig(
        strategies=tuple(args.strategies), initial=args.initial, budget=args.budget, rounds=args.rounds,
        seeds=tuple(args.seeds), preset=args.preset, epochs=args.epochs, initial_epochs=args.initial_epochs,
        steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, lr=args.lr,
        warmup_steps=args.warmup_steps, pool_subset=args.pool_subset, inference_batch=args.inference_batch,
        analysis=not args.no_analysis, time_budget_min=None if args.no_time_budget else args.time_budget,
        initial_time_budget_min=None if args.no_time_budget else args.initial_time_budget)
    Simulation(config, load_simulation_data(args), args.out).run()
    out = Path(args.out)
    print((out / "table.md").read_text())
    if (out / "failure.md").is_file():
        print((out / "failure.md").read_text())
    print(f"results: {out / 'results.json'}, curve: {out / 'curve.png'}")
    return 0


def analyse_options(p: argparse.ArgumentParser) -> None:
    _data_options(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint (or run) folder with the strategies' heads")
    p.add_argument("--split", default="test", help="split to analyse (default test)")
    p.add_argument("--labelled-split", help="the checkpoint's training split, for Core-Set's distance score")
    p.add_argument("--limit", type=int, help="use only the first N images of each split")
    p.add_argument("--strategies", nargs="+", help="scores to compare (default: all the checkpoint supports)")
    p.add_argument("--inference-batch", type=int, default=32)
    p.add_argument("--temperature", type=float, help="override the checkpoint's calibrated softmax temperature")
    p.add_argument("--max-candidates", type=int, help="override the candidates per keypoint (K)")
    p.add_argument("--json", action="store_true")


def run_analyse_scores(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    overrides = {k: v for k, v in {"temperature": args.temperature, "max_candidates": args.max_candidates}.items()
                 if v is not None}
    ckpt.calibration = replace(ckpt.calibration, **overrides)
    if args.strategies:
        strategies = get_strategies(args.strategies)
    else:
        strategies = [s for s in get_strategies((*ALL_STRATEGIES, *VARIANTS)) if all(h in ckpt.heads for h in s.heads)]
    size = ckpt.model_config.input_size

    def cache(split: str) -> CropCache:
        samples = load_samples(args.dataset, args.data, split, args.split_file, args.skeleton, args.images)
        made = CropCache(samples[: args.limit] if args.limit else samples, size, margin=1.0)
        if not len(made):
            raise DataError(f"no readable images in split {split!r}")
        return made

    labelled = None
    if args.labelled_split:
        train = cache(args.labelled_split)
        labelled = (train, np.arange(len(train)))
    report = analyse_model(ckpt, cache(args.split), strategies, labelled, args.inference_batch)
    report["calibration"] = {"temperature": ckpt.calibration.temperature, "max_candidates": ckpt.calibration.max_candidates}
    if any(s.uses_labelled for s in strategies) and labelled is None:
        report["left_out"] = "coreset (pass --labelled-split: its score is the distance to the labelled set)"
    print(json.dumps(report, indent=2) if args.json else format_analysis(report))
    return 0
