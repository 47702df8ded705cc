"""Exact pose refinement on the skeleton tree (VL4Pose Eq. 6) by max-product dynamic programming.

Maximises ``sum_k log p̂(y_k) + sum_edges log q(y_c | y_p)`` over one candidate per keypoint, in
O(E M²) per image, with optional clamped keypoints, and per-keypoint confidences from max-marginals.
The messages run in NumPy float64: for a handful of candidates per keypoint, per-operation overhead
dominates, and NumPy's is several times lower than torch's.
Shapes: N images, K keypoints, M candidates, E edges.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from vl4pose.likelihood import Candidates, edge_tables
from vl4pose.skeletons import Skeleton


@dataclass
class Refinement:
    """Result of the tree DP.

    Attributes:
        choice: (N, K) chosen candidate index per keypoint.
        xy: (N, K, 2) chosen positions (heatmap pixels).
        score: (N,) the maximised objective.
        confidence: (N, K) max-marginal share of the chosen candidate: exp(MM(a*) - logsumexp_a MM(a)).
        moved: (N, K) bool, the choice is not the keypoint's global heatmap maximum.
    """

    choice: torch.Tensor
    xy: torch.Tensor
    score: torch.Tensor
    confidence: torch.Tensor
    moved: torch.Tensor


def pairwise_tables(candidates: Candidates, mean: torch.Tensor, logvar: torch.Tensor, skeleton: Skeleton,
                    size: float) -> np.ndarray:
    """(N, E, M, M) float64 log q(child candidate a | parent candidate b)."""
    xy = candidates.xy.double()
    return edge_tables(Candidates(xy, candidates.value, candidates.valid), mean.double(), logvar.double(),
                       skeleton, size).numpy()


def refine(candidates: Candidates, log_probs: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
           skeleton: Skeleton, size: float) -> Refinement:
    """Max-product DP: leaves -> root messages, backtrack, then root -> leaves for max-marginals.

    Args:
        candidates: (N, K, M); log_probs: (N, K, M) log p̂ (-inf for invalid slots).
        mean, logvar: (N, E) bone-length parameters; size: heatmap side H.
    """
    pair = pairwise_tables(candidates, mean, logvar, skeleton, size)
    unary = log_probs.double().numpy()
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
    confidence = np.exp(chosen - log_total)
    choice_t = torch.from_numpy(choice)
    xy = candidates.xy.gather(2, choice_t[..., None, None].expand(n, k, 1, 2))[:, :, 0]
    return Refinement(choice_t, xy, torch.from_numpy(score), torch.from_numpy(confidence).float(), choice_t != 0)


def refine_bruteforce(candidates: Candidates, log_probs: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
                      skeleton: Skeleton, size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: enumerate every configuration (M^K). Returns choice (N, K) and score (N,)."""
    pair = torch.from_numpy(pairwise_tables(candidates, mean, logvar, skeleton, size))
    unary = log_probs.double()
    n, k, m = unary.shape
    best_score = torch.full((n,), -torch.inf, dtype=torch.float64)
    best_choice = torch.zeros(n, k, dtype=torch.long)
    for config in itertools.product(range(m), repeat=k):
        idx = torch.tensor(config)
        total = unary[:, torch.arange(k), idx].sum(dim=1)
        for e, (p, c) in enumerate(skeleton.edges):
            total = total + pair[:, e, idx[c], idx[p]]
        better = total > best_score
        best_score = torch.where(better, total, best_score)
        best_choice[better] = idx
    return best_choice, best_score
