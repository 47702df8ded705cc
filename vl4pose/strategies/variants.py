"""Variants of VL4Pose, each an answer to one suspected weakness of the plain score (issue 12 ablations).

- ``vl4pose_kcentre``: VL4Pose models no diversity, so a batch can be many near-copies of one unusual
  scene. Take the lowest-likelihood share of the pool (``candidate_factor`` x budget images), then
  k-centre greedy on the pose model's pooled bottleneck features among them, starting at the
  lowest-likelihood image.
- ``vl4pose_mix``: a share ``random_share`` of every batch drawn uniformly from the rest of the pool,
  the remainder the lowest-likelihood images (the paper's random + VL4Pose mix; the share is ours).
- ``vl4pose_edges``: the plain score sums over every edge, also those whose keypoints the model cannot
  see, so images with many hidden or cut-off keypoints (fewer labels to gain) come first. Here the edge
  terms are averaged with weights = soft visibility of both end points (their heatmap peaks, clipped to
  [0, 1]), so the score does not scale with the number of visible edges.
- ``vl4pose_entropy``: pose-level likelihood and joint-level multi-peak entropy, combined by averaging
  their ranks over the pool (scale-free: neither score's units dominate).
- ``vl4pose_strata``: the lowest likelihoods are the pool's most atypical images, and with small, short
  fine-tuning rounds a batch of only those is worth less than a typical one. Here the pool is cut into
  ``budget`` strata by k-means on the pooled bottleneck features and each stratum gives its
  lowest-likelihood image: the batch covers the pool as a stratified sample does, VL4Pose chooses
  within each stratum. ``stratified`` is its control: the same strata, a uniform draw from each.

Shapes: B images in a batch, N pool images, K keypoints, E edges, D embedding size.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
from scipy.cluster.vq import kmeans2
from scipy.stats import rankdata

from vl4pose.errors import ConfigError
from vl4pose.inference import analyse
from vl4pose.skeletons import Skeleton
from vl4pose.strategies.base import PoolBatch, Strategy, score_order
from vl4pose.strategies.baselines import append_rest, k_centre_order, multipeak_entropy


def _vl4pose_scores(batch: PoolBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B,) minus expected log-likelihood, (B, E) per-edge expected log-likelihood, (B, K) arg-max peaks."""
    poses = analyse(batch.output, batch.skeleton, batch.calibration)
    return (-poses.log_likelihood.double().numpy(), poses.edge_log_likelihood.double().numpy(),
            poses.peak.double().numpy())


