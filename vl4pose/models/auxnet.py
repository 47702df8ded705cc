"""Auxiliary network on detached multi-scale pose features.

Coarse-to-fine fusion: a strided convolution brings the larger map to the next scale and adds the
(projected) feature map there; repeat to the smallest scale, global-average-pool, then fully connected
layers. VL4Pose uses it with 2 outputs per edge (bone-length mean and log-variance); the learning-loss
and aleatoric baselines reuse it with other output sizes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from vl4pose.models.hourglass import PoseOutput

LOGVAR_RANGE = (-12.0, 4.0)


class AuxNet(nn.Module):
    """Features: list of (N, C, H / 2**i, H / 2**i), i = 0..L -> (N, out_dim)."""

    def __init__(self, feature_channels: int, levels: int, out_dim: int, channels: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(feature_channels, channels, 1) for _ in range(levels))
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
            for _ in range(levels - 1)
        )
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                                nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.project[0](features[0])
        for i, down in enumerate(self.down):
            x = down(x) + self.project[i + 1](features[i + 1])
        return self.fc(x.mean(dim=(2, 3)))


def detached(output: PoseOutput) -> list[torch.Tensor]:
    """The pose model's features with no gradient path back to it."""
    return [f.detach() for f in output.features]


def split_bone_params(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2E) raw outputs -> bone-length mean (N, E) (> 0, in units of the crop side) and log-variance (N, E)."""
    mean_raw, logvar_raw = raw.chunk(2, dim=1)
    low, high = LOGVAR_RANGE
    logvar = low + (high - low) * torch.sigmoid(logvar_raw)
    return F.softplus(mean_raw) + 1e-4, logvar


def bone_nll(mean: torch.Tensor, logvar: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked Gaussian negative log-likelihood of ground-truth bone lengths (constant dropped).

    Args:
        mean, logvar, lengths: (N, E); mask: (N, E) 1 where both keypoints of the edge are labelled.
    """
    nll = 0.5 * (logvar + (lengths - mean) ** 2 * torch.exp(-logvar))
    return (nll * mask).sum() / mask.sum().clamp_min(1.0)
