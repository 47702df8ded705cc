"""Pose metrics: PCK with the torso normaliser, PCKh, and AUROC for failure detection.

Shapes: N images, K keypoints.
"""

from __future__ import annotations

import math

import numpy as np

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


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``positives`` (Mann-Whitney, ties averaged).

    NaN when either class is empty.
    """
    scores = np.asarray(scores, dtype=float)
    positives = np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
