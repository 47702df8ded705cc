"""Failure detection on the product path: how well each acquisition score finds the poses the product gets wrong.

The simulation's failure tables (:mod:`vl4pose.simulate.analysis`) score **ground-truth-box** crops. The
product never sees a ground-truth box: the ML backend and the coordinator's ranking run
:class:`~vl4pose.predictor.Predictor` with its default :class:`~vl4pose.predictor.PredictorConfig` (automatic
person box: a pass on the whole image, one more around the pose found, then the final pass with the flip test).
:func:`product_path_report` runs exactly that on annotated images and reads every strategy's score from the
same final pass (heatmaps, bone parameters and the multi-scale features the Predictor computes anyway).

A prediction **fails** like in the simulation's tables: its per-image PCK@0.2 (torso normaliser, in image
pixels, raw arg-max pose) is below 0.5; images without a torso to normalise by are left out. The same is
reported for the refined pose the product serves. Every score is read as a failure detector (higher = label
first) and its AUROC reported with a percentile bootstrap interval over images (:func:`bootstrap_aurocs`:
the same resampled image sets for every score, so the difference to the best score gets an interval too).
``served_score`` is the queue's own number (minus the calibrated likelihood score the coordinator stores).

Shapes: N images, K keypoints, R bootstrap resamples.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from vl4pose.data.sample import Sample
from vl4pose.errors import ConfigError, DataError, ImageError
from vl4pose.inference import NetworkOutput, run_network
from vl4pose.metrics import auroc_rows, correct_keypoints, pck, torso_size
from vl4pose.pipeline import NetworkArrays
from vl4pose.predictor import PosePrediction, Predictor
from vl4pose.strategies import PoolBatch, Strategy

log = logging.getLogger(__name__)

SERVED = "served_score"
"""Row name of the product's own queue score: minus ``PosePrediction.score`` (low likelihood = label first)."""


@dataclass(frozen=True)
class FailureConfig:
    """alpha / fail_below: a prediction fails when its per-image PCK@alpha is below ``fail_below``.
    resamples, level, seed: the percentile bootstrap over images (fixed seed: the same intervals every run).
    chunk: images per Predictor call (bounds memory: the features of a chunk are kept for the strategies)."""

    alpha: float = 0.2
    fail_below: float = 0.5
    resamples: int = 1000
    level: float = 0.95
    seed: int = 0
    chunk: int = 32


def bootstrap_aurocs(scores: dict[str, np.ndarray], positives: np.ndarray, resamples: int = 1000,
                     level: float = 0.95, seed: int = 0) -> dict[str, dict]:
    """AUROC of each (N,) score for the (N,) bool ``positives``, with a percentile bootstrap interval.

    Every resample draws N images with replacement (``np.random.default_rng(seed)``), the same draws for all
    scores (paired), so each score also gets the interval of its difference to the best score (the highest
    point estimate). Resamples without a positive or a negative are dropped (``resamples_used``).

    Returns:
        {name: {"auroc", "low", "high", "diff_to_best", "diff_low", "diff_high", "resamples_used"}}.
    """
    positives = np.asarray(positives, dtype=bool)
    n = len(positives)
    if not 0.0 < level < 1.0 or resamples < 1:
        raise ConfigError(f"bootstrap needs 0 < level < 1 and at least one resample (got {level}, {resamples})")
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n)) if n else np.zeros((resamples, 0), int)
    point = {name: float(auroc_rows(np.asarray(s, dtype=float)[None], positives[None])[0]) for name, s in scores.items()}
    samples = {name: auroc_rows(np.asarray(s, dtype=float)[draws], positives[draws]) for name, s in scores.items()}
    finite = [name for name in scores if np.isfinite(point[name])]
    best = max(finite, key=lambda name: point[name]) if finite else None
    tail = 100.0 * (1.0 - level) / 2.0
    out = {}
    for name in scores:
        values = samples[name][np.isfinite(samples[name])]
        low, high = (np.percentile(values, [tail, 100.0 - tail]) if values.size else (np.nan, np.nan))
        diff = samples[best] - samples[name] if best is not None else np.full(resamples, np.nan)
        diff = diff[np.isfinite(diff)]
        d_low, d_high = (np.percentile(diff, [tail, 100.0 - tail]) if diff.size else (np.nan, np.nan))
        out[name] = {"auroc": point[name], "low": float(low), "high": float(high),
                     "diff_to_best": (point[best] - point[name]) if best is not None else float("nan"),
                     "diff_low": float(d_low), "diff_high": float(d_high), "resamples_used": int(values.size)}
    return out


