"""Failure detection and refinement on a test split, for one checkpoint and every strategy's score.

For one model: run the network once over the test crops (ground-truth boxes, no augmentation), score
every image with every strategy, and compare with what went wrong:

- failure detection: a prediction *fails* when its per-image PCK@0.2 (raw arg-max pose) is below 0.5;
  each strategy's score (higher = label first) is read as a failure detector and its AUROC reported.
  Core-Set's per-image score is the distance to the nearest labelled embedding (needs the labelled set);
  random scores are all equal (AUROC 0.5 by construction).
- refinement: share of images where the tree-DP refinement picks another peak than the arg-max for at
  least one keypoint, and PCK@0.2 of raw vs refined poses on those images.

Shapes: N test images, K keypoints, L labelled images.
"""

from __future__ import annotations

import numpy as np

from vl4pose.checkpoint import Checkpoint
from vl4pose.data.crops import CropCache
from vl4pose.data.transforms import apply_affine, heatmap_matrix
from vl4pose.inference import analyse
from vl4pose.metrics import auroc, correct_keypoints, pck, torso_size
from vl4pose.strategies import PoolBatch, Strategy, pool_values


class _Poses(Strategy):
    """Not an acquisition strategy: collects raw and refined poses (heatmap pixels) and the moved flags
    in the same network pass, as (B, K, 5) = raw x, y, refined x, y, moved."""

    name = "_poses"

    def values(self, batch: PoolBatch) -> np.ndarray:
        poses = analyse(batch.output, batch.skeleton, batch.calibration)
        return np.concatenate([poses.raw.double().numpy(), poses.refined.double().numpy(),
                               poses.moved[..., None].double().numpy()], axis=2)


def cache_keypoints(cache: CropCache, indices: np.ndarray) -> np.ndarray:
    """(N, K, 2) ground truth of cached samples in heatmap pixels of their unaugmented person crop."""
    to_heat = heatmap_matrix(cache.input_size, cache.input_size // 4)
    view = cache.views["person"]
    return np.stack([apply_affine(to_heat @ view.windows[i].matrix(cache.input_size), cache.keypoints[i])
                     for i in indices]) if len(indices) else np.zeros((0, 0, 2))


def analyse_model(checkpoint: Checkpoint, test: CropCache, strategies: list[Strategy],
                  labelled: tuple[CropCache, np.ndarray] | None = None, batch_size: int = 32) -> dict:
    """Failure-detection AUROC of every strategy's score and the refinement figures on ``test``.

    Args:
        checkpoint: the model (with every head the strategies need).
        test: cached test crops.
        labelled: the model's labelled images (a cache and its (L,) indices), for Core-Set's score;
            without it Core-Set is left out.
    """
    usable = [s for s in strategies if not s.uses_labelled or labelled is not None]
    indices = np.arange(len(test))
    values = pool_values(checkpoint, test, indices, [*usable, _Poses()], batch_size)
    known = {}
    if labelled is not None:
        known = pool_values(checkpoint, labelled[0], labelled[1], [s for s in usable if s.uses_labelled], batch_size)
    poses = values.pop("_poses")
    raw, refined, moved = poses[..., 0:2], poses[..., 2:4], poses[..., 4] > 0.5
    gt = cache_keypoints(test, indices)
    visible = test.labelled
    torso = torso_size(gt, visible, checkpoint.skeleton)
    raw_correct = correct_keypoints(raw, gt, visible, torso, 0.2)
    refined_correct = correct_keypoints(refined, gt, visible, torso, 0.2)
    _, _, per_image = pck(raw_correct)
    evaluated = np.isfinite(per_image)
    failed = per_image[evaluated] < 0.5
    changed = moved.any(axis=1) & evaluated
    return {
        "images": int(len(indices)),
        "evaluated": int(evaluated.sum()),
        "failures": int(failed.sum()),
        "pck@0.2": pck(raw_correct)[0],
        "pck@0.2_refined": pck(refined_correct)[0],
        "failure_auroc": {s.name: auroc(s.image_scores(values[s.name], known.get(s.name))[evaluated], failed)
                          for s in usable},
        "refinement": {
            "changed_images": int(changed.sum()),
            "changed_share": float(changed.sum() / max(evaluated.sum(), 1)),
            "pck_raw_changed": pck(raw_correct[changed])[0] if changed.any() else float("nan"),
            "pck_refined_changed": pck(refined_correct[changed])[0] if changed.any() else float("nan"),
        },
    }


def format_analysis(report: dict) -> str:
    """A readable table of one :func:`analyse_model` report."""
    ref = report["refinement"]
    lines = [f"test images: {report['images']} (evaluated {report['evaluated']}, failures {report['failures']}: "
             "per-image PCK@0.2 < 0.5)",
             *([f"calibration: {report['calibration']}"] if "calibration" in report else []),
             *([f"left out: {report['left_out']}"] if "left_out" in report else []),
             f"PCK@0.2 raw {report['pck@0.2']:.4f}, refined {report['pck@0.2_refined']:.4f}",
             "", f"{'score':20s} {'failure AUROC':>14s}"]
    lines += [f"{name:20s} {value:14.4f}" for name, value in report["failure_auroc"].items()]
    lines += ["", f"refinement changed the pose on {ref['changed_images']} images ({100 * ref['changed_share']:.1f}%); "
              f"PCK@0.2 on those: raw {ref['pck_raw_changed']:.4f}, refined {ref['pck_refined_changed']:.4f}"]
    return "\n".join(lines)
