"""Acquisition strategies and the baseline heads: selection rules, scores, head losses, checkpoint round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vl4pose.checkpoint import Calibration, Checkpoint, load_checkpoint
from vl4pose.data import load_samples
from vl4pose.data.crops import CropCache
from vl4pose.errors import ConfigError
from vl4pose.heads import HEADS, AleatoricHead, LearningLossHead, build_heads, ranking_loss
from vl4pose.inference import analyse, run_network
from vl4pose.models import build_pose, preset
from vl4pose.skeletons import LSP14
from vl4pose.strategies import (STRATEGIES, CoreSet, PoolBatch, RandomStrategy, Stratified, Strategy, VL4PoseEntropy,
                                VL4PoseKCentre, VL4PoseMix, VL4PoseStrata, get_strategies, k_centre_greedy,
                                k_centre_order, kmeans_strata, multipeak_entropy, nearest_distance, pool_values,
                                queue_scores, rank_average, required_heads, strata_order, visible_edge_scores)
from vl4pose.train import TrainConfig, Trainer

TINY = preset("tiny")


def tiny_features(n: int, seed: int = 0) -> list[torch.Tensor]:
    """Random multi-scale features shaped like the tiny preset's (N, 32, 16 / 2**i, ...)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, TINY.channels, 16 >> i, 16 >> i, generator=g) for i in range(TINY.depth + 1)]


@pytest.fixture(scope="module")
def random_checkpoint() -> Checkpoint:
    torch.manual_seed(0)
    heads = build_heads(["learning_loss", "aleatoric"], TINY, LSP14).eval()
    return Checkpoint(None, TINY, LSP14, build_pose(TINY, 14).eval(), heads, Calibration(temperature=0.1))


@pytest.fixture(scope="module")
def crops(lspet_dir) -> CropCache:
    return CropCache(load_samples("lspet", lspet_dir, "val")[:6], TINY.input_size, margin=1.0)


# -- selection rules ------------------------------------------------------------------------------
def test_registry_names_every_strategy_and_rejects_unknown_ones():
    assert set(STRATEGIES) == {"random", "coreset", "learning_loss", "aleatoric", "multipeak_entropy", "vl4pose",
                               "vl4pose_kcentre", "vl4pose_mix", "vl4pose_edges", "vl4pose_entropy",
                               "vl4pose_strata", "stratified"}
    assert [s.name for s in get_strategies(["vl4pose", "random", "vl4pose"])] == ["vl4pose", "random"]
    assert required_heads(get_strategies(["aleatoric", "vl4pose", "learning_loss"])) == ("aleatoric", "learning_loss")
    with pytest.raises(ConfigError, match="egl"):
        get_strategies(["egl"])


def test_default_selection_takes_the_highest_scores():
    scores = np.array([0.1, 5.0, -2.0, 3.0, 4.0])
    picked = Strategy().select(scores, 3, np.random.default_rng(0))
    assert picked.tolist() == [1, 3, 4]


def test_random_selection_is_reproducible_and_spread():
    rng = np.random.default_rng
    first = RandomStrategy().select(np.zeros(1000), 100, rng(1))
    assert len(set(first.tolist())) == 100
    assert np.array_equal(first, RandomStrategy().select(np.zeros(1000), 100, rng(1)))
    assert not np.array_equal(first, RandomStrategy().select(np.zeros(1000), 100, rng(2)))
    assert first.min() < 200 and first.max() > 800  # not the first 100 images


def test_coreset_picks_the_points_farthest_from_the_labelled_set():
    rng = np.random.default_rng(0)
    labelled = np.zeros((3, 2))
    near = rng.normal(0, 0.1, size=(20, 2))
    far = np.array([[10.0, 0.0], [10.0, 0.01], [0.0, -6.0]])  # two almost identical far points
    pool = np.concatenate([near, far])
    picked = k_centre_greedy(pool, labelled, 2, rng)
    # the farthest point first, then the next point far from *both* the labelled set and the first pick
    assert picked.tolist() == [20, 22] or picked.tolist() == [21, 22]
    np.testing.assert_allclose(nearest_distance(far, labelled), [10.0, math.hypot(10.0, 0.01), 6.0])
    scores = CoreSet().image_scores(pool, labelled)
    assert scores.argmax() in (20, 21)


def test_coreset_without_a_labelled_set_starts_at_random_then_goes_far():
    pool = np.array([[0.0], [1.0], [2.0], [100.0]])
    picks = [k_centre_greedy(pool, None, 2, np.random.default_rng(s)).tolist() for s in range(12)]
    assert all(3 in p or p == [0, 3] for p in picks)  # the second pick is always the far point
    assert len({tuple(p) for p in picks}) > 1  # the first pick varies with the seed


