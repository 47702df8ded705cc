"""Command-line options shared by several ``vl4pose`` commands, and the objects they build.

Every command module (``vl4pose/cli.py``'s own train / evaluate / predict, ``vl4pose/simulate/cli.py``,
``vl4pose/effort/run.py``, ...) takes its shared options from here, so none of them imports the command table
in :mod:`vl4pose.cli`.
"""

from __future__ import annotations

import argparse

from vl4pose.data import DATASETS, load_samples
from vl4pose.data.sample import Sample
from vl4pose.pipeline_config import add_pipeline_options, config_from_args
from vl4pose.predictor import Predictor


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


def add_predictor_options(p: argparse.ArgumentParser) -> None:
    """Inference settings of the Predictor (defaults: the product's): the pipeline's and the device."""
    add_pipeline_options(p)
    add_device_option(p)


def predictor_from_args(args: argparse.Namespace) -> Predictor:
    """The Predictor of ``--checkpoint`` with the options of :func:`add_predictor_options`."""
    return Predictor(args.checkpoint, config_from_args(args, device=args.device))
