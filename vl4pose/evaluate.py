"""Evaluation of a checkpoint on annotated samples through the Predictor (the product's code path)."""

from __future__ import annotations

import logging

import numpy as np

from vl4pose.data.sample import Sample, box_from_keypoints
from vl4pose.errors import ConfigError, DataError, ImageError
from vl4pose.metrics import auroc, correct_keypoints, head_size, pck, torso_size
from vl4pose.predictor import PosePrediction, Predictor

log = logging.getLogger(__name__)

BOX_MODES = ("gt", "auto")
ALPHAS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)


def predict_samples(predictor: Predictor, samples: list[Sample], box: str = "gt") -> list[PosePrediction | ImageError]:
    """Predictions for samples; ``box="gt"`` crops around the annotated person (the benchmark protocol),
    ``box="auto"`` lets the predictor find the person as it does for unlabelled images."""
    if box not in BOX_MODES:
        raise ConfigError(f"unknown box mode {box!r}; choose one of {list(BOX_MODES)}")
    boxes = [s.box if s.box is not None else box_from_keypoints(s.keypoints, s.labelled) for s in samples]
    return predictor.predict_batch([s.image for s in samples], boxes if box == "gt" else None)


def evaluate(predictor: Predictor, samples: list[Sample], box: str = "gt") -> dict:
    """PCK@alpha (torso), PCKh@0.5, per-keypoint table, failure AUROC, for raw and refined poses.

    A prediction *fails* when its per-image PCK@0.2 is below 0.5; ``failure_auroc`` is the AUROC of
    low likelihood for those failures (1.0 = the likelihood ranks every failure first).
    """
    predictions = predict_samples(predictor, samples, box)
    kept = [(s, p) for s, p in zip(samples, predictions) if not isinstance(p, ImageError)]
    if not kept:
        raise DataError(f"none of the {len(samples)} images could be read")
    skeleton = predictor.skeleton
    gt = np.stack([s.keypoints for s, _ in kept])
    labelled = np.stack([s.labelled for s, _ in kept])
    heads = [s.head_box for s, _ in kept]
    torso = torso_size(gt, labelled, skeleton)
    head = head_size(gt, labelled, skeleton, np.stack(heads) if all(h is not None for h in heads) else None)
    ll = np.array([p.log_likelihood for _, p in kept])
    report: dict = {"images": len(kept), "unreadable": len(samples) - len(kept), "box": box,
                    "evaluated_images": int(np.isfinite(torso).sum())}
    for name in ("raw", "refined"):
        pred = np.stack([getattr(p, name) for _, p in kept])
        correct = correct_keypoints(pred, gt, labelled, torso, 0.2)
        total, per_kp, per_image = pck(correct)
        evaluated = np.isfinite(per_image)
        failed = per_image[evaluated] < 0.5
        report[name] = {
            "pck@0.2": total,
            "pck_curve": {str(a): pck(correct_keypoints(pred, gt, labelled, torso, a))[0] for a in ALPHAS},
            "pckh@0.5": pck(correct_keypoints(pred, gt, labelled, head, 0.5))[0],
            "per_keypoint": {k: float(v) for k, v in zip(skeleton.keypoints, per_kp)},
            "failures": int(failed.sum()),
            "failure_auroc": auroc(-ll[evaluated], failed),
        }
    moved = np.stack([p.moved for _, p in kept])
    report["refinement_changed_images"] = float(moved.any(axis=1).mean())
    report["pck@0.2"] = report["raw"]["pck@0.2"]
    report["failure_auroc"] = report["raw"]["failure_auroc"]
    return report


def format_report(report: dict) -> str:
    """A readable table of an :func:`evaluate` report."""
    lines = [f"images: {report['images']} (unreadable {report['unreadable']}, box {report['box']})",
             f"{'':16s} {'raw':>8s} {'refined':>8s}"]
    for key in ("pck@0.2", "pckh@0.5", "failure_auroc"):
        lines.append(f"{key:16s} {report['raw'][key]:8.4f} {report['refined'][key]:8.4f}")
    lines.append(f"{'failures':16s} {report['raw']['failures']:8d} {report['refined']['failures']:8d}")
    lines.append(f"refinement changed the pose on {100 * report['refinement_changed_images']:.1f}% of images")
    lines.append("per-keypoint PCK@0.2:")
    for name, value in report["raw"]["per_keypoint"].items():
        lines.append(f"  {name:16s} {value:8.4f} {report['refined']['per_keypoint'][name]:8.4f}")
    return "\n".join(lines)