# -- the label-first order and rank-as-score -------------------------------------------------------
def test_order_is_a_permutation_whose_head_is_the_selection():
    rng = np.random.default_rng
    scores = np.array([0.1, 5.0, -2.0, 3.0, 4.0, 4.0])
    order = Strategy().order(scores, 3, rng(0))
    assert sorted(order.tolist()) == list(range(6)) and order[0] == 1 and set(order[1:3]) == {4, 5}
    assert Strategy().select(scores, 3, rng(0)).tolist() == sorted(order[:3].tolist())
    for strategy in (CoreSet(), VL4PoseKCentre(), VL4PoseMix(), VL4PoseStrata(), Stratified()):
        values = rng(1).normal(size=(40, 3)) if strategy.name != "vl4pose_mix" else rng(1).normal(size=40)
        full = strategy.order(values, 8, rng(2), rng(3).normal(size=(5, 3)) if strategy.name == "coreset" else None)
        assert sorted(full.tolist()) == list(range(40)) and strategy.joint, strategy.name


def test_queue_scores_make_the_rank_the_score():
    order = np.array([3, 0, 2, 1])
    scores = queue_scores(order)
    assert scores.tolist() == [0.25, 0.75, 0.5, 0.0]
    assert np.argsort(scores).tolist() == order.tolist()  # lowest score first = the label-first order
    with pytest.raises(ConfigError, match="permutation"):
        queue_scores(np.array([0, 0, 1]))


# -- the VL4Pose variants ---------------------------------------------------------------------------
def test_kcentre_variant_spreads_its_batch_over_the_lowest_likelihood_share():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [100.0, 100.0]])
    sizes = [3, 3, 3, 11]  # three unlikely scenes of three near-copies, one far but likely cluster
    embedding = np.concatenate([c + rng.normal(0, 0.05, size=(n, 2)) for c, n in zip(centres, sizes)])
    cluster = np.repeat(np.arange(4), sizes)
    score = np.array([9.0, 8.0, 7.0, -5.0])[cluster] + rng.normal(0, 0.01, size=20)
    values = np.concatenate([score[:, None], embedding], axis=1)
    order = VL4PoseKCentre().order(values, 3, np.random.default_rng(1))
    assert order[0] == np.argmax(score)  # starts at the lowest likelihood
    assert sorted(cluster[order[:3]]) == [0, 1, 2]  # one per scene; the far cluster is outside the 3 x 3 share
    plain = Strategy().order(score, 3, np.random.default_rng(1))[:3]
    assert set(cluster[plain]) == {0}  # plain VL4Pose: three near-copies of one scene
    assert (cluster[order[3:9]] < 3).all() and (cluster[order[9:]] == 3).all()  # the rest by likelihood


def test_mix_variant_has_the_documented_share_of_random_picks():
    scores = np.arange(1000, dtype=float)  # image i has score i
    order = VL4PoseMix().order(scores, 100, np.random.default_rng(0))
    batch = order[:100]
    top = batch[batch >= 950]
    assert len(top) == 50 and VL4PoseMix.random_share == 0.5  # the 50 best by likelihood ...
    drawn = batch[batch < 950]
    assert len(drawn) == 50 and drawn.min() < 200 and drawn.max() > 700  # ... and 50 uniform others
    assert all(abs(int((batch[:k] >= 950).sum()) - k // 2) <= 1 for k in range(1, 101))  # mixed in every prefix
    again = VL4PoseMix().order(scores, 100, np.random.default_rng(1))[:100]
    assert set(again[again >= 950]) == set(top) and set(again[again < 950]) != set(drawn)


def test_strata_variant_takes_the_lowest_likelihood_of_every_stratum():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [100.0, 100.0]])
    sizes = [3, 3, 3, 11]  # three unlikely scenes of three near-copies, one large likely cluster
    embedding = np.concatenate([c + rng.normal(0, 0.05, size=(n, 2)) for c, n in zip(centres, sizes)])
    cluster = np.repeat(np.arange(4), sizes)
    score = np.array([9.0, 8.0, 7.0, -5.0])[cluster] + rng.normal(0, 0.01, size=20)
    values = np.concatenate([score[:, None], embedding], axis=1)
    order = VL4PoseStrata().order(values, 4, np.random.default_rng(1))
    assert sorted(cluster[order[:4]]) == [0, 1, 2, 3]  # one per stratum: the likely cluster is covered too
    for c in range(4):  # ... and within each stratum its lowest likelihood
        assert order[:4][cluster[order[:4]] == c][0] == np.flatnonzero(cluster == c)[np.argmax(score[cluster == c])]
    assert (np.diff(score[order[:4]]) < 0).all()  # hardest strata first
    assert sorted(order.tolist()) == list(range(20))
    strata = kmeans_strata(embedding, 4, np.random.default_rng(2))
    assert len(set(strata)) == 4 and all(len(set(strata[cluster == c])) == 1 for c in range(4))


