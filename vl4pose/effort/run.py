"""``vl4pose effort``: the simulated annotator (:mod:`vl4pose.effort.annotator`) on real images through the product's
path.

Each image goes through :meth:`PosePipeline.analyse` with no person box (the automatic box, as the ML backend
serves a task) and :meth:`PosePipeline.resolve` without clicks (the served suggestion: refined pose, raw pose under
``-raw``, keypoints with ``placed``; ``--box gt`` instead crops around the annotated person, a diagnosis); the
interactive mode calls :func:`vl4pose.interactive.resolve_clicked` after each click (clamps, swapped twins, the
crop re-framed around a click outside it), as ``ml_backend/predictions.py`` does for an interactive ``/predict``.
Tolerances are fractions of the torso size of :func:`vl4pose.metrics.torso_size` (the PCK@0.2 normaliser); images
without it are skipped, as PCK skips them.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from vl4pose.atomic import write_atomic
from vl4pose.cli_options import add_data_options, add_predictor_options, load_from_args, predictor_from_args
from vl4pose.data.sample import ImageSource, Sample, box_from_keypoints
from vl4pose.crop import apply_affine
from vl4pose.effort.annotator import EffortTally, Resolver, candidate_reach, format_effort, image_effort
from vl4pose.errors import ImageError
from vl4pose.interactive import REFRAME_RULES, ClickConfig, resolve_clicked
from vl4pose.metrics import torso_size
from vl4pose.pipeline import Analysis, PosePipeline
from vl4pose.postprocess import find_candidates

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EffortConfig:
    """tolerances: fractions of the torso size; chunk: images analysed per batch (memory: about 0.25 MB of
    heatmaps per image); interactive: run mode (c) (the re-solves); box: ``auto`` finds the person as the ML
    backend does (the product's path), ``gt`` crops around the annotated person (a diagnosis of the automatic
    box's share of the effort)."""

    tolerances: tuple[float, ...] = (0.2, 0.1)
    chunk: int = 16
    interactive: bool = True
    box: str = "auto"
    clicks: ClickConfig = ClickConfig()


def resolver_for(pipeline: PosePipeline, analysis: Analysis, image: ImageSource | None,
                 clicks: ClickConfig = ClickConfig()) -> Resolver:
    """The interactive re-solve of one analysed image: clamped {index: (x, y) image pixels} -> (refined (K, 2),
    placed (K,)), exactly :func:`vl4pose.interactive.resolve_clicked` as the ML backend calls it (``image``: None
    never re-frames, as for an annotator's own person box)."""
    reanalyse = (lambda box: pipeline.analyse(image, box)) if image is not None else None

    def resolve(clamped):
        prediction = resolve_clicked(pipeline, analysis, dict(clamped), clicks, reanalyse)
        return prediction.refined, prediction.placed
    return resolve


def candidates_in_image(pipeline: PosePipeline, analysis: Analysis) -> tuple[np.ndarray, np.ndarray]:
    """The refinement's candidates of one analysed image: positions (K, M, 2) in image pixels, valid (K, M)."""
    calibration = pipeline.calibration
    found = find_candidates(analysis.output.heatmaps, calibration.max_candidates, pipeline.decoder, pipeline.sigma)
    return apply_affine(np.linalg.inv(pipeline.image_to_heat(analysis.window)), found.xy[0]), found.valid[0]


def measure_effort(pipeline: PosePipeline, samples: Sequence[Sample], config: EffortConfig = EffortConfig(),
                   out: Path | None = None) -> dict:
    """Clicks per image of every mode at every tolerance (the keys: :func:`vl4pose.effort.annotator.format_effort`).

    With ``out`` the report so far is written there after every chunk (``"complete": false`` until the end), so a
    long run that is stopped still leaves its figures; ``per_image`` holds every scored image's clicks.
    """
    names = pipeline.skeleton.keypoints
    tallies = {str(t): EffortTally(names) for t in config.tolerances}
    report: dict = {"images": 0, "scored_images": 0, "skipped_no_torso": 0, "unreadable": 0, "box": config.box,
                    "predictor": {k: v for k, v in asdict(pipeline.config).items() if k != "device"},
                    "clicks": asdict(config.clicks),
                    "calibration": {"max_candidates": pipeline.calibration.max_candidates,
                                    "temperature": pipeline.calibration.temperature,
                                    "min_peak": pipeline.calibration.min_peak},
                    "tolerance_unit": "torso size (vl4pose.metrics.torso_size, the PCK@0.2 normaliser)"}
    per_image: list[dict] = []
    labelled_total = unserved_total = 0
    start = time.perf_counter()
    for first in range(0, len(samples), config.chunk):
        chunk = samples[first:first + config.chunk]
        boxes = [_gt_box(s) for s in chunk] if config.box == "gt" else None
        analyses = pipeline.analyse_batch([s.image for s in chunk], boxes)
        for sample, analysis in zip(chunk, analyses):
            report["images"] += 1
            if isinstance(analysis, ImageError):
                report["unreadable"] += 1
                continue
            labelled = sample.labelled
            torso = float(torso_size(sample.keypoints[None], labelled[None], pipeline.skeleton)[0])
            if not np.isfinite(torso):
                report["skipped_no_torso"] += 1
                continue
            report["scored_images"] += 1
            served = pipeline.resolve(analysis)
            labelled_total += int(labelled.sum())
            unserved_total += int((labelled & ~served.placed).sum())
            row: dict = {"id": sample.sample_id, "labelled": int(labelled.sum()), "torso": round(torso, 2)}
            image = sample.image if config.box == "auto" else None  # an annotator's own box is not re-framed
            resolver = resolver_for(pipeline, analysis, image, config.clicks) if config.interactive else None
            candidates, valid = candidates_in_image(pipeline, analysis)
            for tolerance, tally in tallies.items():
                threshold = float(tolerance) * torso
                traces = image_effort(served.raw, served.refined, served.placed, sample.keypoints, labelled,
                                      threshold, resolver)
                tally.add(traces, candidate_reach(candidates, valid, sample.keypoints, threshold))
                row[tolerance] = {mode: trace.clicks for mode, trace in traces.items() if mode != "scratch"}
            per_image.append(row)
        elapsed = time.perf_counter() - start
        log.info("effort: %d/%d images in %.0f s (%.2f s per image)", report["images"], len(samples), elapsed,
                 elapsed / max(report["images"], 1))
        if out is not None:
            _write(out, _finish(report, tallies, labelled_total, unserved_total, elapsed, False), per_image)
    report = _finish(report, tallies, labelled_total, unserved_total, time.perf_counter() - start, True)
    if out is not None:
        _write(out, report, per_image)
    return report


def override_calibration(pipeline: PosePipeline, max_candidates: int | None = None,
                         temperature: float | None = None) -> PosePipeline:
    """A diagnosis: the pipeline with other candidates per keypoint or temperature (served pose and re-solve
    alike); with neither it is returned untouched, as the ML backend serves it."""
    overrides = {k: v for k, v in {"max_candidates": max_candidates, "temperature": temperature}.items()
                 if v is not None}
    if overrides:
        log.warning("diagnosis: calibration overridden (%s), not what the ML backend serves", overrides)
        pipeline.calibration = replace(pipeline.calibration, **overrides)
    return pipeline


def _gt_box(sample: Sample) -> np.ndarray:
    """(4,) the annotated person's box (the benchmark's crop; a diagnosis, not the product's path)."""
    return sample.box if sample.box is not None else box_from_keypoints(sample.keypoints, sample.labelled)


def _finish(report: dict, tallies: dict[str, EffortTally], labelled: int, unserved: int, seconds: float,
            complete: bool) -> dict:
    scored = max(report["scored_images"], 1)
    return {**report, "labelled_per_image": labelled / scored, "unserved_per_image": unserved / scored,
            "seconds": round(seconds, 1), "complete": complete,
            "tolerances": {t: tally.summary() for t, tally in tallies.items()}}


def _write(path: Path, report: dict, per_image: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ",\n  ".join(json.dumps(row, separators=(",", ":")) for row in per_image)  # one image per line
    write_atomic(path, json.dumps(report, indent=1)[:-2] + f',\n "per_image": [\n  {rows}\n ]\n}}\n')


def effort_options(p: argparse.ArgumentParser) -> None:
    add_data_options(p, "test")
    defaults = EffortConfig()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--tolerances", type=float, nargs="+", default=list(defaults.tolerances),
                   help="annotator tolerances as fractions of the torso size (default 0.2 0.1)")
    p.add_argument("--box", choices=["auto", "gt"], default=defaults.box,
                   help="auto: find the person as the ML backend serves a task (default); gt: the annotated box "
                        "(diagnosis)")
    p.add_argument("--max-candidates", type=int,
                   help="diagnosis: candidates per keypoint instead of the checkpoint's calibration (served pose and "
                        "re-solve alike)")
    p.add_argument("--temperature", type=float,
                   help="diagnosis: candidate softmax temperature instead of the checkpoint's calibration")
    p.add_argument("--chunk", type=int, default=defaults.chunk, help="images analysed per batch")
    p.add_argument("--reframe", choices=REFRAME_RULES, default=defaults.clicks.reframe,
                   help="when the re-solve re-frames the final crop around the clicks (default: %(default)s, as the "
                        "ML backend)")
    p.add_argument("--reframe-margin", type=float, default=defaults.clicks.margin,
                   help="with --reframe outside: a click this share of the crop's side from its border already "
                        "re-frames (default: %(default)s)")
    p.add_argument("--swap-radius", type=float, default=defaults.clicks.swap_radius,
                   help="a click this share of the crop's side from the suggested left/right twin swaps the pair "
                        "(0: never; default: %(default)s, as the ML backend)")
    p.add_argument("--no-interactive", dest="interactive", action="store_false",
                   help="skip mode (c), the interactive re-solve")
    p.add_argument("--out", type=Path, help="also write the report with every image's clicks to this JSON file")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    add_predictor_options(p)


def run_effort(args: argparse.Namespace) -> int:
    config = EffortConfig(tuple(args.tolerances), args.chunk, args.interactive, args.box,
                          ClickConfig(args.reframe, args.reframe_margin, args.swap_radius))
    predictor = override_calibration(predictor_from_args(args), args.max_candidates, args.temperature)
    report = measure_effort(predictor, load_from_args(args, args.split), config, args.out)
    print(json.dumps(report, indent=2) if args.json else format_effort(report))
    return 0
