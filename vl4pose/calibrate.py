"""Validation passes over cached crops: accuracy during training, and calibration of the likelihood.

Both work in heatmap pixels: PCK with the torso normaliser is invariant to the similarity transform
between image and crop, so no mapping back is needed here.

Calibration needs evidence. Under :data:`MIN_CALIBRATION_IMAGES` validation images the temperature (which
changes the ranking) is not fitted on them when the previous model's is known: it is kept, and the report
says so (``fallback``). The score's reference distribution is always the *new* model's log-likelihoods of
the validation images (a previous model's values are on another scale and are never pooled). A caller
that trains round after round (the coordinator) passes every round's validation images, so the pool grows;
it says how many are the current round's (``current_images``) and the report names that ``pooled_rounds``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from vl4pose.checkpoint import Calibration, Checkpoint
from vl4pose.data.crops import CropCache
from vl4pose.device import prepare_module
from vl4pose.heads import BoneHead
from vl4pose.inference import NetworkOutput, analyse, run_network
from vl4pose.likelihood import find_candidates
from vl4pose.metrics import auroc, correct_keypoints, pck, torso_size
from vl4pose.models.hourglass import StackedHourglass
from vl4pose.skeletons import Skeleton

log = logging.getLogger(__name__)

TEMPERATURES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
MIN_CALIBRATION_IMAGES = 20
"""Fewest validation images (with a labelled keypoint) the temperature is fitted on; with fewer, the previous
model's temperature is kept when there is one (``fallback: previous_temperature``)."""
FALLBACKS = (None, "pooled_rounds", "previous_temperature", "too_few")


@dataclass
class ValidationPass:
    """Network outputs on the validation crops with ground truth in heatmap pixels.

    output: concatenated network outputs (N images); keypoints (N, K, 2); labelled (N, K) bool.
    """

    output: NetworkOutput
    keypoints: np.ndarray
    labelled: np.ndarray


@torch.no_grad()
def validation_pass(pose: StackedHourglass, bones: BoneHead, cache: CropCache, skeleton: Skeleton,
                    sigma: float, batch_size: int = 32) -> ValidationPass:
    """Run the networks over every cached sample, unaugmented."""
    pose.eval()
    bones.eval()
    rng = np.random.default_rng(0)
    heat, mean, logvar, keypoints, labelled = [], [], [], [], []
    for start in range(0, len(cache), batch_size):
        batch = cache.batch(np.arange(start, min(start + batch_size, len(cache))), skeleton, sigma, None, rng)
        out = run_network(pose, bones, batch["image"])
        heat.append(out.heatmaps)
        mean.append(out.mean)
        logvar.append(out.logvar)
        keypoints.append(batch["keypoints"].cpu().numpy())
        labelled.append(batch["labelled"].cpu().numpy() > 0)
    output = NetworkOutput(torch.cat(heat), torch.cat(mean), torch.cat(logvar), [])
    return ValidationPass(output, np.concatenate(keypoints), np.concatenate(labelled))


def score_pass(val: ValidationPass, skeleton: Skeleton, calibration: Calibration) -> dict:
    """PCK@0.2 of raw and refined poses, bone NLL and failure AUROC on a validation pass."""
    poses = analyse(val.output, skeleton, calibration)
    torso = torso_size(val.keypoints, val.labelled, skeleton)
    raw_correct = correct_keypoints(poses.raw.numpy(), val.keypoints, val.labelled, torso, 0.2)
    ref_correct = correct_keypoints(poses.refined.numpy(), val.keypoints, val.labelled, torso, 0.2)
    raw_pck, _, per_image = pck(raw_correct)
    refined_pck, _, _ = pck(ref_correct)
    evaluated = np.isfinite(per_image)
    ll = poses.log_likelihood.numpy()
    return {
        "pck@0.2": raw_pck,
        "pck@0.2_refined": refined_pck,
        "failure_auroc": auroc(-ll[evaluated], per_image[evaluated] < 0.5),
        "failures": int((per_image[evaluated] < 0.5).sum()),
        "images": int(evaluated.sum()),
        "log_likelihood": ll,
    }


def fit_temperature(val: ValidationPass, max_candidates: int, sigma: float) -> tuple[float, dict[float, float]]:
    """Temperature minimising the NLL of the correct candidate among a keypoint's candidates.

    The correct candidate is the one nearest the ground truth, when it lies within 2 sigma; keypoints
    with no candidate that close give no evidence and are skipped.

    Returns:
        the best temperature and the NLL for every temperature tried.
    """
    candidates = find_candidates(val.output.heatmaps.float(), max_candidates)
    gt = torch.from_numpy(val.keypoints).float()
    dist = torch.linalg.vector_norm(candidates.xy - gt[:, :, None, :], dim=-1)
    dist = torch.where(candidates.valid, dist, torch.full_like(dist, torch.inf))
    nearest, index = dist.min(dim=2)
    usable = torch.from_numpy(val.labelled) & (nearest <= 2.0 * sigma) & (candidates.valid.sum(dim=2) > 1)
    nll = {}
    for tau in TEMPERATURES:
        logp = candidates.log_probs(tau).gather(2, index[..., None])[..., 0]
        nll[tau] = float(-logp[usable].mean()) if usable.any() else float("nan")
    finite = {t: v for t, v in nll.items() if np.isfinite(v)}
    best = min(finite, key=finite.get) if finite else 0.1
    return best, nll