class FeaturePredictor(Predictor):
    """The product's :class:`Predictor`, unchanged, that also keeps the multi-scale features of the final crops
    of its last :meth:`analyse_batch` (the flip-tested scale-1 crops), for the strategies that read them.
    Not thread-safe (one caller at a time)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._kept: list[list[torch.Tensor]] = []
        self._final_batches = 0

    def _final_pass(self, arrays, windows):  # type: ignore[override]
        self._kept = []  # from here on: the scale-1 crops' batches, then those of the other scales
        self._final_batches = -(-len(arrays) // self.config.batch_size)
        return super()._final_pass(arrays, windows)

    def network(self, crops: np.ndarray, bones_for: int) -> NetworkArrays:
        """As :meth:`Predictor.network`, keeping the (B', C, h, w) features of the ``bones_for`` plain crops."""
        out = run_network(self.pose, self.bones, torch.from_numpy(crops), bones_for=bones_for)
        self._kept.append(out.features)
        return NetworkArrays(out.heatmaps.numpy(), out.mean.numpy(), out.logvar.numpy())

    def final_features(self) -> list[torch.Tensor]:
        """Per scale, the (M, C, h, w) features of the M images of the last :meth:`analyse_batch` call."""
        kept = self._kept[:self._final_batches]
        return [torch.cat([part[s] for part in kept]) for s in range(len(kept[0]))] if kept else []


def product_path_values(predictor: FeaturePredictor, samples: Sequence[Sample], strategies: Sequence[Strategy],
                        chunk: int = 32) -> tuple[list[PosePrediction | None], dict[str, np.ndarray]]:
    """Run the product path (automatic box) on the samples' images and every strategy's values on its final pass.

    Returns:
        (N,) predictions (None where the image could not be read) and {strategy: (M,) or (M, D) values of the
        M readable images, in sample order}.
    """
    if any(s.uses_labelled for s in strategies):
        raise ConfigError("coreset needs the labelled set's features; leave it out of the product-path analysis")
    missing = sorted({h for s in strategies for h in s.heads if h not in predictor.checkpoint.heads})
    if missing:
        raise ConfigError(f"checkpoint {predictor.checkpoint.path} has no auxiliary heads {missing}; "
                          "leave out the strategies that need them (--strategies)")
    predictions: list[PosePrediction | None] = []
    parts: dict[str, list[np.ndarray]] = {s.name: [] for s in strategies}
    for start in range(0, len(samples), chunk):
        analyses = predictor.analyse_batch([s.image for s in samples[start:start + chunk]])
        ok = [a for a in analyses if not isinstance(a, ImageError)]
        predictions += [None if isinstance(a, ImageError) else predictor.resolve(a) for a in analyses]
        if not ok:
            continue
        # every score reads the scale-1 final crop (the served score's heatmaps; the multi-scale average places the pose)
        rows = [a.output for a in ok]
        heatmaps = np.concatenate([o.heatmaps if o.single is None else o.single for o in rows])
        mean, logvar = (np.concatenate([getattr(o, f) for o in rows]) for f in ("mean", "logvar"))
        output = NetworkOutput(torch.from_numpy(heatmaps), torch.from_numpy(mean), torch.from_numpy(logvar),
                               predictor.final_features())
        batch = PoolBatch(output, predictor.checkpoint.heads, predictor.skeleton, predictor.calibration)
        for strategy in strategies:
            parts[strategy.name].append(strategy.values(batch) if strategy.uses_network else np.zeros(len(ok)))
        log.info("product path: %d/%d images", min(start + chunk, len(samples)), len(samples))
    return predictions, {name: np.concatenate(p) if p else np.zeros(0) for name, p in parts.items()}


def product_path_report(predictor: FeaturePredictor, samples: Sequence[Sample], strategies: Sequence[Strategy],
                        config: FailureConfig | None = None) -> dict:
    """Failure-detection AUROC (with bootstrap intervals) of every strategy's score on the product path.

    Returns:
        ``images``, ``unreadable``, ``evaluated``, ``failures`` ({raw, refined}), ``pck@0.2`` /
        ``pck@0.2_refined``, ``failure_auroc`` ({score: :func:`bootstrap_aurocs` entry}, failures of the raw
        pose), ``failure_auroc_refined`` (failures of the served refined pose), ``best``, ``config``, ``predictor``.
    """
    config = config or FailureConfig()
    predictions, values = product_path_values(predictor, samples, strategies, config.chunk)
    kept = [(s, p) for s, p in zip(samples, predictions) if p is not None]
    if not kept:
        raise DataError(f"none of the {len(samples)} images could be read")
    gt = np.stack([s.keypoints for s, _ in kept])
    labelled = np.stack([s.labelled for s, _ in kept])
    torso = torso_size(gt, labelled, predictor.skeleton)
    scores = {s.name: s.image_scores(values[s.name]) for s in strategies}
    scores[SERVED] = -np.array([p.score for _, p in kept])
    report: dict = {"images": len(samples), "unreadable": len(samples) - len(kept), "box": "auto",
                    "predictor": asdict(predictor.config), "config": asdict(config), "failures": {}}
    for pose in ("raw", "refined"):
        correct = correct_keypoints(np.stack([getattr(p, pose) for _, p in kept]), gt, labelled, torso, config.alpha)
        total, _, per_image = pck(correct)
        evaluated = np.isfinite(per_image)
        failed = per_image[evaluated] < config.fail_below
        key = "failure_auroc" if pose == "raw" else "failure_auroc_refined"
        report["pck@0.2" if pose == "raw" else "pck@0.2_refined"] = total
        report["evaluated"] = int(evaluated.sum())
        report["failures"][pose] = int(failed.sum())
        report[key] = bootstrap_aurocs({name: s[evaluated] for name, s in scores.items()}, failed,
                                       config.resamples, config.level, config.seed)
    finite = {k: v["auroc"] for k, v in report["failure_auroc"].items() if np.isfinite(v["auroc"])}
    report["best"] = max(finite, key=finite.get) if finite else None
    return report
