"""Acquisition strategies: which unlabelled images to label next (baal style, one object per heuristic).

Every strategy turns a batch of network outputs into a per-image number with :meth:`Strategy.scores`
(higher = label first); :meth:`Strategy.select` picks the top ``budget`` of a pool. Core-Set is the
exception: it works on embeddings and needs the labelled set, so it overrides :meth:`Strategy.values`,
:meth:`Strategy.image_scores` and :meth:`Strategy.select`.

Pool outputs are computed once per round with :func:`pool_values`, in batches, on cached person crops
without augmentation (the active-learning simulation protocol: ground-truth boxes). The product ranks
through :class:`vl4pose.predictor.Predictor`, which finds the person itself (``auto_box``).

EGL++ (expected gradient length) is not implemented: it needs one backward pass through the whole pose
model per pool image (not batchable without per-sample gradients): ``vl4pose bench`` measures it as
``egl_backward_ms``, about 60 ms against 18 ms for a batched forward at the ``cpu`` preset, so its
selection would cost 3-4x any other strategy's (about 1.6 h more over the CPU protocol's 12 rounds,
+40 % on the whole run), and its pseudo-label expectation is a design of its own that the method notes
leave open. See docs/SIMULATION.md.

Shapes: B images in a batch, N pool images, L labelled images, D embedding size, K keypoints.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from vl4pose.checkpoint import Calibration, Checkpoint
from vl4pose.data.crops import CropCache
from vl4pose.errors import ConfigError
from vl4pose.inference import NetworkOutput, analyse, run_network
from vl4pose.likelihood import find_candidates
from vl4pose.skeletons import Skeleton

log = logging.getLogger(__name__)


@dataclass
class PoolBatch:
    """What a strategy may read for B pool images: network outputs (heatmaps (B, K, H, H), bone
    parameters (B, E), multi-scale features), the checkpoint's auxiliary heads, skeleton and calibration."""

    output: NetworkOutput
    heads: Mapping[str, nn.Module]
    skeleton: Skeleton
    calibration: Calibration


class Strategy:
    """Base class. Subclasses set ``name`` (and ``heads`` they need trained) and implement :meth:`scores`."""

    name: ClassVar[str] = ""
    heads: ClassVar[tuple[str, ...]] = ()
    """Auxiliary heads (kinds in :data:`vl4pose.heads.HEADS`) the model must carry."""
    uses_network: ClassVar[bool] = True
    uses_labelled: ClassVar[bool] = False
    """The strategy also needs the labelled images' values (Core-Set)."""

    def scores(self, batch: PoolBatch) -> np.ndarray:
        """(B,) informativeness: higher = label first."""
        raise NotImplementedError

    def values(self, batch: PoolBatch) -> np.ndarray:
        """Per-image values kept for selection: (B,) scores by default, (B, D) embeddings for Core-Set."""
        return self.scores(batch)

    def image_scores(self, values: np.ndarray, labelled_values: np.ndarray | None = None) -> np.ndarray:
        """(N,) scores of pool images from their values (higher = label first)."""
        return np.asarray(values, dtype=np.float64)

    def select(self, values: np.ndarray, budget: int, rng: np.random.Generator,
               labelled_values: np.ndarray | None = None) -> np.ndarray:
        """Indices of the ``budget`` pool images to label next: highest scores, ties broken at random."""
        scores = self.image_scores(values, labelled_values)
        budget = min(budget, len(scores))
        order = np.lexsort((rng.random(len(scores)), -scores))
        return np.sort(order[:budget])


class RandomStrategy(Strategy):
    """Uniform sampling: every image scores the same, so the random tie-break decides."""

    name = "random"
    uses_network = False

    def scores(self, batch: PoolBatch) -> np.ndarray:
        return np.zeros(batch.output.heatmaps.shape[0])


class CoreSet(Strategy):
    """Core-Set (Sener & Savarese 2018): k-centre greedy on the global-average-pooled bottleneck
    features of the pose model; the labelled images are the initial centres."""

    name = "coreset"
    uses_labelled = True

    def values(self, batch: PoolBatch) -> np.ndarray:
        """(B, D) embedding: the smallest-scale feature map, averaged over space."""
        return batch.output.features[-1].mean(dim=(2, 3)).double().numpy()

    def scores(self, batch: PoolBatch) -> np.ndarray:
        raise ConfigError("coreset scores need the labelled set; use image_scores(values, labelled_values)")

    def image_scores(self, values: np.ndarray, labelled_values: np.ndarray | None = None) -> np.ndarray:
        """(N,) distance to the nearest labelled embedding (all zeros without a labelled set)."""
        if labelled_values is None or len(labelled_values) == 0:
            return np.zeros(len(values))
        return nearest_distance(values, labelled_values)

    def select(self, values: np.ndarray, budget: int, rng: np.random.Generator,
               labelled_values: np.ndarray | None = None) -> np.ndarray:
        return k_centre_greedy(values, labelled_values, budget, rng)


