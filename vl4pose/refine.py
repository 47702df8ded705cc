"""Exact pose refinement on the skeleton tree (VL4Pose Eq. 6) by max-product dynamic programming.

Maximises ``sum_k log p̂(y_k) + sum_edges log q(y_c | y_p)`` over one candidate per keypoint, in
O(E M²) per image, with optional clamped keypoints, and per-keypoint confidences from max-marginals.
NumPy float64, no torch at import (the ONNX scorer uses it): for a handful of candidates per keypoint,
per-operation overhead dominates, and NumPy's is several times lower than torch's. :func:`refine` also
takes the torch :class:`vl4pose.likelihood.Candidates` and then answers in torch tensors.
Shapes: N images, K keypoints, M candidates, E edges.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from vl4pose.postprocess import edge_tables
from vl4pose.skeletons import Skeleton


@dataclass
class Refinement:
    """Result of the tree DP (NumPy arrays, or torch tensors when :func:`refine` was given torch inputs).

    Attributes:
        choice: (N, K) chosen candidate index per keypoint.
        xy: (N, K, 2) chosen positions (heatmap pixels).
        score: (N,) the maximised objective.
        confidence: (N, K) max-marginal share of the chosen candidate: exp(MM(a*) - logsumexp_a MM(a)).
        moved: (N, K) bool, the choice is not the keypoint's global heatmap maximum.
    """

    choice: Any
    xy: Any
    score: Any
    confidence: Any
    moved: Any


def _array(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def pairwise_tables(candidates: Any, mean: Any, logvar: Any, skeleton: Skeleton, size: float) -> np.ndarray:
    """(N, E, M, M) float64 log q(child candidate a | parent candidate b); candidates NumPy or torch."""
    return edge_tables(_array(candidates.xy), _array(mean), _array(logvar), skeleton, size)


def solve_tree(unary: np.ndarray, pair: np.ndarray, skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Max-product DP: leaves -> root messages, backtrack, then root -> leaves for max-marginals.

    Args:
        unary: (N, K, M) log p̂ (-inf for invalid slots); pair: (N, E, M, M) log q(child a | parent b).

    Returns:
        choice (N, K) int64, score (N,) and confidence (N, K), float64.
    """
    unary = np.asarray(unary, dtype=np.float64)
    n, k, m = unary.shape
    incoming = np.zeros_like(unary)  # sum of messages from children, (N, K, M)
    messages = np.empty((n, len(skeleton.edges), m))
    best_child = np.empty((n, len(skeleton.edges), m), dtype=np.int64)
    for e in reversed(range(len(skeleton.edges))):
        parent, child = skeleton.edges[e]
        belief = (unary[:, child] + incoming[:, child])[:, :, None] + pair[:, e]  # (N, Mc, Mp)
        best_child[:, e] = belief.argmax(axis=1)
        messages[:, e] = np.take_along_axis(belief, best_child[:, e][:, None, :], axis=1)[:, 0]
        incoming[:, parent] += messages[:, e]
    rows = np.arange(n)
    choice = np.zeros((n, k), dtype=np.int64)
    root_belief = unary[:, skeleton.root] + incoming[:, skeleton.root]
    choice[:, skeleton.root] = root_belief.argmax(axis=1)
    score = root_belief[rows, choice[:, skeleton.root]]
    for e, (parent, child) in enumerate(skeleton.edges):
        choice[:, child] = best_child[rows, e, choice[:, parent]]
    # root -> leaves: down[k](a) = best score of everything outside k's subtree given k = a
    down = np.zeros_like(unary)
    with np.errstate(invalid="ignore"):
        for e, (parent, child) in enumerate(skeleton.edges):
            outside = unary[:, parent] + incoming[:, parent] - messages[:, e] + down[:, parent]  # (N, Mp)
            down[:, child] = (pair[:, e] + outside[:, None, :]).max(axis=2)
    max_marginal = unary + incoming + down
    chosen = np.take_along_axis(max_marginal, choice[..., None], axis=2)[..., 0]
    top = max_marginal.max(axis=2, keepdims=True)
    log_total = top[..., 0] + np.log(np.exp(max_marginal - top).sum(axis=2))
    return choice, score, np.exp(chosen - log_total)


def refine(candidates: Any, log_probs: Any, mean: Any, logvar: Any, skeleton: Skeleton, size: float) -> Refinement:
    """Tree-DP refinement of candidate sets.

    Args:
        candidates: (N, K, M) candidate sets (:class:`vl4pose.postprocess.Candidates`, or the torch
            :class:`vl4pose.likelihood.Candidates`); log_probs: (N, K, M) log p̂ (-inf for invalid slots).
        mean, logvar: (N, E) bone-length parameters; size: heatmap side H.

    Returns:
        a :class:`Refinement` in NumPy (positions float64, confidence float32), or in torch tensors when the
        candidates were torch tensors.
    """
    xy = _array(candidates.xy)
    pair = edge_tables(xy, _array(mean), _array(logvar), skeleton, size)
    choice, score, confidence = solve_tree(_array(log_probs), pair, skeleton)
    chosen = np.take_along_axis(xy, choice[..., None, None], axis=2)[:, :, 0]
    result = Refinement(choice, chosen, score, confidence.astype(np.float32), choice != 0)
    if hasattr(candidates.xy, "detach"):
        import torch  # deferred: refinement is torch-free (the ONNX scorer); torch only for torch inputs

        result = Refinement(torch.from_numpy(choice), torch.from_numpy(chosen).to(candidates.xy.dtype),
                            torch.from_numpy(score), torch.from_numpy(result.confidence), torch.from_numpy(result.moved))
    return result


def refine_bruteforce(candidates: Any, log_probs: Any, mean: Any, logvar: Any, skeleton: Skeleton, size: float
                      ) -> tuple[Any, Any]:
    """Reference: enumerate every configuration (M^K). Returns choice (N, K) and score (N,) (torch tensors
    when given torch candidates)."""
    pair = pairwise_tables(candidates, mean, logvar, skeleton, size)
    unary = _array(log_probs).astype(np.float64)
    n, k, m = unary.shape
    best_score = np.full(n, -np.inf)
    best_choice = np.zeros((n, k), dtype=np.int64)
    for config in itertools.product(range(m), repeat=k):
        idx = np.array(config)
        total = unary[:, np.arange(k), idx].sum(axis=1)
        for e, (p, c) in enumerate(skeleton.edges):
            total = total + pair[:, e, idx[c], idx[p]]
        better = total > best_score
        best_score = np.where(better, total, best_score)
        best_choice[better] = idx
    if hasattr(candidates.xy, "detach"):
        import torch  # deferred: refinement is torch-free (the ONNX scorer); torch only for torch inputs

        return torch.from_numpy(best_choice), torch.from_numpy(best_score)
    return best_choice, best_score