def test_strata_variant_fills_the_batch_when_strata_are_fewer_than_the_budget():
    values = np.concatenate([np.arange(6.0)[:, None], np.zeros((6, 2))], axis=1)  # one point, many copies
    order = VL4PoseStrata().order(values, 3, np.random.default_rng(0))
    assert order[:3].tolist() == [5, 4, 3] and sorted(order.tolist()) == list(range(6))
    assert VL4PoseStrata().order(values[:0], 3, np.random.default_rng(0)).tolist() == []


def test_stratified_control_draws_one_image_per_stratum_at_random():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [100.0, 100.0]])
    embedding = np.concatenate([c + rng.normal(0, 0.05, size=(10, 2)) for c in centres])
    cluster = np.repeat(np.arange(4), 10)
    score = np.arange(40.0)  # ignored by the control
    values = np.concatenate([score[:, None], embedding], axis=1)
    batches = [Stratified().order(values, 4, np.random.default_rng(seed))[:4] for seed in range(20)]
    assert all(sorted(cluster[b]) == [0, 1, 2, 3] for b in batches)  # one per stratum ...
    assert len({int(b[cluster[b] == 0][0]) for b in batches}) > 3  # ... drawn at random, not the best score
    assert sorted(Stratified().order(values, 4, np.random.default_rng(0)).tolist()) == list(range(40))
    assert strata_order(np.array([0, 0, 1, 1]), np.array([3, 1, 0, 2]))[:3].tolist() == [3, 1, 0]
    assert strata_order(np.array([0, 0, 1, 1]), np.array([3, 1, 0, 2])).tolist() == [3, 1, 0, 2]  # then the rest


def test_edges_variant_does_not_scale_with_the_number_of_visible_edges():
    edges = LSP14.num_edges
    ll = np.full((2, edges), -1.0)
    peaks = np.ones((2, LSP14.num_keypoints))
    hidden = [k for k in range(LSP14.num_keypoints) if k != LSP14.root][:4]
    peaks[1, hidden] = 0.0  # image 1: four keypoints not seen ...
    touching = [e for e, (p, c) in enumerate(LSP14.edges) if p in hidden or c in hidden]
    ll[1, touching] = -30.0  # ... whose edges the bone model finds very unlikely
    plain = -ll.sum(axis=1)
    assert plain[1] > plain[0] + 50  # plain VL4Pose: image 1 far "more informative" for its hidden edges
    np.testing.assert_allclose(visible_edge_scores(ll, peaks, LSP14), [1.0, 1.0])  # mean over visible edges
    peaks[1] = 0.0
    assert visible_edge_scores(ll, peaks, LSP14)[1] == pytest.approx(-ll[1].mean())  # nothing visible: plain mean


def test_entropy_variant_averages_ranks_and_ignores_scales():
    values = np.array([[100.0, 0.9], [50.0, 0.1], [10.0, 0.5], [-1.0, 0.0]])
    scores = rank_average(values)
    assert scores.tolist() == pytest.approx([1.0, (2 / 3 + 1 / 3) / 2, (1 / 3 + 2 / 3) / 2, 0.0])
    scaled = values * np.array([1e-3, 1e3])  # units of either score do not matter
    np.testing.assert_allclose(VL4PoseEntropy().image_scores(scaled), scores)
    assert VL4PoseEntropy().order(values, 2, np.random.default_rng(0))[0] == 0


# -- scores ---------------------------------------------------------------------------------------
def test_multipeak_entropy_is_higher_for_flat_heatmaps():
    heat = torch.zeros(2, 1, 16, 16)
    heat[0, 0, 8, 8] = 1.0  # one clear peak
    heat[0, 0, 2, 2] = 0.05
    for y, x in ((2, 2), (2, 12), (12, 2), (12, 12), (8, 8)):
        heat[1, 0, y, x] = 0.5  # five equal peaks
    entropy = multipeak_entropy(heat, 5, 0.1)
    assert entropy[1] == pytest.approx(math.log(5), rel=1e-5)
    assert entropy[0] < 0.05 < entropy[1]


def test_vl4pose_scores_are_the_negative_expected_log_likelihood(random_checkpoint, crops):
    images = crops.batch(np.arange(len(crops)), LSP14, TINY.sigma, None, np.random.default_rng(0))["image"]
    ckpt = random_checkpoint
    output = run_network(ckpt.pose, ckpt.heads["bones"], images)
    batch = PoolBatch(output, ckpt.heads, LSP14, ckpt.calibration)
    expected = -analyse(output, LSP14, ckpt.calibration).log_likelihood.double().numpy()
    np.testing.assert_allclose(STRATEGIES["vl4pose"]().scores(batch), expected)


