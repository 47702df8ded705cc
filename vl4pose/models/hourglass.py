"""Stacked hourglass pose estimator (Newell et al. 2016) that also returns multi-scale features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class Residual(nn.Module):
    """Pre-activation bottleneck residual block."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = max(c_out // 2, 8)
        self.body = nn.Sequential(
            nn.BatchNorm2d(c_in), nn.ReLU(inplace=True), nn.Conv2d(c_in, mid, 1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, c_out, 1),
        )
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)
        nn.init.zeros_(self.body[-1].weight)  # each block starts as its skip path: stable, faster training
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class Hourglass(nn.Module):
    """One hourglass of ``depth`` down-samplings; returns its up-path outputs, finest first."""

    def __init__(self, depth: int, channels: int) -> None:
        super().__init__()
        self.depth = depth
        self.skip = nn.ModuleList(Residual(channels, channels) for _ in range(depth))
        self.down = nn.ModuleList(Residual(channels, channels) for _ in range(depth))
        self.up = nn.ModuleList(Residual(channels, channels) for _ in range(depth))
        self.bottom = Residual(channels, channels)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for level in range(self.depth):
            skips.append(self.skip[level](x))
            x = self.down[level](self.pool(x))
        x = self.bottom(x)
        outputs = [x]
        for level in reversed(range(self.depth)):
            x = nn.functional.interpolate(self.up[level](x), scale_factor=2, mode="nearest") + skips[level]
            outputs.append(x)
        return outputs[::-1]


@dataclass(frozen=True)
class PoseOutput:
    """Heatmaps of every stack (loss on each) and the last stack's multi-scale features.

    heatmaps: list of S tensors (N, K, H, H); features: list of depth+1 tensors (N, C, H / 2**i, H / 2**i).
    """

    heatmaps: list[torch.Tensor]
    features: list[torch.Tensor]


class StackedHourglass(nn.Module):
    """Input (N, 3, S, S) in [0, 1] -> heatmaps (N, K, S/4, S/4) per stack + features."""

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, num_keypoints: int, stacks: int = 2, channels: int = 256, depth: int = 4) -> None:
        super().__init__()
        stem = max(channels // 4, 16)
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True),
            Residual(stem, channels // 2), nn.MaxPool2d(2), Residual(channels // 2, channels // 2),
            Residual(channels // 2, channels),
        )
        self.hourglasses = nn.ModuleList(Hourglass(depth, channels) for _ in range(stacks))
        self.heads = nn.ModuleList(
            nn.Sequential(Residual(channels, channels), nn.Conv2d(channels, channels, 1, bias=False),
                          nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
            for _ in range(stacks)
        )
        self.out = nn.ModuleList(nn.Conv2d(channels, num_keypoints, 1) for _ in range(stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(stacks - 1))
        self.merge_heatmaps = nn.ModuleList(nn.Conv2d(num_keypoints, channels, 1) for _ in range(stacks - 1))

    def forward(self, images: torch.Tensor) -> PoseOutput:
        x = self.stem((images - self.mean) / self.std)
        heatmaps: list[torch.Tensor] = []
        features: list[torch.Tensor] = []
        for i, hourglass in enumerate(self.hourglasses):
            features = hourglass(x)
            y = self.heads[i](features[0])
            heatmap = self.out[i](y)
            heatmaps.append(heatmap)
            if i < len(self.hourglasses) - 1:
                x = x + self.merge_features[i](y) + self.merge_heatmaps[i](heatmap)
        return PoseOutput(heatmaps, features)
