"""Exact pose refinement on the skeleton tree (VL4Pose Eq. 6) by max-product dynamic programming.

Maximises ``sum_k log p̂(y_k) + sum_edges log q(y_c | y_p)`` over one candidate per keypoint, in
O(E M²) per image, with optional clamped keypoints, and per-keypoint confidences from max-marginals.
Shapes: N images, K keypoints, M candidates, E edges.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from vl4pose.likelihood import Candidates, edge_log_likelihood
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
                    size: float) -> list[torch.Tensor]:
    """Per edge, (N, M, M) log q(child candidate a | parent candidate b)."""
    xy = candidates.xy.double()
    return [edge_log_likelihood(xy[:, c], xy[:, p], mean[:, e].double(), logvar[:, e].double(), size)
            for e, (p, c) in enumerate(skeleton.edges)]


def refine(candidates: Candidates, log_probs: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
           skeleton: Skeleton, size: float) -> Refinement:
    """Max-product DP: leaves -> root messages, backtrack, then root -> leaves for max-marginals.

    Args:
        candidates: (N, K, M); log_probs: (N, K, M) log p̂ (-inf for invalid slots).
        mean, logvar: (N, E) bone-length parameters; size: heatmap side H.
    """
    pair = pairwise_tables(candidates, mean, logvar, skeleton, size)
    unary = log_probs.double()
    n, k, m = unary.shape
    incoming = torch.zeros_like(unary)  # sum of messages from children, (N, K, M)
    messages: dict[int, torch.Tensor] = {}
    best_child: dict[int, torch.Tensor] = {}
    for e in reversed(range(len(skeleton.edges))):
        parent, child = skeleton.edges[e]
        belief = (unary[:, child] + incoming[:, child])[:, :, None] + pair[e]  # (N, Mc, Mp)
        messages[e], best_child[e] = belief.max(dim=1)
        incoming[:, parent] += messages[e]
    rows = torch.arange(n)
    choice = torch.zeros(n, k, dtype=torch.long)
    root_belief = unary[:, skeleton.root] + incoming[:, skeleton.root]
    score, choice[:, skeleton.root] = root_belief.max(dim=1)
    for e, (parent, child) in enumerate(skeleton.edges):
        choice[:, child] = best_child[e][rows, choice[:, parent]]
    # root -> leaves: down[k](a) = best score of everything outside k's subtree given k = a
    down = torch.zeros_like(unary)
    for e, (parent, child) in enumerate(skeleton.edges):
        outside = unary[:, parent] + incoming[:, parent] - messages[e] + down[:, parent]  # (N, Mp)
        down[:, child] = (pair[e] + outside[:, None, :]).max(dim=2).values
    max_marginal = unary + incoming + down
    chosen = max_marginal.gather(2, choice[..., None])[..., 0]
    confidence = torch.exp(chosen - torch.logsumexp(max_marginal, dim=2))
    xy = candidates.xy.gather(2, choice[..., None, None].expand(n, k, 1, 2))[:, :, 0]
    return Refinement(choice, xy, score, confidence.float(), choice != 0)


def refine_bruteforce(candidates: Candidates, log_probs: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
                      skeleton: Skeleton, size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: enumerate every configuration (M^K). Returns choice (N, K) and score (N,)."""
    pair = pairwise_tables(candidates, mean, logvar, skeleton, size)
    unary = log_probs.double()
    n, k, m = unary.shape
    best_score = torch.full((n,), -torch.inf, dtype=torch.float64)
    best_choice = torch.zeros(n, k, dtype=torch.long)
    for config in itertools.product(range(m), repeat=k):
        idx = torch.tensor(config)
        total = unary[:, torch.arange(k), idx].sum(dim=1)
        for e, (p, c) in enumerate(skeleton.edges):
            total = total + pair[e][:, idx[c], idx[p]]
        better = total > best_score
        best_score = torch.where(better, total, best_score)
        best_choice[better] = idx
    return best_choice, best_score
