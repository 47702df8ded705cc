"""The paper's baselines and plain VL4Pose (baal style, one object per heuristic).

Core-Set works on embeddings and needs the labelled set, so it overrides :meth:`Strategy.values`,
:meth:`Strategy.image_scores` and :meth:`Strategy.order` (a joint strategy: k-centre greedy).

EGL++ (expected gradient length) is not implemented: it needs one backward pass through the whole pose
model per pool image (not batchable without per-sample gradients): ``vl4pose bench`` measures it as
``egl_backward_ms``, about 60 ms against 18 ms for a batched forward at the ``cpu`` preset, so its
selection would cost 3-4x any other strategy's, and its pseudo-label expectation is a design of its own
that the method notes leave open. See docs/SIMULATION.md.

Shapes: B images in a batch, N pool images, L labelled images, D embedding size, K keypoints.
"""

from __future__ import annotations

import numpy as np
import torch

from vl4pose.errors import ConfigError
from vl4pose.inference import analyse
from vl4pose.likelihood import find_candidates
from vl4pose.strategies.base import PoolBatch, Strategy, score_order


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
    joint = True

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

    def order(self, values: np.ndarray, budget: int, rng: np.random.Generator,
              labelled_values: np.ndarray | None = None) -> np.ndarray:
        """The k-centre picks in pick order, then the rest by distance to the labelled set."""
        picked = k_centre_order(values, labelled_values, budget, rng)
        return append_rest(picked, self.image_scores(values, labelled_values), rng)


def nearest_distance(points: np.ndarray, centres: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """(N,) Euclidean distance of each of (N, D) points to its nearest of (L, D) centres, in chunks."""
    points = torch.as_tensor(points, dtype=torch.float64)
    centres = torch.as_tensor(centres, dtype=torch.float64)
    out = [torch.cdist(points[i:i + chunk], centres).min(dim=1).values for i in range(0, len(points), chunk)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def k_centre_order(points: np.ndarray, centres: np.ndarray | None, budget: int, rng: np.random.Generator,
                   first: int | None = None) -> np.ndarray:
    """Greedy k-centre, in pick order: repeatedly pick the point farthest from every centre so far.

    Args:
        points: (N, D) pool embeddings; centres: (L, D) labelled embeddings or None.
        first: the first pick when there are no centres (None: a random one).

    Returns:
        (min(budget, N),) indices in the order they were picked.
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
        if picked or torch.isfinite(distance).all():
            index = int(torch.argmax(distance))
        else:
            index = int(rng.integers(n)) if first is None else int(first)
        picked.append(index)
        distance = torch.minimum(distance, torch.linalg.vector_norm(data - data[index], dim=1))
        distance[index] = -1.0
    return np.array(picked, dtype=np.int64)


def k_centre_greedy(points: np.ndarray, centres: np.ndarray | None, budget: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of the :func:`k_centre_order` picks (the first is random without centres)."""
    return np.sort(k_centre_order(points, centres, budget, rng))


def append_rest(head: np.ndarray, scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N,) order: the (M,) ``head`` first, then every other index by descending (N,) ``scores``."""
    rest = score_order(scores, rng)
    rest = rest[~np.isin(rest, head)]
    return np.concatenate([np.asarray(head, dtype=np.int64), rest.astype(np.int64)])


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
