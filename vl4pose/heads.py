"""Auxiliary heads trained beside the pose model on its detached features.

A head owns an :class:`AuxNet` and knows its loss. VL4Pose's own head is ``bones`` (per-edge bone
length mean and log-variance); the acquisition baselines register more kinds in :data:`HEADS`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from vl4pose.errors import ConfigError
from vl4pose.likelihood import bone_lengths
from vl4pose.models import ModelConfig, build_aux
from vl4pose.models.auxnet import bone_nll, split_bone_params
from vl4pose.skeletons import Skeleton


class Head(nn.Module):
    """Base class. Subclasses set ``kind`` and implement :meth:`out_dim` and :meth:`loss`."""

    kind: ClassVar[str] = ""

    def __init__(self, config: ModelConfig, skeleton: Skeleton) -> None:
        super().__init__()
        self.skeleton = skeleton
        self.heatmap_size = config.heatmap_size
        self.net = build_aux(config, self.out_dim(skeleton))

    @staticmethod
    def out_dim(skeleton: Skeleton) -> int:
        raise NotImplementedError

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.net(features)

    def loss(self, features: list[torch.Tensor], batch: dict[str, torch.Tensor], pose_loss: torch.Tensor) -> torch.Tensor:
        """Scalar loss.

        Args:
            features: detached multi-scale features of the batch.
            batch: ``keypoints`` (N, K, 2) heatmap pixels (NaN missing), ``labelled`` (N, K), ``heatmaps``,
                ``weights``.
            pose_loss: (N,) per-image pose loss (detached).
        """
        raise NotImplementedError


class BoneHead(Head):
    """VL4Pose: per-edge bone-length Gaussian, trained by NLL of ground-truth lengths."""

    kind = "bones"

    @staticmethod
    def out_dim(skeleton: Skeleton) -> int:
        return 2 * skeleton.num_edges

    def params(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Bone-length mean and log-variance, each (N, E), in units of the heatmap side."""
        return split_bone_params(self.net(features))

    def loss(self, features: list[torch.Tensor], batch: dict[str, torch.Tensor], pose_loss: torch.Tensor) -> torch.Tensor:
        mean, logvar = self.params(features)
        lengths, mask = bone_lengths(batch["keypoints"], batch["labelled"], self.skeleton, self.heatmap_size)
        return bone_nll(mean, logvar, lengths, mask)


HEADS: dict[str, type[Head]] = {BoneHead.kind: BoneHead}


def build_heads(kinds: list[str], config: ModelConfig, skeleton: Skeleton) -> nn.ModuleDict:
    """Heads by kind; ``bones`` is always included."""
    out = nn.ModuleDict()
    for kind in dict.fromkeys(["bones", *kinds]):
        if kind not in HEADS:
            raise ConfigError(f"unknown auxiliary head {kind!r}; known: {sorted(HEADS)}")
        out[kind] = HEADS[kind](config, skeleton)
    return out
