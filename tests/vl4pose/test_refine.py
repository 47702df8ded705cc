"""The tree DP equals brute-force enumeration; the expected log-likelihood equals explicit enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vl4pose.likelihood import Candidates, edge_log_likelihood, expected_log_likelihood, find_candidates
from vl4pose.refine import pairwise_tables, refine, refine_bruteforce
from vl4pose.skeletons import Skeleton


@st.composite
def problems(draw, max_keypoints: int = 6, max_candidates: int = 4):
    """A random tree, candidate sets (some slots invalid), bone parameters and optional clamps."""
    k = draw(st.integers(2, max_keypoints))
    m = draw(st.integers(1, max_candidates))
    parents = [draw(st.integers(0, i - 1)) for i in range(1, k)]
    skeleton = Skeleton("random", tuple(f"k{i}" for i in range(k)), tuple((p, i + 1) for i, p in enumerate(parents)), 0)
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n = 2
    xy = torch.from_numpy(rng.uniform(0, 16, size=(n, k, m, 2)))
    value = torch.from_numpy(np.sort(rng.uniform(0, 1, size=(n, k, m)), axis=2)[..., ::-1].copy())
    valid = torch.from_numpy(rng.random((n, k, m)) < 0.8)
    valid[..., 0] = True
    value = torch.where(valid, value, torch.full_like(value, -math.inf))
    candidates = Candidates(xy, value, valid)
    if draw(st.booleans()):
        for i in range(n):
            for keypoint in rng.choice(k, size=rng.integers(1, k + 1), replace=False):
                candidates.clamp(int(keypoint), i, tuple(rng.uniform(0, 16, 2)))
    mean = torch.from_numpy(rng.uniform(0.05, 0.6, size=(n, k - 1)))
    logvar = torch.from_numpy(rng.uniform(-6, 0, size=(n, k - 1)))
    temperature = draw(st.sampled_from([0.05, 0.2, 1.0]))
    return skeleton, candidates, candidates.log_probs(temperature), mean, logvar


def objective(choice: torch.Tensor, log_probs, pair, skeleton) -> torch.Tensor:
    pair = torch.as_tensor(pair)
    k = skeleton.num_keypoints
    rows = torch.arange(choice.shape[0])
    total = log_probs.double()[rows[:, None], torch.arange(k)[None], choice].sum(dim=1)
    for e, (p, c) in enumerate(skeleton.edges):
        total = total + pair[rows, e, choice[:, c], choice[:, p]]
    return total


@settings(max_examples=60, deadline=None)
@given(problems())
def test_dp_matches_bruteforce(problem):
    skeleton, candidates, log_probs, mean, logvar = problem
    result = refine(candidates, log_probs, mean, logvar, skeleton, 16.0)
    choice, score = refine_bruteforce(candidates, log_probs, mean, logvar, skeleton, 16.0)
    torch.testing.assert_close(result.score, score, rtol=1e-9, atol=1e-9)
    pair = pairwise_tables(candidates, mean, logvar, skeleton, 16.0)
    # the DP's configuration achieves the optimum (ties may pick another argmax)
    torch.testing.assert_close(objective(result.choice, log_probs, pair, skeleton), score, rtol=1e-9, atol=1e-9)
    assert bool(candidates.valid.gather(2, result.choice[..., None]).all())


@settings(max_examples=30, deadline=None)
@given(problems(max_keypoints=5, max_candidates=3))
def test_confidence_is_max_marginal_share(problem):
    skeleton, candidates, log_probs, mean, logvar = problem
    result = refine(candidates, log_probs, mean, logvar, skeleton, 16.0)
    pair = pairwise_tables(candidates, mean, logvar, skeleton, 16.0)
    n, k, m = log_probs.shape
    configs = torch.tensor(list(itertools.product(range(m), repeat=k)))
    for i in range(n):
        totals = objective(configs, log_probs[i:i + 1].expand(len(configs), k, m),
                           torch.as_tensor(pair[i:i + 1]).expand(len(configs), -1, m, m), skeleton)
        for kp in range(k):
            mm = torch.stack([totals[configs[:, kp] == a].max() for a in range(m)])
            expected = torch.exp(mm[result.choice[i, kp]] - torch.logsumexp(mm, 0))
            assert abs(float(expected) - float(result.confidence[i, kp])) < 1e-5


@settings(max_examples=40, deadline=None)
@given(problems(max_keypoints=5, max_candidates=3))
def test_expected_log_likelihood_equals_enumeration(problem):
    skeleton, candidates, log_probs, mean, logvar = problem
    total, per_edge = expected_log_likelihood(candidates, log_probs, mean, logvar, skeleton, 16.0)
    n, k, m = log_probs.shape
    probs = log_probs.exp()
    for i in range(n):
        expected = 0.0
        for config in itertools.product(range(m), repeat=k):
            weight = float(np.prod([probs[i, kp, a] for kp, a in enumerate(config)]))
            if weight == 0.0:
                continue
            logq = sum(float(edge_log_likelihood(candidates.xy[i:i + 1, c, config[c]][None], candidates.xy[i:i + 1, p, config[p]][None],
                                                 mean[i:i + 1, e], logvar[i:i + 1, e], 16.0))
                       for e, (p, c) in enumerate(skeleton.edges))
            expected += weight * logq
        assert math.isclose(float(total[i]), expected, rel_tol=1e-6, abs_tol=1e-6)
    torch.testing.assert_close(per_edge.sum(dim=1), total)


def test_k1_reduces_to_argmax_pose_likelihood():
    heat = torch.rand(3, 4, 8, 8)
    candidates = find_candidates(heat, 1)
    skeleton = Skeleton("chain", ("a", "b", "c", "d"), ((0, 1), (1, 2), (2, 3)), 0)
    mean, logvar = torch.full((3, 3), 0.3), torch.full((3, 3), -2.0)
    total, _ = expected_log_likelihood(candidates, candidates.log_probs(0.1), mean, logvar, skeleton, 8.0)
    xy = candidates.xy[:, :, 0]
    direct = sum(edge_log_likelihood(xy[:, c][:, None], xy[:, p][:, None], mean[:, e], logvar[:, e], 8.0)[:, 0, 0]
                 for e, (p, c) in enumerate(skeleton.edges))
    torch.testing.assert_close(total, direct)


def test_candidates_keep_border_peaks_and_never_empty():
    heat = torch.zeros(1, 2, 8, 8)
    heat[0, 0, 0, 0] = 1.0  # corner peak
    heat[0, 0, 4, 4] = 0.5
    heat[0, 0, 7, 3] = 0.7  # border peak
    candidates = find_candidates(heat, 5)
    found = {tuple(map(round, xy.tolist())) for xy, ok in zip(candidates.xy[0, 0], candidates.valid[0, 0]) if ok}
    assert {(0, 0), (4, 4), (3, 7)} <= found
    assert candidates.valid[0, 1, 0]  # a flat map still has its global maximum
    assert torch.isfinite(candidates.value[0, 0, :3]).all()
    assert list(candidates.value[0, 0, :3]) == sorted(candidates.value[0, 0, :3].tolist(), reverse=True)


def test_tied_candidates_go_to_the_lowest_index_whatever_the_rest_of_the_map():
    """A plateau of equal values (a flat young model's zeros) fills the last candidate slots with its lowest-index
    pixels, as a stable sort of the whole map would; a change elsewhere on the map does not move them (a batch of
    another size changes far-away heatmap values in their last digits)."""
    from vl4pose.postprocess import find_candidates as find

    rng = np.random.default_rng(3)
    heat = np.zeros((1, 1, 16, 16), np.float32)
    heat[0, 0, 12, 12], heat[0, 0, 3, 9] = 0.9, 0.4  # two peaks, then the zero plateau ties for the rest
    expected = [(12, 12), (9, 3), (0, 0), (1, 0), (2, 0)]  # (x, y): the plateau's first pixels in index order
    for _ in range(20):
        noisy = heat.copy()
        noisy[0, 0, 12:, :4] = -rng.random((4, 4), dtype=np.float32)  # below the plateau, far from its first pixels
        found = find(noisy, 5)
        assert [tuple(int(round(v)) for v in xy) for xy in found.xy[0, 0]] == expected
        assert found.valid[0, 0].all() and found.value[0, 0].tolist() == pytest.approx([0.9, 0.4, 0.0, 0.0, 0.0])


def test_clamp_is_honoured():
    heat = torch.rand(1, 3, 16, 16)
    candidates = find_candidates(heat, 4)
    skeleton = Skeleton("chain", ("a", "b", "c"), ((0, 1), (1, 2)), 0)
    candidates.clamp(1, 0, (3.25, 7.5))
    result = refine(candidates, candidates.log_probs(0.1), torch.full((1, 2), 0.2), torch.full((1, 2), -3.0), skeleton, 16.0)
    assert result.xy[0, 1].tolist() == [3.25, 7.5]
