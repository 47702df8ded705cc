"""Keypoints <-> heatmaps, with documented shapes and an exact round trip.

Targets are unnormalised Gaussians (peak 1) centred at the sub-pixel keypoint position in heatmap
pixels. Decoding takes the arg-max and refines it with the product's sub-pixel decoder (a parabola fitted to the
log of the 3x3 neighbourhood, which recovers a Gaussian's centre exactly; see :mod:`vl4pose.postprocess`).
"""

from __future__ import annotations

import numpy as np
import torch

from vl4pose.postprocess import DECODERS, DEFAULT_DECODER


def encode(keypoints: torch.Tensor, weights: torch.Tensor, size: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian heatmaps for keypoints.

    Args:
        keypoints: (N, K, 2) (x, y) in heatmap pixels; NaN where missing.
        weights: (N, K) 1 for keypoints that count, 0 otherwise.
        size: heatmap side H.
        sigma: Gaussian standard deviation in heatmap pixels.

    Returns:
        heatmaps (N, K, H, H) and target weights (N, K): keypoints outside the map by more than
        3 sigma get weight 0 and an empty map.
    """
    coords = torch.arange(size, dtype=torch.float32, device=keypoints.device)
    x = torch.nan_to_num(keypoints[..., 0], nan=-1e4)
    y = torch.nan_to_num(keypoints[..., 1], nan=-1e4)
    inside = (x > -3 * sigma) & (x < size - 1 + 3 * sigma) & (y > -3 * sigma) & (y < size - 1 + 3 * sigma)
    weights = weights.float() * inside.float()
    gx = torch.exp(-((coords[None, None, :] - x[..., None]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((coords[None, None, :] - y[..., None]) ** 2) / (2 * sigma**2))
    heatmaps = gy[..., :, None] * gx[..., None, :] * weights[..., None, None]
    return heatmaps, weights


def decode(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Arg-max keypoints of heatmaps with the product's sub-pixel refinement (:mod:`vl4pose.postprocess`).

    Args:
        heatmaps: (N, K, H, W).

    Returns:
        keypoints (N, K, 2) in heatmap pixels and peak values (N, K).
    """
    n, k, h, w = heatmaps.shape
    values, index = heatmaps.reshape(n, k, -1).max(dim=2)
    xs, ys = (index % w)[..., None].numpy(), (index // w)[..., None].numpy()
    fx, fy = DECODERS[DEFAULT_DECODER](heatmaps.detach().float().numpy(), xs, ys)
    return torch.from_numpy(np.stack([fx[..., 0], fy[..., 0]], axis=-1)).float(), values
