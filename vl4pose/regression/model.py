"""Direct-regression variant (the paper's hand-pose setting): keypoints regressed directly, scored by
the offset likelihood of VL4Pose's Eq. 5.

The model reads the pose network's multi-scale features (the stacked hourglass of a preset; its
heatmaps are not used) with two heads:

- a keypoint regressor (DeepPrior style: 1x1 conv on the ~8x8 feature map, flatten, fully connected)
  trained end-to-end with the backbone by an L1 loss; it outputs (K, 2) positions in units of the crop
  side;
- the auxiliary offset network (the same :class:`AuxNet` as VL4Pose's bone head) on *detached* features,
  5 numbers per edge: an offset ``o_e`` (2) and a Cholesky factor ``L_e`` of ``Sigma_e = L_e L_e^T`` (3),
  trained by the Gaussian NLL of the ground-truth offsets.

``log q(y_c | y_p, x) = log N(y_c - (y_p + o_e); 0, Sigma_e)``; the likelihood of a regressed pose is the
sum over edges (a point estimate: no expectation over candidates). Low = unusual = label first.

Shapes: N images, K keypoints, E edges; coordinates in units of the crop side.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vl4pose.data.crops import CropCache
from vl4pose.data.transforms import AugmentConfig
from vl4pose.errors import ConfigError
from vl4pose.models import ModelConfig, build_aux, build_pose
from vl4pose.skeletons import Skeleton

LOG_STD_RANGE = (-7.0, 1.0)
"""Range of log(diagonal of L_e), i.e. of per-axis standard deviations in crop units."""
_LOG_2PI = math.log(2 * math.pi)


def offset_params(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 5E) raw outputs -> offsets (N, E, 2) and lower-triangular Cholesky factors (N, E, 2, 2)."""
    raw = raw.reshape(raw.shape[0], -1, 5)
    low, high = LOG_STD_RANGE
    diag = (low + (high - low) * torch.sigmoid(raw[..., 2:4])).exp()
    l11, l22 = diag[..., 0], diag[..., 1]
    l21 = raw[..., 4] * l22  # off-diagonal relative to the second axis' scale
    chol = torch.stack([torch.stack([l11, torch.zeros_like(l11)], dim=-1), torch.stack([l21, l22], dim=-1)], dim=-2)
    return raw[..., 0:2], chol


def offset_log_likelihood(keypoints: torch.Tensor, offset: torch.Tensor, chol: torch.Tensor,
                          skeleton: Skeleton) -> torch.Tensor:
    """(N, E) ``log N(y_c - (y_p + o_e); 0, L_e L_e^T)`` for (N, K, 2) keypoints, offsets (N, E, 2), (N, E, 2, 2) L."""
    parents = torch.tensor([p for p, _ in skeleton.edges])
    children = torch.tensor([c for _, c in skeleton.edges])
    d = keypoints[:, children] - keypoints[:, parents] - offset
    l11, l21, l22 = chol[..., 0, 0], chol[..., 1, 0], chol[..., 1, 1]
    z1 = d[..., 0] / l11  # solve L z = d (forward substitution)
    z2 = (d[..., 1] - l21 * z1) / l22
    return -_LOG_2PI - torch.log(l11) - torch.log(l22) - 0.5 * (z1**2 + z2**2)


def offset_nll(keypoints: torch.Tensor, labelled: torch.Tensor, offset: torch.Tensor, chol: torch.Tensor,
               skeleton: Skeleton) -> torch.Tensor:
    """Mean NLL of ground-truth offsets over edges whose two keypoints are labelled ((N, K) mask)."""
    parents = [p for p, _ in skeleton.edges]
    children = [c for _, c in skeleton.edges]
    mask = ((labelled[:, parents] > 0) & (labelled[:, children] > 0)).float()
    logq = offset_log_likelihood(torch.nan_to_num(keypoints), offset, chol, skeleton)
    return -(logq * mask).sum() / mask.sum().clamp_min(1.0)


