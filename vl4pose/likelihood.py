"""Candidates from heatmaps and the exact expected log-likelihood of the skeleton (VL4Pose Eq. 3).

Shapes: N images, K keypoints, M candidates per keypoint, E edges, H heatmap side.
Bone lengths are measured in units of the heatmap side (so 1.0 = the whole crop), consistently in
training targets and in scoring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from vl4pose.codec import subpixel
from vl4pose.skeletons import Skeleton

_LOG_2PI = math.log(2 * math.pi)


@dataclass
class Candidates:
    """Per keypoint, up to M local maxima of its heatmap, strongest first.

    Attributes:
        xy: (N, K, M, 2) sub-pixel positions in heatmap pixels (0 for invalid slots).
        value: (N, K, M) heatmap values (-inf for invalid slots).
        valid: (N, K, M) bool; slot 0 (the global maximum) is always valid.
    """

    xy: torch.Tensor
    value: torch.Tensor
    valid: torch.Tensor

    def log_probs(self, temperature: float) -> torch.Tensor:
        """(N, K, M) log p̂ = log softmax(value / temperature) over valid candidates (-inf elsewhere)."""
        return torch.log_softmax(self.value / temperature, dim=-1)

    def clamp(self, keypoint: int, image: int, xy: tuple[float, float]) -> None:
        """Make a given location the only candidate of one keypoint of one image (log p̂ = 0)."""
        self.xy[image, keypoint, 0] = torch.tensor(xy, dtype=self.xy.dtype)
        self.xy[image, keypoint, 1:] = 0.0
        self.value[image, keypoint, 0] = 0.0
        self.value[image, keypoint, 1:] = -math.inf
        self.valid[image, keypoint, 0] = True
        self.valid[image, keypoint, 1:] = False


def find_candidates(heatmaps: torch.Tensor, max_candidates: int) -> Candidates:
    """Local maxima (3x3 non-maximum suppression, border peaks kept), top ``max_candidates`` by value.

    Args:
        heatmaps: (N, K, H, W).
    """
    n, k, h, w = heatmaps.shape
    m = min(max_candidates, h * w)
    pooled = F.max_pool2d(heatmaps, 3, stride=1, padding=1)  # pads with -inf: border peaks count
    peaks = torch.where(heatmaps >= pooled, heatmaps, torch.full_like(heatmaps, -math.inf))
    value, index = peaks.reshape(n, k, -1).topk(m, dim=2)
    valid = torch.isfinite(value)
    valid[..., 0] = True  # the global maximum is always a local maximum
    xs, ys = index % w, index // w
    fx, fy = subpixel(heatmaps, xs, ys)
    xy = torch.stack([fx, fy], dim=-1) * valid[..., None]
    return Candidates(xy, torch.where(valid, value, torch.full_like(value, -math.inf)), valid)


def edge_log_likelihood(
    child_xy: torch.Tensor, parent_xy: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, size: float
) -> torch.Tensor:
    """log q(child = a | parent = b) = log N(|a - b| / size; mean, exp(logvar)) for every candidate pair.

    Args:
        child_xy: (..., Mc, 2) and parent_xy: (..., Mp, 2) heatmap pixels (same leading dims).
        mean, logvar: (...) bone-length Gaussian in units of the heatmap side.
        size: heatmap side H.

    Returns:
        (..., Mc, Mp) log-densities.
    """
    length = torch.linalg.vector_norm(child_xy[..., :, None, :] - parent_xy[..., None, :, :], dim=-1) / size
    mean, logvar = mean[..., None, None], logvar[..., None, None]
    return -0.5 * (_LOG_2PI + logvar + (length - mean) ** 2 * torch.exp(-logvar))


def edge_tables(candidates: Candidates, mean: torch.Tensor, logvar: torch.Tensor, skeleton: Skeleton,
                size: float) -> torch.Tensor:
    """(N, E, M, M) log q(child candidate a | parent candidate b) for every edge at once."""
    parents, children = _edge_index(skeleton)
    return edge_log_likelihood(candidates.xy[:, children], candidates.xy[:, parents], mean, logvar, size)


def _edge_index(skeleton: Skeleton) -> tuple[list[int], list[int]]:
    return [p for p, _ in skeleton.edges], [c for _, c in skeleton.edges]


def expected_log_likelihood(
    candidates: Candidates, log_probs: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
    skeleton: Skeleton, size: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """E[log q] = sum over edges of sum_a sum_b p̂(a) p̂(b) log q(a | b): exact, O(E M²).

    Args:
        candidates: (N, K, M) candidate sets; log_probs: (N, K, M) log p̂.
        mean, logvar: (N, E) bone-length parameters from the auxiliary network.

    Returns:
        total (N,) and per-edge (N, E) expected log-likelihoods.
    """
    parents, children = _edge_index(skeleton)
    probs = log_probs.exp()
    logq = edge_tables(candidates, mean, logvar, skeleton, size)  # (N, E, Mc, Mp)
    weights = probs[:, children, :, None] * probs[:, parents, None, :]
    edges = (weights * logq).sum(dim=(2, 3))
    return edges.sum(dim=1), edges


def bone_lengths(keypoints: torch.Tensor, labelled: torch.Tensor, skeleton: Skeleton, size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth bone lengths (N, E) in units of ``size`` and their mask (N, E).

    Args:
        keypoints: (N, K, 2); labelled: (N, K) bool or float.
    """
    parents = torch.tensor([p for p, _ in skeleton.edges])
    children = torch.tensor([c for _, c in skeleton.edges])
    diff = torch.nan_to_num(keypoints[:, children] - keypoints[:, parents])
    mask = (labelled[:, children] > 0) & (labelled[:, parents] > 0)
    return torch.linalg.vector_norm(diff, dim=-1) / size, mask.float()