def nearest_distance(points: np.ndarray, centres: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """(N,) Euclidean distance of each of (N, D) points to its nearest of (L, D) centres, in chunks."""
    points = torch.as_tensor(points, dtype=torch.float64)
    centres = torch.as_tensor(centres, dtype=torch.float64)
    out = [torch.cdist(points[i:i + chunk], centres).min(dim=1).values for i in range(0, len(points), chunk)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def k_centre_greedy(points: np.ndarray, centres: np.ndarray | None, budget: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Greedy k-centre: repeatedly pick the point farthest from every centre so far.

    Args:
        points: (N, D) pool embeddings; centres: (L, D) labelled embeddings or None (then the first
            pick is random).

    Returns:
        sorted indices of ``min(budget, N)`` picked points.
    """
    n = len(points)
    budget = min(budget, n)
    if budget == 0:
        return np.zeros(0, dtype=np.int64)
    data = torch.as_tensor(points, dtype=torch.float64)
    if centres is not None and len(centres):
        distance = torch.as_tensor(nearest_distance(points, centres))
    else:
        distance = torch.full((n,), torch.inf, dtype=torch.float64)
    picked: list[int] = []
    for _ in range(budget):
        index = int(torch.argmax(distance)) if picked or torch.isfinite(distance).all() else int(rng.integers(n))
        picked.append(index)
        distance = torch.minimum(distance, torch.linalg.vector_norm(data - data[index], dim=1))
        distance[index] = -1.0
    return np.sort(np.array(picked, dtype=np.int64))


class LearningLoss(Strategy):
    """Learning Loss (Yoo & Kweon 2019): the auxiliary head's predicted pose loss."""

    name = "learning_loss"
    heads = ("learning_loss",)

    def scores(self, batch: PoolBatch) -> np.ndarray:
        return batch.heads["learning_loss"].predicted_loss(batch.output.features).double().numpy()


class Aleatoric(Strategy):
    """Aleatoric uncertainty (Kendall & Gal 2017): mean predicted per-keypoint log-variance."""

    name = "aleatoric"
    heads = ("aleatoric",)

    def scores(self, batch: PoolBatch) -> np.ndarray:
        return batch.heads["aleatoric"].log_variance(batch.output.features).mean(dim=1).double().numpy()


def multipeak_entropy(heatmaps: torch.Tensor, max_candidates: int, temperature: float) -> torch.Tensor:
    """(B,) sum over keypoints of the entropy of the softmax (temperature ``temperature``) over the top
    ``max_candidates`` local maxima of each (B, K, H, W) heatmap (Liu & Ferrari 2017)."""
    candidates = find_candidates(heatmaps.float(), max_candidates)
    log_p = candidates.log_probs(temperature)
    terms = torch.where(candidates.valid, log_p.exp() * log_p, torch.zeros_like(log_p))
    return -terms.sum(dim=(1, 2))


class MultiPeakEntropy(Strategy):
    """Multi-peak entropy with the checkpoint's calibrated candidate count and temperature."""

    name = "multipeak_entropy"

    def scores(self, batch: PoolBatch) -> np.ndarray:
        cal = batch.calibration
        return multipeak_entropy(batch.output.heatmaps, cal.max_candidates, cal.temperature).double().numpy()


class VL4Pose(Strategy):
    """VL4Pose: negative expected log-likelihood of the skeleton (low likelihood = label first)."""

    name = "vl4pose"

    def scores(self, batch: PoolBatch) -> np.ndarray:
        poses = analyse(batch.output, batch.skeleton, batch.calibration)
        return -poses.log_likelihood.double().numpy()


STRATEGIES: dict[str, type[Strategy]] = {
    s.name: s for s in (RandomStrategy, CoreSet, LearningLoss, Aleatoric, MultiPeakEntropy, VL4Pose)
}


def get_strategies(names: Sequence[str]) -> list[Strategy]:
    """Strategy objects by name, in the given order, duplicates removed."""
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise ConfigError(f"unknown strategies {unknown}; choose from {sorted(STRATEGIES)}")
    return [STRATEGIES[n]() for n in dict.fromkeys(names)]


def required_heads(strategies: Sequence[Strategy]) -> tuple[str, ...]:
    """Auxiliary head kinds any of the strategies needs, in a stable order."""
    return tuple(dict.fromkeys(h for s in strategies for h in s.heads))


@torch.no_grad()
def pool_values(checkpoint: Checkpoint, cache: CropCache, indices: np.ndarray, strategies: Sequence[Strategy],
                batch_size: int = 32) -> dict[str, np.ndarray]:
    """One batched pass of the network over cached crops; every strategy's values for those images.

    Args:
        checkpoint: the model (its heads must include every strategy's ``heads``).
        cache: cached person crops (no augmentation is applied).
        indices: (N,) indices into ``cache``.

    Returns:
        {strategy name: (N,) or (N, D) values}; strategies without a network get zeros.
    """
    missing = [h for h in required_heads(strategies) if h not in checkpoint.heads]
    if missing:
        raise ConfigError(f"checkpoint {checkpoint.path} has no auxiliary heads {missing}; train with --heads {' '.join(missing)}")
    indices = np.asarray(indices, dtype=np.int64)
    networked = [s for s in strategies if s.uses_network]
    out: dict[str, list[np.ndarray]] = {s.name: [] for s in networked}
    if networked and len(indices):
        pose, heads = checkpoint.pose.eval(), checkpoint.heads.eval()
        sigma = checkpoint.model_config.sigma
        rng = np.random.default_rng(0)
        for start in range(0, len(indices), batch_size):
            crops = cache.batch(indices[start:start + batch_size], checkpoint.skeleton, sigma, None, rng)["image"]
            batch = PoolBatch(run_network(pose, heads["bones"], crops), heads, checkpoint.skeleton, checkpoint.calibration)
            for strategy in networked:
                out[strategy.name].append(strategy.values(batch))
    values = {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in out.items()}
    for strategy in strategies:
        if not strategy.uses_network:
            values[strategy.name] = np.zeros(len(indices))
    return values