class _ScoreAndEmbedding(Strategy):
    """Values (B, 1 + D) = minus expected log-likelihood, then the global-average-pooled bottleneck features."""

    joint = True

    def values(self, batch: PoolBatch) -> np.ndarray:
        score = _vl4pose_scores(batch)[0]
        embedding = batch.output.features[-1].mean(dim=(2, 3)).double().numpy()
        return np.concatenate([score[:, None], embedding], axis=1)

    def image_scores(self, values: np.ndarray, labelled_values: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(values, dtype=np.float64).reshape(len(values), -1)[:, 0]


class VL4PoseKCentre(_ScoreAndEmbedding):
    """k-centre greedy on pooled features among the ``candidate_factor`` x budget lowest-likelihood images."""

    name = "vl4pose_kcentre"
    candidate_factor: ClassVar[float] = 3.0

    def order(self, values: np.ndarray, budget: int, rng: np.random.Generator,
              labelled_values: np.ndarray | None = None) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        by_score = score_order(values[:, 0], rng)
        share = by_score[: min(len(values), max(budget, int(np.ceil(self.candidate_factor * budget))))]
        picked = share[k_centre_order(values[share, 1:], None, budget, rng, first=0)]
        return append_rest(picked, values[:, 0], rng)


class VL4PoseMix(Strategy):
    """``random_share`` of each batch uniformly from the pool outside the top, the rest lowest likelihood.

    The batch is interleaved so that every prefix of it holds about the same share of random picks (an
    annotator who stops early still labels the mix); the rest of the pool follows by likelihood.
    """

    name = "vl4pose_mix"
    joint = True
    random_share: ClassVar[float] = 0.5

    def scores(self, batch: PoolBatch) -> np.ndarray:
        return _vl4pose_scores(batch)[0]

    def order(self, values: np.ndarray, budget: int, rng: np.random.Generator,
              labelled_values: np.ndarray | None = None) -> np.ndarray:
        scores = self.image_scores(values)
        n = len(scores)
        size = min(budget, n)
        drawn = int(round(self.random_share * size))
        by_score = score_order(scores, rng)
        top = by_score[: size - drawn]
        others = rng.choice(by_score[size - drawn:], drawn, replace=False) if drawn else np.zeros(0, np.int64)
        keys = np.concatenate([(np.arange(len(top)) + 0.5) / max(len(top), 1),
                               (np.arange(drawn) + 0.5) / max(drawn, 1)])
        batch = np.concatenate([top, others]).astype(np.int64)[np.argsort(keys, kind="stable")]
        return append_rest(batch, scores, rng)


def kmeans_strata(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """(N,) stratum of each of the (N, D) points: k-means (k-means++ start, 10 iterations) with ``count``
    clusters; a cluster that ends empty is simply absent from the labels."""
    points = np.asarray(points, dtype=np.float64)
    # an empty cluster: fewer strata, the caller fills the batch; identical points: k-means++ divides 0 by 0
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", UserWarning)
        _, labels = kmeans2(points, min(count, len(points)), iter=10, minit="++", rng=rng)
    return labels.astype(np.int64)


def strata_order(strata: np.ndarray, preference: np.ndarray) -> np.ndarray:
    """(N,) label-first order: the first member of each stratum in the (N,) ``preference`` order (a permutation,
    best first), in that order, then every other image in ``preference`` order. So a batch of ``size`` >= the
    number of strata named by the (N,) ``strata`` labels holds one image per stratum, filled with the next
    preferred images not yet picked."""
    first_of_stratum = np.sort(np.unique(strata[preference], return_index=True)[1])
    rest = np.ones(len(preference), dtype=bool)
    rest[first_of_stratum] = False
    return np.concatenate([preference[first_of_stratum], preference[rest]]).astype(np.int64)


class VL4PoseStrata(_ScoreAndEmbedding):
    """The lowest-likelihood image of each of ``budget`` k-means strata of the pool's pooled features.

    The batch is in descending score order (the hardest strata first); if k-means leaves strata empty,
    the batch is filled with the lowest likelihoods not yet picked; the rest of the pool follows by score.
    """

    name = "vl4pose_strata"

    def preference(self, scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(N,) the order in which a stratum's members are preferred (and the rest of the pool follows)."""
        return score_order(scores, rng)  # lowest likelihood first, ties at random

    def order(self, values: np.ndarray, budget: int, rng: np.random.Generator,
              labelled_values: np.ndarray | None = None) -> np.ndarray:
        if len(values) == 0:
            return np.zeros(0, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        size = min(budget, len(values))
        if size <= 0:
            return self.preference(values[:, 0], rng)
        strata = kmeans_strata(values[:, 1:], size, rng)  # drawn before the preference: the measured runs' order
        return strata_order(strata, self.preference(values[:, 0], rng))


class Stratified(VL4PoseStrata):
    """The control of ``vl4pose_strata``: the same k-means strata, one uniformly drawn image from each.

    It tells apart what the strata bring (a batch spread over the pool) from what VL4Pose's choice within
    each stratum brings. The rest of the pool follows in random order. Its per-image score
    (:meth:`image_scores`, e.g. in failure tables) stays VL4Pose's, as for the other joint variants.
    """

    name = "stratified"

    def preference(self, scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(len(scores)).astype(np.int64)


def visible_edge_scores(edge_log_likelihood: np.ndarray, peaks: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(N,) minus the visibility-weighted mean of the (N, E) edge terms; weights = product of the (N, K)
    heatmap peaks of each edge's two keypoints, clipped to [0, 1]. An image without any visible edge gets
    the plain mean over its edges."""
    edge_ll = np.asarray(edge_log_likelihood, dtype=np.float64)
    peaks = np.clip(np.asarray(peaks, dtype=np.float64), 0.0, 1.0)
    if edge_ll.shape[1] != skeleton.num_edges:
        raise ConfigError(f"{edge_ll.shape[1]} edge terms for skeleton {skeleton.name} with {skeleton.num_edges} edges")
    parents = [p for p, _ in skeleton.edges]
    children = [c for _, c in skeleton.edges]
    weights = peaks[:, parents] * peaks[:, children]
    total = weights.sum(axis=1)
    weighted = (weights * edge_ll).sum(axis=1) / np.where(total > 0, total, 1.0)
    return -np.where(total > 1e-9, weighted, edge_ll.mean(axis=1))


class VL4PoseEdges(Strategy):
    """Minus the per-visible-edge expected log-likelihood (:func:`visible_edge_scores`)."""

    name = "vl4pose_edges"

    def scores(self, batch: PoolBatch) -> np.ndarray:
        _, edges, peaks = _vl4pose_scores(batch)
        return visible_edge_scores(edges, peaks, batch.skeleton)


def rank_average(columns: np.ndarray) -> np.ndarray:
    """(N,) mean over the (N, C) columns of each column's rank scaled to [0, 1] (ties: average rank)."""
    columns = np.asarray(columns, dtype=np.float64).reshape(len(columns), -1)
    if len(columns) <= 1:
        return np.zeros(len(columns))
    ranks = np.stack([rankdata(np.nan_to_num(c, nan=-np.inf)) for c in columns.T], axis=1)
    return ((ranks - 1.0) / (len(columns) - 1.0)).mean(axis=1)


class VL4PoseEntropy(Strategy):
    """Rank average of minus the expected log-likelihood and the multi-peak entropy.

    Values: (B, 2) = minus expected log-likelihood, multi-peak entropy (checkpoint temperature and K).
    Scores: :func:`rank_average` over the pool (so a pool's scores depend on the whole pool).
    """

    name = "vl4pose_entropy"

    def values(self, batch: PoolBatch) -> np.ndarray:
        cal = batch.calibration
        entropy = multipeak_entropy(batch.output.heatmaps, cal.max_candidates, cal.temperature).double().numpy()
        return np.stack([_vl4pose_scores(batch)[0], entropy], axis=1)

    def scores(self, batch: PoolBatch) -> np.ndarray:
        raise ConfigError("vl4pose_entropy scores are ranks over a pool; use image_scores(values)")

    def image_scores(self, values: np.ndarray, labelled_values: np.ndarray | None = None) -> np.ndarray:
        return rank_average(values)