def fit_min_peak(val: ValidationPass, ceiling: float = 0.1, keep: float = 0.95) -> float:
    """Heatmap peak below which a keypoint counts as not placed: at most ``ceiling``, and low enough that
    ``keep`` of the labelled validation keypoints are placed.

    A young model's heatmaps are flat (peaks of a few hundredths): a fixed threshold would leave its
    pre-annotations empty, while the annotator is better served by every keypoint to accept or move.
    """
    peaks = val.output.heatmaps.float().flatten(2).amax(dim=2).numpy()[val.labelled]
    if peaks.size == 0:
        return ceiling
    return float(min(ceiling, np.quantile(peaks, 1.0 - keep, method="lower")))


def choose_fallback(images: int, current_images: int | None, has_previous: bool,
                    min_images: int = MIN_CALIBRATION_IMAGES) -> str | None:
    """How the temperature is chosen (one of :data:`FALLBACKS`).

    None: enough validation images of this round; ``pooled_rounds``: enough only with earlier rounds'
    validation images (re-scored by the new model); ``previous_temperature``: too few even so, the previous
    model's temperature is kept; ``too_few``: too few and no previous model, fitted on what there is.
    """
    if images >= min_images:
        return "pooled_rounds" if current_images is not None and current_images < min_images else None
    return "previous_temperature" if has_previous else "too_few"


def calibrate(val: ValidationPass, skeleton: Skeleton, max_candidates: int, sigma: float,
              min_peak_ceiling: float = 0.1, previous: Calibration | None = None, current_images: int | None = None,
              min_images: int = MIN_CALIBRATION_IMAGES) -> tuple[Calibration, dict]:
    """Fit the temperature (or keep ``previous``'s, see :func:`choose_fallback`) and the placement threshold,
    then store the new model's validation likelihoods that define the calibrated score.

    Args:
        val: the new model's pass over the validation images.
        previous: the calibration of the model this one was fine-tuned from, if any.
        current_images: how many of the validation images are the current round's (None: all of them).
        min_images: fewest validation images to fit the temperature on.

    Returns:
        the calibration and a report with ``fallback``, ``validation_images``, ``current_images``,
        ``min_images`` and ``temperature`` besides the validation scores.
    """
    images = int(np.asarray(val.labelled).any(axis=1).sum())
    fallback = choose_fallback(images, current_images, previous is not None, min_images)
    fitted, nll = fit_temperature(val, max_candidates, sigma)
    temperature = previous.temperature if fallback == "previous_temperature" else fitted
    min_peak = fit_min_peak(val, ceiling=min_peak_ceiling)
    calibration = Calibration(temperature=temperature, max_candidates=max_candidates, min_peak=min_peak)
    scores = score_pass(val, skeleton, calibration)
    calibration.reference = sorted(float(v) for v in scores.pop("log_likelihood"))
    if fallback not in (None, "pooled_rounds"):
        log.warning("calibration on %d validation images (fewer than %d): %s, temperature %.3g (fitted: %.3g)",
                    images, min_images, fallback, temperature, fitted)
    log.info("calibrated temperature %.3g (candidate NLL %s), min peak %.3g; validation failure AUROC %.3f",
             temperature, {k: round(v, 3) for k, v in nll.items()}, min_peak, scores["failure_auroc"])
    report = {"fallback": fallback, "validation_images": images, "current_images": current_images,
              "min_images": min_images, "temperature": temperature, "fitted_temperature": fitted}
    return calibration, {**report, "temperature_nll": {str(k): v for k, v in nll.items()}, **scores}


def calibrate_checkpoint(ckpt: Checkpoint, device: torch.device, val_cache: CropCache, max_candidates: int,
                         history: list, **options) -> Checkpoint:
    """Calibrate a trained checkpoint on the validation crops, on ``device``; returns it with its calibration
    and ``metrics`` gaining ``calibration`` (the report) and ``history``. ``options``: see :func:`calibrate`."""
    ckpt.pose, ckpt.heads = prepare_module(ckpt.pose, device), ckpt.heads.to(device)
    val = validation_pass(ckpt.pose, ckpt.heads["bones"], val_cache, ckpt.skeleton, ckpt.model_config.sigma)
    calibration, report = calibrate(val, ckpt.skeleton, max_candidates, ckpt.model_config.sigma, **options)
    ckpt.calibration = calibration
    ckpt.metrics = {**ckpt.metrics, "calibration": report, "history": history}
    return ckpt
