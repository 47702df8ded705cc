"""Keypoints <-> heatmaps, with documented shapes and an exact round trip.

Targets are unnormalised Gaussians (peak 1) centred at the sub-pixel keypoint position in heatmap
pixels. Decoding takes the arg-max and refines it with a parabola fitted to the log of the 3x3
neighbourhood, which recovers a Gaussian's centre exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


def subpixel(heatmaps: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine integer peak positions with a log-parabola fit on each axis.

    Args:
        heatmaps: (N, K, H, W).
        xs, ys: (N, K, M) integer peak coordinates.

    Returns:
        (N, K, M) float x and y, each moved by at most half a pixel.
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w).clamp_min(1e-10).log()

    def value(dx: int, dy: int) -> torch.Tensor:
        xx = (xs + dx).clamp(0, w - 1)
        yy = (ys + dy).clamp(0, h - 1)
        return torch.gather(flat, 2, (yy * w + xx).reshape(n, k, -1)).reshape(xs.shape)

    centre = value(0, 0)
    offsets = []
    for (lo, hi), pos, limit in (((value(-1, 0), value(1, 0)), xs, w), ((value(0, -1), value(0, 1)), ys, h)):
        curvature = lo - 2 * centre + hi
        step = 0.5 * (lo - hi) / torch.where(curvature < -1e-6, curvature, torch.full_like(curvature, -1e6))
        interior = (pos > 0) & (pos < limit - 1)
        offsets.append(torch.where(interior, step.clamp(-0.5, 0.5), torch.zeros_like(step)))
    return xs.float() + offsets[0], ys.float() + offsets[1]


def subpixel_dark(heatmaps: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, sigma: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Distribution-aware sub-pixel positions (DARK, Zhang et al. 2020): blur the heatmaps with the target's
    Gaussian, then take one Newton step on the log heatmap with the full 2x2 Hessian at each integer peak.

    Args and returns as :func:`subpixel`; offsets are clamped to one pixel (the blurred peak may sit next to the
    raw one); peaks whose log heatmap is not concave there, or that sit on the border, keep the integer position.
    """
    n, k, h, w = heatmaps.shape
    radius = max(1, int(math.ceil(2 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=heatmaps.dtype, device=heatmaps.device)
    kernel = torch.exp(-taps**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    flat = heatmaps.reshape(n * k, 1, h, w)
    blurred = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    blurred = F.conv2d(F.pad(blurred, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    peak = flat.amax(dim=(2, 3), keepdim=True)
    blurred = blurred * peak / blurred.amax(dim=(2, 3), keepdim=True).clamp_min(1e-10)
    log = blurred.reshape(n, k, h * w).clamp_min(1e-10).log()

    def value(dx: int, dy: int) -> torch.Tensor:
        xx = (xs + dx).clamp(0, w - 1)
        yy = (ys + dy).clamp(0, h - 1)
        return torch.gather(log, 2, (yy * w + xx).reshape(n, k, -1)).reshape(xs.shape)

    centre = value(0, 0)
    gx = 0.5 * (value(1, 0) - value(-1, 0))
    gy = 0.5 * (value(0, 1) - value(0, -1))
    hxx = value(1, 0) - 2 * centre + value(-1, 0)
    hyy = value(0, 1) - 2 * centre + value(0, -1)
    hxy = 0.25 * (value(1, 1) - value(1, -1) - value(-1, 1) + value(-1, -1))
    det = hxx * hyy - hxy**2
    concave = (hxx < -1e-6) & (det > 1e-12)
    safe = torch.where(concave, det, torch.ones_like(det))
    ox = -(hyy * gx - hxy * gy) / safe
    oy = -(-hxy * gx + hxx * gy) / safe
    interior = (xs > 0) & (xs < w - 1) & (ys > 0) & (ys < h - 1) & concave
    zero = torch.zeros_like(ox)
    return (xs.float() + torch.where(interior, ox.clamp(-1.0, 1.0), zero),
            ys.float() + torch.where(interior, oy.clamp(-1.0, 1.0), zero))


def decode(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Arg-max keypoints of heatmaps with sub-pixel refinement.

    Args:
        heatmaps: (N, K, H, W).

    Returns:
        keypoints (N, K, 2) in heatmap pixels and peak values (N, K).
    """
    n, k, h, w = heatmaps.shape
    values, index = heatmaps.reshape(n, k, -1).max(dim=2)
    xs, ys = (index % w)[..., None], (index // w)[..., None]
    fx, fy = subpixel(heatmaps, xs, ys)
    return torch.stack([fx[..., 0], fy[..., 0]], dim=-1), values
