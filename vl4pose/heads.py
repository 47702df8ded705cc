"""Auxiliary heads trained beside the pose model on its detached features.

A head owns an :class:`AuxNet` and knows its loss. VL4Pose's own head is ``bones`` (per-edge bone
length mean and log-variance); the acquisition baselines add ``learning_loss`` and ``aleatoric``
(see :mod:`vl4pose.strategies`), all registered in :data:`HEADS`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from vl4pose.errors import ConfigError
from vl4pose.likelihood import bone_lengths
from vl4pose.models import ModelConfig, build_aux
from vl4pose.models.auxnet import LOGVAR_RANGE, bone_nll, split_bone_params
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
                ``weights``, ``keypoint_error`` (N, K) the last stack's squared heatmap error per keypoint
                (summed over pixels, detached).
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


class LearningLossHead(Head):
    """Learning Loss baseline (Yoo & Kweon 2019): predicts the per-image pose loss.

    Trained with their pairwise ranking loss on the detached ``pose_loss``: the batch is split into
    pairs (i, B-1-i) and ``max(0, -sign(l_i - l_j) * (p_i - p_j) + margin)`` is averaged, so only the
    order of the predicted losses matters, not their scale.
    """

    kind = "learning_loss"
    margin: ClassVar[float] = 1.0

    @staticmethod
    def out_dim(skeleton: Skeleton) -> int:
        return 1

    def predicted_loss(self, features: list[torch.Tensor]) -> torch.Tensor:
        """(N,) predicted pose loss (an unnormalised ranking score: higher = worse prediction)."""
        return self.net(features)[:, 0]

    def loss(self, features: list[torch.Tensor], batch: dict[str, torch.Tensor], pose_loss: torch.Tensor) -> torch.Tensor:
        return ranking_loss(self.predicted_loss(features), pose_loss.detach(), self.margin)


def ranking_loss(predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Yoo & Kweon's pairwise loss on (N,) predictions and targets; pairs (i, N-1-i), i < N // 2.

    Zero (with a gradient path) for fewer than two images.
    """
    half = predicted.shape[0] // 2
    if half == 0:
        return predicted.sum() * 0.0
    p_i, p_j = predicted[:half], predicted.flip(0)[:half]
    sign = torch.sign(target[:half] - target.flip(0)[:half])
    return torch.clamp(margin - sign * (p_i - p_j), min=0.0).mean()


class AleatoricHead(Head):
    """Aleatoric baseline (Kendall & Gal 2017, heteroscedastic regression), on detached features.

    The head predicts a per-keypoint log-variance ``s`` of the pose model's own heatmap error: with
    ``e_k = batch["keypoint_error"]`` (the last stack's squared heatmap error of keypoint ``k``, summed
    over pixels, detached), the loss is the heteroscedastic NLL ``0.5 * exp(-s_k) * e_k + 0.5 * s_k`` over
    keypoints with a target, so ``s_k`` learns the log of the expected error from the image. The
    acquisition score is the mean predicted log-variance.
    """

    kind = "aleatoric"

    @staticmethod
    def out_dim(skeleton: Skeleton) -> int:
        return skeleton.num_keypoints

    def log_variance(self, features: list[torch.Tensor]) -> torch.Tensor:
        """(N, K) predicted per-keypoint log-variance of the heatmap error."""
        low, high = LOGVAR_RANGE
        return low + (high - low) * torch.sigmoid(self.net(features))

    def loss(self, features: list[torch.Tensor], batch: dict[str, torch.Tensor], pose_loss: torch.Tensor) -> torch.Tensor:
        weights = batch["weights"]
        logvar = self.log_variance(features)
        nll = 0.5 * torch.exp(-logvar) * batch["keypoint_error"].detach() + 0.5 * logvar
        return (nll * weights).sum() / weights.sum().clamp_min(1.0)


HEADS: dict[str, type[Head]] = {h.kind: h for h in (BoneHead, LearningLossHead, AleatoricHead)}


def build_heads(kinds: list[str], config: ModelConfig, skeleton: Skeleton) -> nn.ModuleDict:
    """Heads by kind; ``bones`` is always included."""
    out = nn.ModuleDict()
    for kind in dict.fromkeys(["bones", *kinds]):
        if kind not in HEADS:
            raise ConfigError(f"unknown auxiliary head {kind!r}; known: {sorted(HEADS)}")
        out[kind] = HEADS[kind](config, skeleton)
    return out
