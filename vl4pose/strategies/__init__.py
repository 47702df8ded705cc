"""Acquisition strategies: which unlabelled images to label next (baal style, one object per heuristic).

- :mod:`vl4pose.strategies.base`: the interface (:class:`Strategy`: values, scores, a label-first
  :meth:`Strategy.order`, :meth:`Strategy.select`), :func:`queue_scores` (rank-as-score for a queue) and
  :func:`pool_values` (one batched network pass over cached crops, ground-truth boxes, no augmentation);
- :mod:`vl4pose.strategies.baselines`: random, Core-Set, Learning Loss, aleatoric, multi-peak entropy and
  plain VL4Pose;
- :mod:`vl4pose.strategies.variants`: the VL4Pose variants of issue 12 (``vl4pose_kcentre``,
  ``vl4pose_mix``, ``vl4pose_edges``, ``vl4pose_entropy``, ``vl4pose_strata``) and ``stratified``, the
  control of the strata variant.

The product ranks through :class:`vl4pose.predictor.Predictor`, which finds the person itself
(``auto_box``). See docs/SIMULATION.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from vl4pose.errors import ConfigError
from vl4pose.strategies.base import PoolBatch, Strategy, pool_values, queue_scores, required_heads, score_order
from vl4pose.strategies.baselines import (Aleatoric, CoreSet, LearningLoss, MultiPeakEntropy, RandomStrategy, VL4Pose,
                                          append_rest, k_centre_greedy, k_centre_order, multipeak_entropy,
                                          nearest_distance)
from vl4pose.strategies.variants import (Stratified, VL4PoseEdges, VL4PoseEntropy, VL4PoseKCentre, VL4PoseMix,
                                         VL4PoseStrata, kmeans_strata, rank_average, strata_order,
                                         visible_edge_scores)

STRATEGIES: dict[str, type[Strategy]] = {
    s.name: s for s in (RandomStrategy, CoreSet, LearningLoss, Aleatoric, MultiPeakEntropy, VL4Pose,
                        VL4PoseKCentre, VL4PoseMix, VL4PoseEdges, VL4PoseEntropy, VL4PoseStrata, Stratified)
}


def get_strategies(names: Sequence[str]) -> list[Strategy]:
    """Strategy objects by name, in the given order, duplicates removed."""
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise ConfigError(f"unknown strategies {unknown}; choose from {sorted(STRATEGIES)}")
    return [STRATEGIES[n]() for n in dict.fromkeys(names)]


__all__ = [
    "STRATEGIES", "Aleatoric", "CoreSet", "LearningLoss", "MultiPeakEntropy", "PoolBatch", "RandomStrategy",
    "Stratified", "Strategy", "VL4Pose", "VL4PoseEdges", "VL4PoseEntropy", "VL4PoseKCentre", "VL4PoseMix",
    "VL4PoseStrata", "append_rest", "get_strategies", "k_centre_greedy", "k_centre_order", "kmeans_strata",
    "multipeak_entropy", "nearest_distance", "pool_values", "queue_scores", "rank_average", "required_heads",
    "score_order", "strata_order", "visible_edge_scores",
]
