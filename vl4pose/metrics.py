"""Pose metrics: PCK with the torso normaliser, PCKh, and AUROC for failure detection.

Shapes: N images, K keypoints.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

from vl4pose.skeletons import Skeleton


def torso_size(keypoints: np.ndarray, labelled: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(N,) torso size max(|l_shoulder - r_hip|, |r_shoulder - l_hip|); NaN where neither pair is labelled.

    Args:
        keypoints: (N, K, 2) ground truth; labelled: (N, K) bool.
    """
    if skeleton.torso is None:
        return np.full(keypoints.shape[0], np.nan)
    lsho, rhip, rsho, lhip = skeleton.torso
    sizes = []
    for a, b in ((lsho, rhip), (rsho, lhip)):
        d = np.linalg.norm(keypoints[:, a] - keypoints[:, b], axis=1)
        sizes.append(np.where(labelled[:, a] & labelled[:, b], d, np.nan))
    both = np.stack(sizes, axis=1)
    out = np.full(keypoints.shape[0], np.nan)
    has = np.isfinite(both).any(axis=1)
    out[has] = np.nanmax(both[has], axis=1)
    return out


def head_size(keypoints: np.ndarray, labelled: np.ndarray, skeleton: Skeleton,
              head_boxes: np.ndarray | None = None) -> np.ndarray:
    """(N,) PCKh normaliser: 0.6 x head-box diagonal.

    Without head boxes the box is estimated as the square whose side is the head_top-neck segment,
    so the normaliser is 0.6 x sqrt(2) x |head_top - neck|.
    """
    if head_boxes is not None:
        boxes = np.asarray(head_boxes, dtype=float)
        return 0.6 * np.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    if skeleton.head is None:
        return np.full(keypoints.shape[0], np.nan)
    top, neck = skeleton.head
    d = np.linalg.norm(keypoints[:, top] - keypoints[:, neck], axis=1)
    return np.where(labelled[:, top] & labelled[:, neck], 0.6 * math.sqrt(2.0) * d, np.nan)


def correct_keypoints(pred: np.ndarray, gt: np.ndarray, labelled: np.ndarray, normaliser: np.ndarray,
                      alpha: float) -> np.ndarray:
    """(N, K) float: 1 correct, 0 wrong, NaN not evaluated (unlabelled, or no normaliser)."""
    err = np.linalg.norm(pred - gt, axis=2)
    ok = (err <= alpha * normaliser[:, None]).astype(float)
    evaluated = labelled & np.isfinite(normaliser)[:, None] & np.isfinite(pred).all(axis=2)
    return np.where(evaluated, ok, np.nan)


def pck(correct: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean PCK over evaluated keypoints, per-keypoint PCK (K,), per-image PCK (N,) (NaN if none)."""
    with np.errstate(invalid="ignore"):
        counts_k = np.isfinite(correct).sum(axis=0)
        counts_n = np.isfinite(correct).sum(axis=1)
        per_kp = np.where(counts_k > 0, np.nansum(correct, axis=0) / np.maximum(counts_k, 1), np.nan)
        per_image = np.where(counts_n > 0, np.nansum(correct, axis=1) / np.maximum(counts_n, 1), np.nan)
    total = np.isfinite(correct).sum()
    return (float(np.nansum(correct) / total) if total else float("nan")), per_kp, per_image


def auroc_rows(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """(R,) AUROC of each row of (R, N) ``scores`` for the (R, N) bool ``positives`` (Mann-Whitney U / (P x N)).

    Ranks come from :func:`scipy.stats.rankdata` (ties get their average rank, so a tie between a positive
    and a negative counts one half). NaN scores rank above every number (as if +inf; tied among
    themselves). A row whose positives or negatives are empty gives NaN.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    positives = np.atleast_2d(np.asarray(positives, dtype=bool))
    if scores.shape != positives.shape:
        raise ValueError(f"scores {scores.shape} and positives {positives.shape} differ in shape")
    n_pos = positives.sum(axis=1).astype(float)
    n_neg = positives.shape[1] - n_pos
    ranks = rankdata(np.where(np.isnan(scores), np.inf, scores), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = ((ranks * positives).sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), out, np.nan)


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of (N,) ``scores`` for (N,) bool ``positives`` (Mann-Whitney, ties averaged).

    NaN when either class is empty. See :func:`auroc_rows`.
    """
    scores = np.asarray(scores, dtype=float).reshape(-1)
    positives = np.asarray(positives, dtype=bool).reshape(-1)
    if scores.size == 0:
        return float("nan")
    return float(auroc_rows(scores[None], positives[None])[0])
