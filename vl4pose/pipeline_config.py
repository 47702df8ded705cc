"""How images become poses: :class:`PredictorConfig` and its command-line options, shared by the torch Predictor's
commands and the ONNX scorer (no torch here)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from vl4pose.data.sample import DEFAULT_MAX_PIXELS
from vl4pose.errors import ConfigError


@dataclass(frozen=True)
class PredictorConfig:
    """How images become poses.

    auto_box: without a person box, find the person first: a pass on the whole image, then up to ``box_passes - 1``
    passes around the previous estimate, on windows of ``find_padding`` x the found pose's box (wider than the
    final crop, so a pass that missed a limb sees it); an image stops once its window moves by at most
    ``box_tolerance`` window sides (centre shift, and log of the side's change). The final pass crops
    ``box_padding`` x the last pose box.
    flip: flip test on the final pass (mirrored crop averaged in; the person-finding passes are not flipped).
    scales: multi-scale test: the final crop's window side times each scale (the first, 1.0, is the frame of the
    result), every crop's heatmaps resampled into that frame and averaged; bone parameters of the first.
    batch_size: crops per forward pass. workers: image-decoding threads. max_pixels: largest image.
    device: ``auto``, ``cpu`` or ``cuda`` (None: ``VL4POSE_DEVICE``, default auto); the torch Predictor only.
    blazepose: a pretrained second opinion (:mod:`vl4pose.blazepose`, needs ``mediapipe``): its box starts the
    person finding, its left/right decides a whole-body mirror of the final heatmaps, and its landmarks join the
    refinement's candidates (not the likelihood's).
    """

    auto_box: bool = True
    box_passes: int = 2
    box_tolerance: float = 0.0
    """2 passes beat 1 by 1.3 points of PCK@0.2 on the automatic box (LSPET val, docs/RESULTS.md). Up to 6 passes
    until the window settles (``box_passes=6, box_tolerance=0.05``) add 1.5 points on val and 2.0 on test, but they are
    not the default: each pass starts from the previous pass's pose, so a batch's rounding can let a window settle
    elsewhere than a single image's (3 of 200 LSPET test windows, scores up to 0.09 apart, against none with 2
    passes), and ranking is about 17 % slower."""
    box_padding: float = 1.25
    find_padding: float = 1.6
    """Chosen on LSPET val (docs/RESULTS.md): 1.6 instead of 1.25 for the windows after the first pass, +2.15 points."""
    flip: bool = True
    scales: tuple[float, ...] = (1.0, 0.87)
    """Chosen on LSPET val (docs/RESULTS.md): +0.85 points of PCK@0.2 (GT box), +0.7 (automatic box) for a second
    flipped final pass; a third scale (1.15) adds 0.35 / 0.25 more but takes ranking below 25 images/s on 2 cores."""
    batch_size: int = 16
    workers: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    device: str | None = None
    blazepose: bool = False
    """Off by default (docs/RESULTS.md, "A pretrained second opinion"): on LSPET it lifts the automatic box's test
    PCK@0.2 above 62 %, but costs about 20 ms per image, lowers the failure AUROC, and needs ``mediapipe``."""

    def __post_init__(self) -> None:
        if self.box_passes < 1 or self.box_tolerance < 0:
            raise ConfigError(f"box_passes {self.box_passes} must be at least 1 and box_tolerance {self.box_tolerance} "
                              "at least 0, e.g. 6 and 0.05")
        if not self.scales or self.scales[0] != 1.0 or min(self.scales) <= 0:
            raise ConfigError(f"scales {self.scales} must start with 1.0 and be positive, e.g. (1.0, 0.87)")


def parse_scales(text: str) -> tuple[float, ...]:
    """``--scales 1,0.87`` -> (1.0, 0.87) (an argparse type: a bad value is a usage message, not a traceback)."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 1,0.87") from None


def add_pipeline_options(p: argparse.ArgumentParser) -> None:
    """The :class:`PredictorConfig` options of every command that analyses images (defaults: the product's)."""
    default = PredictorConfig()
    p.add_argument("--no-flip", dest="flip", action="store_false", help="no flip test on the final pass")
    p.add_argument("--box-passes", type=int, default=default.box_passes,
                   help=f"automatic box: at most this many person-finding passes before the final one (default "
                        f"{default.box_passes})")
    p.add_argument("--box-tolerance", type=float, default=default.box_tolerance,
                   help="automatic box: an image's person-finding stops once its window moves by at most this share "
                        f"of the window's side (default {default.box_tolerance}: every pass; `--box-passes 6 "
                        "--box-tolerance 0.05` finds people better, docs/RESULTS.md)")
    p.add_argument("--box-padding", type=float, default=default.box_padding,
                   help=f"automatic box: final crop = padding x the found pose's box (default {default.box_padding})")
    p.add_argument("--find-padding", type=float, default=default.find_padding,
                   help=f"automatic box: window of the person-finding passes after the first = padding x the found "
                        f"pose's box (default {default.find_padding})")
    p.add_argument("--scales", type=parse_scales, default=default.scales,
                   help="multi-scale test: the final crop's window side times each scale, heatmaps averaged; the "
                        f"first must be 1 (default {','.join(map(str, default.scales))}; 1 = single scale: faster, "
                        "the same score, a slightly worse pose)")
    p.add_argument("--blazepose", action="store_true",
                   help="a pretrained second opinion (MediaPipe BlazePose; `bash scripts/setup.sh --blazepose`): its "
                        "person box starts the person finding, its left/right corrects a mirrored pose, its landmarks join the "
                        "refinement's candidates (slower)")


def config_from_args(args: argparse.Namespace, **settings: object) -> PredictorConfig:
    """The :class:`PredictorConfig` of :func:`add_pipeline_options`' options, with ``settings`` (e.g. ``device``)."""
    return PredictorConfig(flip=args.flip, box_passes=args.box_passes, box_tolerance=args.box_tolerance,
                           box_padding=args.box_padding, find_padding=args.find_padding, scales=args.scales,
                           blazepose=args.blazepose, **settings)  # type: ignore[arg-type]