class KeypointRegressor(nn.Module):
    """(N, C, s, s) feature map -> (N, K, 2) keypoints: 1x1 conv, flatten, two fully connected layers."""

    def __init__(self, channels: int, side: int, num_keypoints: int, width: int = 32, hidden: int = 256) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.reduce = nn.Sequential(nn.Conv2d(channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.fc = nn.Sequential(nn.Linear(width * side * side, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, 2 * num_keypoints))
        nn.init.zeros_(self.fc[-1].weight)
        nn.init.constant_(self.fc[-1].bias, 0.5)  # start at the crop centre

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.fc(self.reduce(feature).flatten(1)).reshape(-1, self.num_keypoints, 2)


class IntegralRegressor(nn.Module):
    """(N, C, H, H) finest feature map -> (N, K, 2) keypoints by soft-argmax (integral regression): a 1x1
    convolution gives one map per keypoint, a spatial softmax turns it into weights, the keypoint is the
    weighted mean of the pixel centres (in crop units)."""

    def __init__(self, channels: int, num_keypoints: int, input_size: int) -> None:
        super().__init__()
        self.maps = nn.Conv2d(channels, num_keypoints, 1)
        self.input_size = input_size

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        n, k = feature.shape[0], self.maps.out_channels
        logits = self.maps(feature)
        side = logits.shape[-1]
        stride = self.input_size / side
        weights = torch.softmax(logits.reshape(n, k, -1), dim=-1).reshape(n, k, side, side)
        centres = (torch.arange(side, dtype=feature.dtype) * stride + (stride - 1) / 2) / self.input_size
        return torch.stack([(weights.sum(dim=2) * centres).sum(dim=-1), (weights.sum(dim=3) * centres).sum(dim=-1)], dim=-1)


REGRESSORS = ("integral", "fc")


@dataclass
class RegressionOutput:
    """keypoints (N, K, 2); offset (N, E, 2); chol (N, E, 2, 2); log_likelihood (N,) of the regressed pose."""

    keypoints: torch.Tensor
    offset: torch.Tensor
    chol: torch.Tensor
    log_likelihood: torch.Tensor


class RegressionPoseModel(nn.Module):
    """Backbone features -> regressed keypoints, plus the offset auxiliary network on detached features."""

    def __init__(self, config: ModelConfig, skeleton: Skeleton, regressor: str = "integral") -> None:
        super().__init__()
        if regressor not in REGRESSORS:
            raise ConfigError(f"unknown regressor {regressor!r}; choose one of {list(REGRESSORS)}")
        self.skeleton = skeleton
        self.backbone = build_pose(config.validate(), skeleton.num_keypoints)
        if regressor == "fc":
            self.level = max(0, min(config.depth, int(round(math.log2(max(config.heatmap_size / 8, 1))))))
            side = config.heatmap_size >> self.level
            self.regressor = KeypointRegressor(config.channels, side, skeleton.num_keypoints)
        else:
            self.level = 0
            self.regressor = IntegralRegressor(config.channels, skeleton.num_keypoints, config.input_size)
        self.offsets = build_aux(config, 5 * skeleton.num_edges)

    def forward(self, images: torch.Tensor) -> RegressionOutput:
        """(N, 3, S, S) crops in [0, 1] -> regressed pose and its offset likelihood."""
        features = self.backbone(images).features
        keypoints = self.regressor(features[self.level])
        offset, chol = offset_params(self.offsets([f.detach() for f in features]))
        logq = offset_log_likelihood(keypoints.detach(), offset, chol, self.skeleton)
        return RegressionOutput(keypoints, offset, chol, logq.sum(dim=1))

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """L1 keypoint loss + offset NLL for a batch with ``image``, ``keypoints`` (N, K, 2) in crop units
        (NaN missing) and ``labelled`` (N, K)."""
        out = self(batch["image"])
        mask = (batch["labelled"] > 0).float()
        target = torch.nan_to_num(batch["keypoints"])
        l1 = ((out.keypoints - target).abs().sum(dim=-1) * mask).sum() / mask.sum().clamp_min(1.0)
        nll = offset_nll(target, mask, out.offset, out.chol, self.skeleton)
        return l1 + nll, {"l1": float(l1.detach()), "offset_nll": float(nll.detach())}


def fit_regression(model: RegressionPoseModel, batches: Callable[[int], dict[str, torch.Tensor]], steps: int,
                   lr: float = 1e-3, log_every: int = 0) -> list[dict[str, float]]:
    """Adam with a cosine schedule for ``steps`` steps over ``batches(step)``; returns per-step losses."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(steps, 1), eta_min=lr * 0.02)
    history = []
    model.train()
    for step in range(steps):
        loss, parts = model.loss(batches(step))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        history.append(parts)
    model.eval()
    return history


def crop_batches(cache: CropCache, skeleton: Skeleton, batch_size: int, seed: int = 0,
                 augment: AugmentConfig | None = None) -> Callable[[int], dict[str, torch.Tensor]]:
    """Training batches from cached person crops, keypoints converted to crop units."""
    augment = augment or AugmentConfig(whole_image_prob=0.0)

    def batch(step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([seed, step])
        indices = rng.choice(len(cache), size=min(batch_size, len(cache)), replace=False)
        return crop_units(cache.batch(indices, skeleton, 1.0, augment, rng), cache.input_size)

    return batch


def crop_units(batch: dict[str, torch.Tensor], input_size: int) -> dict[str, torch.Tensor]:
    """A :class:`CropCache` batch with keypoints moved from heatmap pixels to crop units (input pixel / S)."""
    return {**batch, "keypoints": (batch["keypoints"] * 4 + 1.5) / input_size}
