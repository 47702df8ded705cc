"""Running the torch networks, and the torch face of the post-network maths, in heatmap pixels.

:func:`analyse` is :func:`vl4pose.pipeline.analyse_heatmaps` (NumPy, shared with the Predictor and the ONNX
scorer) with torch tensors in and out, for calibration, strategies and simulations.
Shapes: N images, K keypoints, M candidates, E edges, H heatmap side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vl4pose.checkpoint import Calibration
from vl4pose.device import to_input, trunk_autocast
from vl4pose.heads import BoneHead
from vl4pose.models.hourglass import StackedHourglass
from vl4pose.pipeline import NetworkArrays, analyse_heatmaps
from vl4pose.postprocess import DEFAULT_DECODER, flip_average
from vl4pose.skeletons import Skeleton


@dataclass
class NetworkOutput:
    """heatmaps (N, K, H, H) of the last stack; bone ``mean`` and ``logvar`` (N, E); ``features`` the last
    stack's multi-scale features (kept for the acquisition baselines)."""

    heatmaps: torch.Tensor
    mean: torch.Tensor
    logvar: torch.Tensor
    features: list[torch.Tensor]


@torch.no_grad()
def run_network(pose: StackedHourglass, bones: BoneHead, images: torch.Tensor,
                flip_permutation: list[int] | None = None, bones_for: int | None = None) -> NetworkOutput:
    """Forward (N, 3, S, S) crops in [0, 1] through the pose model and the bone head, on the device the
    pose model lives on (bf16 trunk on CUDA). Outputs come back as fp32 CPU tensors.

    With ``flip_permutation`` (the skeleton's left/right swap) the mirrored crops run in the same batch and
    their heatmaps, mirrored back with left and right swapped, are averaged with the plain ones (flip test).
    Mirroring a crop about its centre maps heatmap pixel j to H-1-j exactly (pixel centres at
    ``j*stride + (stride-1)/2``; :func:`vl4pose.postprocess.flip_average`). The bone head and the features stay
    those of the unflipped crop. ``bones_for``: bone head and features of the first that many images only (the
    Predictor sends plain and mirrored crops in one batch).
    """
    device = next(pose.parameters()).device
    n = images.shape[0]
    batch = torch.cat([images, images.flip(-1)]) if flip_permutation is not None else images
    with trunk_autocast(device):
        output = pose(to_input(batch, device))
    heatmaps = output.heatmaps[-1].float()
    if flip_permutation is not None:
        heatmaps = heatmaps.cpu().numpy()
        heatmaps = torch.from_numpy(flip_average(heatmaps[:n], heatmaps[n:], flip_permutation))
    features = [f[:n if bones_for is None else bones_for].float() for f in output.features]
    mean, logvar = bones.params(features)
    return NetworkOutput(heatmaps.cpu(), mean.float().cpu(), logvar.float().cpu(), [f.cpu() for f in features])


@dataclass
class HeatmapPoses:
    """Everything scored for a batch, in heatmap pixels (float32 tensors; see :class:`vl4pose.pipeline.HeatmapPoses`).

    Attributes:
        raw: (N, K, 2) arg-max pose; peak: (N, K) each keypoint's heatmap maximum.
        refined: (N, K, 2) tree-DP pose; confidence: (N, K) max-marginal share; moved: (N, K) bool.
        log_likelihood: (N,) expected log-likelihood; edge_log_likelihood: (N, E).
    """

    raw: torch.Tensor
    peak: torch.Tensor
    refined: torch.Tensor
    confidence: torch.Tensor
    moved: torch.Tensor
    log_likelihood: torch.Tensor
    edge_log_likelihood: torch.Tensor


def analyse(out: NetworkOutput, skeleton: Skeleton, calibration: Calibration,
            clamps: list[dict[int, tuple[float, float]]] | None = None, decoder: str = DEFAULT_DECODER,
            sigma: float = 1.0) -> HeatmapPoses:
    """Candidates, expected log-likelihood and refinement for a batch (:func:`vl4pose.pipeline.analyse_heatmaps`).

    Args:
        out: network outputs for N images.
        clamps: per image, {keypoint index: (x, y) heatmap pixels} placed by an annotator; they become
            the only candidate of their keypoint in the refinement (not in the likelihood).
        decoder, sigma: the candidates' sub-pixel decoder and the model's target sigma (for ``dark``).
    """
    arrays = NetworkArrays(out.heatmaps.detach().float().cpu().numpy(), out.mean.detach().float().cpu().numpy(),
                           out.logvar.detach().float().cpu().numpy())
    poses = analyse_heatmaps(arrays, skeleton, calibration, clamps, decoder, sigma)
    return HeatmapPoses(*(torch.from_numpy(np.asarray(getattr(poses, name))).float() for name in (
        "raw", "peak", "refined", "confidence")), torch.from_numpy(np.asarray(poses.moved)),
        torch.from_numpy(poses.log_likelihood).float(), torch.from_numpy(poses.edge_log_likelihood).float())