def test_pool_values_have_one_value_per_image_and_need_the_heads(random_checkpoint, crops):
    indices = np.array([4, 0, 2])
    values = pool_values(random_checkpoint, crops, indices, get_strategies(list(STRATEGIES)), batch_size=2)
    for name, value in values.items():
        assert value.shape[0] == 3 and np.isfinite(value).all(), name
    assert values["coreset"].shape == (3, TINY.channels)
    assert not values["random"].any()
    alone = pool_values(random_checkpoint, crops, indices[:1], get_strategies(["aleatoric"]))
    np.testing.assert_allclose(alone["aleatoric"], values["aleatoric"][:1], rtol=1e-5)
    bare = Checkpoint(None, TINY, LSP14, random_checkpoint.pose, build_heads([], TINY, LSP14), Calibration())
    with pytest.raises(ConfigError, match="learning_loss"):
        pool_values(bare, crops, indices, get_strategies(["learning_loss"]))


# -- baseline heads -------------------------------------------------------------------------------
def test_ranking_loss_rewards_the_right_order():
    target = torch.tensor([3.0, 2.0, 1.0, 0.0])  # pairs (0, 3) and (1, 2): first of each pair is worse
    right = torch.tensor([10.0, 6.0, 4.0, 0.0])
    wrong = right.flip(0)
    assert ranking_loss(right, target) == 0.0  # right order, margins above 1
    assert ranking_loss(wrong, target) > 1.0
    predicted = torch.zeros(4, requires_grad=True)
    ranking_loss(predicted, target).backward()
    assert predicted.grad[0] < 0 < predicted.grad[3]  # gradient descent raises the worse image's prediction
    assert ranking_loss(torch.ones(1, requires_grad=True), torch.ones(1)).item() == 0.0


def test_learning_loss_head_learns_to_rank_losses():
    torch.manual_seed(0)
    head = LearningLossHead(TINY, LSP14)
    features = tiny_features(32)
    target = features[-1].mean(dim=(1, 2, 3)) * 10  # a loss the features determine
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    for step in range(150):
        order = torch.randperm(32, generator=torch.Generator().manual_seed(step))  # new pairs every step
        optimiser.zero_grad()
        head.loss([f[order] for f in features], {}, target[order]).backward()
        optimiser.step()
    head.eval()
    predicted = head.predicted_loss(features).detach()
    concordant = ((predicted[:, None] - predicted[None]) * (target[:, None] - target[None]) > 0).float().mean()
    assert concordant > 0.8  # of all pairs (the diagonal counts as discordant)


def test_aleatoric_head_trains_and_predicts_larger_variance_where_errors_are_larger():
    torch.manual_seed(0)
    head = AleatoricHead(TINY, LSP14)
    features = tiny_features(16)
    k = LSP14.num_keypoints
    noisy = torch.arange(k) >= k // 2  # the pose model errs a lot on these keypoints
    error = torch.where(noisy, torch.tensor(20.0), torch.tensor(0.2)).expand(16, k) * torch.rand(16, k).add(0.5)
    batch = {"keypoint_error": error, "weights": torch.ones(16, k)}
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    losses = []
    for _ in range(120):
        optimiser.zero_grad()
        loss = head.loss(features, batch, torch.zeros(16))
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0
    logvar = head.log_variance(features).detach()
    assert logvar[:, noisy].mean() > logvar[:, ~noisy].mean() + 1.0


def test_trainer_trains_the_baseline_heads_and_checkpoints_restore_them(tmp_path, lspet_dir):
    assert {"learning_loss", "aleatoric"} <= set(HEADS)
    train = load_samples("lspet", lspet_dir, "pool")[:8]
    val = load_samples("lspet", lspet_dir, "val")[:4]
    config = TrainConfig(epochs=1, batch_size=4, steps_per_epoch=2, warmup_steps=1, heads=("learning_loss", "aleatoric"))
    before = build_heads(["learning_loss", "aleatoric"], TINY, LSP14)
    torch.manual_seed(0)
    trained = Trainer(TINY, LSP14, config, tmp_path).fit(train, val)
    loaded = load_checkpoint(tmp_path / "best")
    assert set(loaded.heads) == {"bones", "learning_loss", "aleatoric"}
    for kind in ("learning_loss", "aleatoric"):
        for key, value in trained.heads[kind].state_dict().items():
            torch.testing.assert_close(loaded.heads[kind].state_dict()[key], value)
    assert any(p.shape == q.shape and not torch.equal(p, q) for p, q in
               zip(before["aleatoric"].parameters(), loaded.heads["aleatoric"].parameters()))
