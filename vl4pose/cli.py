"""The ``vl4pose`` command line: train, evaluate, predict (and the commands other modules register)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vl4pose.data import DATASETS, dataset_skeleton, load_samples
from vl4pose.data.sample import Sample
from vl4pose.errors import VL4PoseError

log = logging.getLogger("vl4pose")

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, configure: Callable[[argparse.ArgumentParser], None]):
    """Register a sub-command: ``configure`` adds its options, the decorated function runs it."""
    def wrap(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = (configure, run)
        return run
    return wrap


def add_data_options(parser: argparse.ArgumentParser, split: str | None) -> None:
    parser.add_argument("--dataset", choices=DATASETS, required=True)
    parser.add_argument("--data", required=True, help="dataset folder or file (see README)")
    parser.add_argument("--split", default=split, help="split name (split.json for LSP, train/val for COCO)")
    parser.add_argument("--split-file", help="split file (default: <data>/split.json)")
    parser.add_argument("--skeleton", help="skeleton of a Label Studio export (default lsp14)")
    parser.add_argument("--images", help="image folder for COCO and Label Studio exports")
    parser.add_argument("--limit", type=int, help="use only the first N samples (smoke runs)")
    parser.add_argument("--skip", type=int, default=0,
                        help="leave out the first N samples of the split (e.g. the LSPET demo's 200 task images)")


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                        help="where the networks run (default: VL4POSE_DEVICE, else auto = CUDA when available)")


def load_from_args(args: argparse.Namespace, split: str | None, skip: bool = True) -> list[Sample]:
    """The samples of ``split`` after ``--skip`` (unless ``skip`` is False: a validation split), at most ``--limit``."""
    samples = load_samples(args.dataset, args.data, split, args.split_file, args.skeleton, args.images)
    if skip:
        samples = samples[getattr(args, "skip", 0):]
    return samples[: args.limit] if args.limit else samples


def _train_options(p: argparse.ArgumentParser) -> None:
    add_data_options(p, "pool")
    p.add_argument("--val-split", default="val", help="validation split; 'none' holds out --val-fraction")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--preset", default="cpu", help="model preset: cpu (default), paper, tiny")
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
    p.add_argument("--heads", nargs="*", default=[], help="extra auxiliary heads (acquisition baselines)")
    p.add_argument("--seed", type=int, default=0)
    add_device_option(p)


@command("train", _train_options)
def run_train(args: argparse.Namespace) -> int:
    from vl4pose.checkpoint import load_checkpoint
    from vl4pose.models import preset
    from vl4pose.train import TrainConfig, Trainer

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
                                   "time_budget_s": budget, "accumulate": args.accumulate}.items()
                 if v is not None}
    config = replace(TrainConfig(), seed=args.seed, heads=tuple(args.heads), **overrides)
    init = load_checkpoint(args.init) if args.init else None
    model_config = init.model_config if init else preset(args.preset)
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


def add_predictor_options(p: argparse.ArgumentParser) -> None:
    """Inference settings of the Predictor (defaults: the product's)."""
    from vl4pose.predictor import PredictorConfig

    default = PredictorConfig()
    p.add_argument("--no-flip", dest="flip", action="store_false", help="no flip test on the final pass")
    p.add_argument("--box-passes", type=int, default=default.box_passes,
                   help=f"person-finding passes before the final one (automatic box; default {default.box_passes})")
    p.add_argument("--box-padding", type=float, default=default.box_padding,
                   help=f"automatic person window = padding x the found pose's box (default {default.box_padding})")
    add_device_option(p)


def predictor_from_args(args: argparse.Namespace):
    from vl4pose.predictor import Predictor, PredictorConfig

    config = PredictorConfig(flip=args.flip, box_passes=args.box_passes, box_padding=args.box_padding,
                             device=args.device)
    return Predictor(args.checkpoint, config)


@command("evaluate", _evaluate_options)
def run_evaluate(args: argparse.Namespace) -> int:
    from vl4pose.evaluate import evaluate, format_report

    report = evaluate(predictor_from_args(args), load_from_args(args, args.split), args.box)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _predict_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"), help="person box for every image")
    p.add_argument("--json", action="store_true")
    add_predictor_options(p)


@command("predict", _predict_options)
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


def build_parser() -> argparse.ArgumentParser:
    _register_optional_commands()
    parser = argparse.ArgumentParser(prog="vl4pose", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (configure, _) in COMMANDS.items():
        configure(sub.add_parser(name))
    return parser


def _register_optional_commands() -> None:
    """Import modules that register further sub-commands (simulate, bench, ONNX, effort, failures) when they exist."""
    import importlib

    for module in ("vl4pose.simulate", "vl4pose.bench", "vl4pose.onnx_export", "vl4pose.onnx_bench",
                   "vl4pose.effort_run", "vl4pose.failures_cli"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


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
