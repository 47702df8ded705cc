"""The strategy interface: values per image, scores, a label-first order, a batch; and the pool pass.

Every strategy turns a batch of network outputs into per-image values with :meth:`Strategy.values`
((B,) scores by default, (B, D) when it needs more than one number per image), then
:meth:`Strategy.order` puts a whole pool in label-first order and :meth:`Strategy.select` takes the first
``budget`` of it. Most strategies order by :meth:`Strategy.image_scores` alone; a *joint* strategy
(``joint = True``: Core-Set, the diversity and mix variants of VL4Pose) chooses its batch as a set, so the
order of the batch is not a sort by any per-image score. Anyone ranking a queue (the coordinator) must
then use the order itself: :func:`queue_scores` turns it into per-task numbers whose ascending order is
that order (a task's rank becomes its score).

Shapes: B images in a batch, N pool images, L labelled images, D values per image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from vl4pose.checkpoint import Calibration, Checkpoint
from vl4pose.data.crops import CropCache
from vl4pose.errors import ConfigError
from vl4pose.inference import NetworkOutput, run_network
from vl4pose.skeletons import Skeleton


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
    joint: ClassVar[bool] = False
    """The batch is chosen as a set (diversity, mixing): its order is not a sort by :meth:`image_scores`, so a
    queue must be ranked with :meth:`order` and :func:`queue_scores`."""

    def scores(self, batch: PoolBatch) -> np.ndarray:
        """(B,) informativeness: higher = label first."""
        raise NotImplementedError

    def values(self, batch: PoolBatch) -> np.ndarray:
        """Per-image values kept for selection: (B,) scores by default, (B, D) when more is needed."""
        return self.scores(batch)

    def image_scores(self, values: np.ndarray, labelled_values: np.ndarray | None = None) -> np.ndarray:
        """(N,) scores of pool images from their values (higher = label first)."""
        return np.asarray(values, dtype=np.float64)

    def order(self, values: np.ndarray, budget: int, rng: np.random.Generator,
              labelled_values: np.ndarray | None = None) -> np.ndarray:
        """(N,) permutation of the pool in label-first order; its first ``min(budget, N)`` entries are the batch.

        Default: highest :meth:`image_scores` first, ties broken at random (one ``rng.random(N)`` draw).
        Joint strategies override it; their batch comes first in pick order, then the rest of the pool.
        """
        scores = self.image_scores(values, labelled_values)
        return np.lexsort((rng.random(len(scores)), -scores))

    def select(self, values: np.ndarray, budget: int, rng: np.random.Generator,
               labelled_values: np.ndarray | None = None) -> np.ndarray:
        """Sorted indices of the ``min(budget, N)`` pool images to label next (the head of :meth:`order`)."""
        budget = min(budget, len(values))
        return np.sort(self.order(values, budget, rng, labelled_values)[:budget])


def score_order(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N,) indices by descending (N,) ``scores``, ties broken at random."""
    return np.lexsort((rng.random(len(scores)), -np.asarray(scores, dtype=np.float64)))


def queue_scores(order: np.ndarray) -> np.ndarray:
    """(N,) rank-as-score for a queue that serves the **lowest** score first (Label Studio's uncertainty
    sampling): the task at position ``i`` of the (N,) label-first ``order`` gets ``i / N`` (first = 0.0)."""
    order = np.asarray(order, dtype=np.int64)
    if len(np.unique(order)) != len(order) or (len(order) and (order.min() < 0 or order.max() >= len(order))):
        raise ConfigError("queue_scores needs a permutation of 0..N-1 (Strategy.order over the whole pool)")
    out = np.empty(len(order), dtype=np.float64)
    out[order] = np.arange(len(order), dtype=np.float64) / max(len(order), 1)
    return out


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
        raise ConfigError(f"checkpoint {checkpoint.path} has no auxiliary heads {missing}; "
                          f"train with --heads {' '.join(missing)}")
    indices = np.asarray(indices, dtype=np.int64)
    networked = [s for s in strategies if s.uses_network]
    out: dict[str, list[np.ndarray]] = {s.name: [] for s in networked}
    if networked and len(indices):
        pose, heads = checkpoint.pose.eval(), checkpoint.heads.eval()
        sigma = checkpoint.model_config.sigma
        rng = np.random.default_rng(0)
        for start in range(0, len(indices), batch_size):
            crops = cache.batch(indices[start:start + batch_size], checkpoint.skeleton, sigma, None, rng)["image"]
            batch = PoolBatch(run_network(pose, heads["bones"], crops), heads, checkpoint.skeleton,
                              checkpoint.calibration)
            for strategy in networked:
                out[strategy.name].append(strategy.values(batch))
    values = {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in out.items()}
    for strategy in strategies:
        if not strategy.uses_network:
            values[strategy.name] = np.zeros(len(indices))
    return values
