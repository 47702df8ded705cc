"""From network outputs to poses, likelihoods and refinements, in heatmap pixels.

Shapes: N images, K keypoints, M candidates, E edges, H heatmap side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vl4pose.checkpoint import Calibration
from vl4pose.device import to_input, trunk_autocast
from vl4pose.heads import BoneHead
from vl4pose.likelihood import Candidates, expected_log_likelihood, find_candidates
from vl4pose.models.hourglass import StackedHourglass
from vl4pose.refine import Refinement, refine
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
                flip_permutation: list[int] | None = None) -> NetworkOutput:
    """Forward (N, 3, S, S) crops in [0, 1] through the pose model and the bone head, on the device the
    pose model lives on (bf16 trunk on CUDA). Outputs come back as fp32 CPU tensors.

    With ``flip_permutation`` (the skeleton's left/right swap) the mirrored crops run in the same batch and
    their heatmaps, mirrored back with left and right swapped, are averaged with the plain ones (flip test).
    Mirroring a crop about its centre maps heatmap pixel j to H-1-j exactly (pixel centres at
    ``j*stride + (stride-1)/2``). The bone head and the features stay those of the unflipped crop.
    """
    device = next(pose.parameters()).device
    n = images.shape[0]
    batch = torch.cat([images, images.flip(-1)]) if flip_permutation is not None else images
    with trunk_autocast(device):
        output = pose(to_input(batch, device))
    heatmaps = output.heatmaps[-1].float()
    if flip_permutation is not None:
        heatmaps = 0.5 * (heatmaps[:n] + heatmaps[n:].flip(-1)[:, flip_permutation])
    features = [f[:n].float() for f in output.features]
    mean, logvar = bones.params(features)
    return NetworkOutput(heatmaps.cpu(), mean.float().cpu(), logvar.float().cpu(), [f.cpu() for f in features])


@dataclass
class HeatmapPoses:
    """Everything scored for a batch, in heatmap pixels.

    Attributes:
        raw: (N, K, 2) arg-max pose; peak: (N, K) its heatmap values.
        refined: (N, K, 2) tree-DP pose; confidence: (N, K) max-marginal share; moved: (N, K) bool.
        log_likelihood: (N,) expected log-likelihood; edge_log_likelihood: (N, E).
        candidates: the candidate sets (before clamping).
    """

    raw: torch.Tensor
    peak: torch.Tensor
    refined: torch.Tensor
    confidence: torch.Tensor
    moved: torch.Tensor
    log_likelihood: torch.Tensor
    edge_log_likelihood: torch.Tensor
    candidates: Candidates


def analyse(out: NetworkOutput, skeleton: Skeleton, calibration: Calibration,
            clamps: list[dict[int, tuple[float, float]]] | None = None) -> HeatmapPoses:
    """Candidates, expected log-likelihood and refinement for a batch.

    Args:
        out: network outputs for N images.
        clamps: per image, {keypoint index: (x, y) heatmap pixels} placed by an annotator; they become
            the only candidate of their keypoint in the refinement (not in the likelihood).
    """
    size = float(out.heatmaps.shape[-1])
    candidates = find_candidates(out.heatmaps.float(), calibration.max_candidates)
    log_probs = candidates.log_probs(calibration.temperature)
    total, per_edge = expected_log_likelihood(candidates, log_probs, out.mean, out.logvar, skeleton, size)
    solved: Refinement
    if clamps and any(clamps):
        clamped = Candidates(candidates.xy.clone(), candidates.value.clone(), candidates.valid.clone())
        for image, points in enumerate(clamps):
            for keypoint, xy in points.items():
                clamped.clamp(keypoint, image, xy)
        solved = refine(clamped, clamped.log_probs(calibration.temperature), out.mean, out.logvar, skeleton, size)
        for image, points in enumerate(clamps):
            for keypoint in points:
                solved.moved[image, keypoint] = False
    else:
        solved = refine(candidates, log_probs, out.mean, out.logvar, skeleton, size)
    raw = candidates.xy[:, :, 0]
    peak = candidates.value[:, :, 0]
    return HeatmapPoses(raw, peak, solved.xy.float(), solved.confidence, solved.moved, total, per_edge, candidates)
