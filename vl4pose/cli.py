"""The ``vl4pose`` command line: train, evaluate, predict (and the commands other modules define).

Every command is in one table (:data:`COMMANDS`). Train, evaluate and predict are defined here, the others with
their code (``vl4pose/simulate/cli.py``, ``vl4pose/bench.py``, ...); the options several commands share are in
:mod:`vl4pose.cli_options`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from vl4pose import bench
from vl4pose.checkpoint import load_checkpoint
from vl4pose.cli_options import (add_data_options, add_device_option, add_predictor_options, load_from_args,
                                 predictor_from_args)
from vl4pose.data import dataset_skeleton
from vl4pose.device import PRECISIONS
from vl4pose.effort import run as effort_run
from vl4pose.errors import ConfigError, VL4PoseError
from vl4pose.evaluate import evaluate, format_report
from vl4pose.failures import cli as failures_cli
from vl4pose.models import parse_model_overrides, preset
from vl4pose.onnx import bench as onnx_bench
from vl4pose.onnx import export as onnx_export
from vl4pose.onnx import quantize as onnx_quantize
from vl4pose.simulate import cli as simulate_cli
from vl4pose.train import TrainConfig, Trainer

log = logging.getLogger("vl4pose")

Command = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
"""(add the command's options to its parser, run it with the parsed arguments and return the exit status)."""


def _train_options(p: argparse.ArgumentParser) -> None:
    add_data_options(p, "pool")
    p.add_argument("--val-split", default="val", help="validation split; 'none' holds out --val-fraction")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--preset", default="cpu", help="model preset: cpu (default), paper, tiny")
    p.add_argument("--model", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override the preset's network shape, e.g. --model input_size=192 stacks=2 (keys: "
                        "stacks, channels, input_size, depth, aux_channels, aux_hidden, sigma)")
    p.add_argument("--out", required=True, help="run folder (checkpoint in OUT/best)")
    p.add_argument("--init", help="checkpoint to fine-tune from")
    p.add_argument("--epochs", type=int, help="epochs (default 18); with --time-budget only a cap")
    p.add_argument("--time-budget", type=float, metavar="MIN",
                   help="end on time after MIN minutes of wall clock, with a finished learning-rate schedule")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--aux-lr", type=float)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--accumulate", type=int, help="micro-batches per step, gradients summed (default 1); "
                   "under torchrun each process splits its share of the batch this way")
    p.add_argument("--precision", choices=PRECISIONS, help="trunk precision in training: auto (default: bf16 on CUDA "
                   "and on CPUs with native bf16), fp32, bf16")
    p.add_argument("--heads", nargs="*", default=[], help="extra auxiliary heads (acquisition baselines)")
    p.add_argument("--seed", type=int, default=0)
    add_device_option(p)


def run_train(args: argparse.Namespace) -> int:
    skeleton = dataset_skeleton(args.dataset, args.skeleton)
    train = load_from_args(args, args.split)
    if args.val_split and args.val_split != "none":
        val = load_from_args(args, args.val_split, skip=False)
    else:
        order = np.random.default_rng(args.seed).permutation(len(train))
        cut = max(1, int(len(train) * args.val_fraction))
        val, train = [train[i] for i in order[:cut]], [train[i] for i in order[cut:]]
    budget = args.time_budget * 60.0 if args.time_budget is not None else None
    epochs = args.epochs if args.epochs is not None else (1000 if budget else None)
    overrides = {k: v for k, v in {"epochs": epochs, "batch_size": args.batch_size, "lr": args.lr,
                                   "aux_lr": args.aux_lr, "steps_per_epoch": args.steps_per_epoch,
                                   "time_budget_s": budget, "accumulate": args.accumulate,
                                   "precision": args.precision}.items()
                 if v is not None}
    config = replace(TrainConfig(), seed=args.seed, heads=tuple(args.heads), **overrides)
    if args.init and args.model:
        raise ConfigError("--model changes a new network's shape; a fine-tuned network keeps --init's shape: "
                          "leave out one of the two")
    init = load_checkpoint(args.init) if args.init else None
    model_config = init.model_config if init else preset(args.preset, **parse_model_overrides(args.model))
    trainer = Trainer(model_config, skeleton, config, args.out, init_from=init, device=args.device)
    log.info("training %s on %d samples, validating on %d, model %s", skeleton.name, len(train), len(val), model_config)
    best = trainer.fit(train, val)
    if not trainer.dist.is_main:
        return 0  # under torchrun rank 0 prints the summary
    summary = {"checkpoint": str(best.path), **{k: v for k, v in best.metrics.get("calibration", {}).items()
                                                if not isinstance(v, dict)}}
    print(json.dumps(summary, indent=2))
    return 0


def _evaluate_options(p: argparse.ArgumentParser) -> None:
    add_data_options(p, "test")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--box", choices=["gt", "auto"], default="gt",
                   help="crop around the annotated person (benchmark) or find it like the product does")
    p.add_argument("--json", action="store_true", help="print machine-readable results")
    add_predictor_options(p)


def run_evaluate(args: argparse.Namespace) -> int:
    report = evaluate(predictor_from_args(args), load_from_args(args, args.split), args.box)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _predict_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"), help="person box for every image")
    p.add_argument("--json", action="store_true")
    add_predictor_options(p)


def run_predict(args: argparse.Namespace) -> int:
    predictor = predictor_from_args(args)
    boxes = [np.array(args.box)] * len(args.images) if args.box else None
    results = predictor.predict_batch(args.images, boxes)
    out = [{"image": image, **({"error": str(r)} if isinstance(r, Exception) else r.to_dict())}
           for image, r in zip(args.images, results)]
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for item in out:
            detail = item.get("error") or f"score {item['score']:.3f} log-likelihood {item['log_likelihood']:.2f}"
            print(f"{item['image']}: {detail}")
    return 1 if any("error" in item for item in out) else 0


COMMANDS: dict[str, Command] = {
    "train": (_train_options, run_train),
    "evaluate": (_evaluate_options, run_evaluate),
    "predict": (_predict_options, run_predict),
    "simulate": (simulate_cli.simulate_options, simulate_cli.run_simulate),
    "analyse-scores": (simulate_cli.analyse_options, simulate_cli.run_analyse_scores),
    "bench": (bench.bench_options, bench.run_bench_command),
    "export-onnx": (onnx_export.export_options, onnx_export.run_export),
    "quantize-onnx": (onnx_quantize.quantize_options, onnx_quantize.run_quantize),
    "bench-onnx": (onnx_bench.bench_onnx_options, onnx_bench.run_command),
    "effort": (effort_run.effort_options, effort_run.run_effort),
    "failures": (failures_cli.failures_options, failures_cli.run_failures),
}
"""Every ``vl4pose`` command, in the order ``vl4pose --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vl4pose", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (configure, _) in COMMANDS.items():
        configure(sub.add_parser(name))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return COMMANDS[args.command][1](args)
    except VL4PoseError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; run the same command again to resume where it stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
