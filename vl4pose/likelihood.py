"""Candidates from heatmaps and the exact expected log-likelihood of the skeleton (VL4Pose Eq. 3), for
torch callers (calibration, strategies, training's bone lengths, benchmarks).

The maths lives once, in NumPy, in :mod:`vl4pose.postprocess` (shared with the Predictor and the ONNX
scorer); the functions here convert torch tensors to it and back.
Shapes: N images, K keypoints, M candidates per keypoint, E edges, H heatmap side.
Bone lengths are measured in units of the heatmap side (so 1.0 = the whole crop), consistently in
training targets and in scoring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vl4pose import postprocess
from vl4pose.skeletons import Skeleton


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


def find_candidates(heatmaps: torch.Tensor, max_candidates: int, decoder: str = postprocess.DEFAULT_DECODER,
                    sigma: float = 1.0) -> Candidates:
    """Local maxima (3x3 non-maximum suppression, border peaks kept), top ``max_candidates`` by value
    (:func:`vl4pose.postprocess.find_candidates`), as float32 tensors.

    Args:
        heatmaps: (N, K, H, W).
    """
    found = postprocess.find_candidates(heatmaps.detach().float().cpu().numpy(), max_candidates, decoder, sigma)
    return Candidates(torch.from_numpy(found.xy).float(), torch.from_numpy(found.value).float(),
                      torch.from_numpy(found.valid))


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


def edge_log_likelihood(
    child_xy: torch.Tensor, parent_xy: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, size: float
) -> torch.Tensor:
    """log q(child = a | parent = b) = log N(|a - b| / size; mean, exp(logvar)) for every candidate pair
    (:func:`vl4pose.postprocess.edge_log_likelihood`), in the dtype of ``child_xy``.

    Args:
        child_xy: (..., Mc, 2) and parent_xy: (..., Mp, 2) heatmap pixels (same leading dims).
        mean, logvar: (...) bone-length Gaussian in units of the heatmap side.
        size: heatmap side H.

    Returns:
        (..., Mc, Mp) log-densities.
    """
    out = postprocess.edge_log_likelihood(_numpy(child_xy), _numpy(parent_xy), _numpy(mean), _numpy(logvar), size)
    return torch.from_numpy(out).to(child_xy.dtype)


def edge_tables(candidates: Candidates, mean: torch.Tensor, logvar: torch.Tensor, skeleton: Skeleton,
                size: float) -> torch.Tensor:
    """(N, E, M, M) log q(child candidate a | parent candidate b) for every edge at once."""
    out = postprocess.edge_tables(_numpy(candidates.xy), _numpy(mean), _numpy(logvar), skeleton, size)
    return torch.from_numpy(out).to(candidates.xy.dtype)


def expected_log_likelihood(
    candidates: Candidates, log_probs: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
    skeleton: Skeleton, size: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """E[log q] = sum over edges of sum_a sum_b p̂(a) p̂(b) log q(a | b): exact, O(E M²)
    (:func:`vl4pose.postprocess.expected_log_likelihood`), in the dtype of the candidates.

    Args:
        candidates: (N, K, M) candidate sets; log_probs: (N, K, M) log p̂.
        mean, logvar: (N, E) bone-length parameters from the auxiliary network.

    Returns:
        total (N,) and per-edge (N, E) expected log-likelihoods.
    """
    total, edges = postprocess.expected_log_likelihood(_numpy(candidates.xy), _numpy(log_probs), _numpy(mean),
                                                       _numpy(logvar), skeleton, size)
    dtype = candidates.xy.dtype
    return torch.from_numpy(total).to(dtype), torch.from_numpy(edges).to(dtype)


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
