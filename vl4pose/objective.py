"""The training objective: the pose network's heatmap loss plus the auxiliary heads' losses."""

from __future__ import annotations

import torch
from torch import nn

from vl4pose.device import to_input, trunk_autocast
from vl4pose.errors import TrainingError
from vl4pose.models import PoseOutput


def training_loss(pose: nn.Module, heads: nn.ModuleDict, batch: dict[str, torch.Tensor],
                  device: torch.device, bf16: bool | None = None) -> tuple[torch.Tensor, float]:
    """(pose + auxiliary loss to differentiate, the pose loss as a number) of one (micro-)batch.

    ``batch`` holds ``image`` (N, 3, S, S), ``heatmaps`` (N, K, H, W) and ``weights`` (N, K) (0 = unlabelled);
    it gains ``keypoint_error`` (N, K), the last stack's detached per-keypoint error the heads learn from.
    The trunk runs under :func:`vl4pose.device.trunk_autocast` (``bf16``: None = on CUDA only); the losses are
    computed in fp32.
    """
    with trunk_autocast(device, bf16):
        output = pose(to_input(batch["image"], device))
    output = PoseOutput([h.float() for h in output.heatmaps], [f.float() for f in output.features])
    weights = batch["weights"][..., None, None]
    # squared error summed over pixels, averaged over keypoints: a per-pixel mean makes the gradients
    # of sparse Gaussian targets so small that Adam's epsilon swamps them and training stalls
    errors = [((h - batch["heatmaps"]) ** 2 * weights).sum(dim=(2, 3)) for h in output.heatmaps]  # (N, K) each
    per_image = sum(e.mean(dim=1) for e in errors)
    batch["keypoint_error"] = errors[-1].detach()
    features = [f.detach() for f in output.features]
    aux = sum(head.loss(features, batch, per_image.detach()) for head in heads.values())
    loss = per_image.mean() + aux
    if not torch.isfinite(loss):
        raise TrainingError("training diverged (loss is not finite); lower --lr")
    return loss, float(per_image.mean().detach())
