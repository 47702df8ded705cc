"""The direct-regression variant: the offset likelihood is the Gaussian it claims to be, it trains on
LSPET, and on synthetic hand21 images impossible hands get a lower likelihood than natural ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vl4pose.data import load_samples
from vl4pose.data.crops import CropCache
from vl4pose.errors import ConfigError
from vl4pose.models import preset
from vl4pose.regression.demo import SyntheticHands, hand_demo
from vl4pose.regression.model import (RegressionPoseModel, crop_batches, fit_regression, offset_log_likelihood,
                                      offset_nll, offset_params)
from vl4pose.skeletons import HAND21, LSP14


def test_offset_likelihood_equals_a_direct_gaussian_computation():
    rng = np.random.default_rng(0)
    n, k, e = 3, LSP14.num_keypoints, LSP14.num_edges
    raw = torch.from_numpy(rng.normal(0, 1, (n, 5 * e)))
    offset, chol = offset_params(raw)
    keypoints = torch.from_numpy(rng.uniform(0, 1, (n, k, 2)))
    logq = offset_log_likelihood(keypoints, offset, chol, LSP14).numpy()
    for i in range(n):
        for j, (p, c) in enumerate(LSP14.edges):
            sigma = (chol[i, j] @ chol[i, j].T).numpy()
            d = (keypoints[i, c] - keypoints[i, p] - offset[i, j]).numpy()
            direct = -math.log(2 * math.pi) - 0.5 * math.log(np.linalg.det(sigma)) - 0.5 * d @ np.linalg.solve(sigma, d)
            assert logq[i, j] == pytest.approx(direct, rel=1e-9, abs=1e-9)
    mvn = torch.distributions.MultivariateNormal(keypoints[:, [p for p, _ in LSP14.edges]] + offset, scale_tril=chol)
    torch.testing.assert_close(offset_log_likelihood(keypoints, offset, chol, LSP14),
                               mvn.log_prob(keypoints[:, [c for _, c in LSP14.edges]]))


def test_offset_parameters_are_valid_cholesky_factors():
    _, chol = offset_params(torch.randn(4, 5 * HAND21.num_edges) * 20)
    assert (torch.diagonal(chol, dim1=-2, dim2=-1) > 0).all() and (chol[..., 0, 1] == 0).all()
    assert (torch.linalg.eigvalsh(chol @ chol.transpose(-1, -2)) > 0).all()


def test_offset_nll_ignores_edges_with_a_missing_keypoint():
    offset, chol = offset_params(torch.zeros(1, 5 * LSP14.num_edges))
    keypoints = torch.rand(1, 14, 2)
    labelled = torch.ones(1, 14)
    full = offset_nll(keypoints, labelled, offset, chol, LSP14)
    moved = keypoints.clone()
    moved[0, 13] = torch.tensor([float("nan"), float("nan")])  # head top: only the first edge uses it
    labelled[0, 13] = 0
    assert torch.isfinite(offset_nll(moved, labelled, offset, chol, LSP14))
    assert offset_nll(moved, labelled, offset, chol, LSP14) != full
    with pytest.raises(ConfigError):
        RegressionPoseModel(preset("tiny"), LSP14, "nope")


@pytest.mark.parametrize("regressor", ["integral", "fc"])
def test_regression_variant_trains_on_lspet(lspet_dir, regressor):
    torch.manual_seed(0)
    config = preset("tiny")
    cache = CropCache(load_samples("lspet", lspet_dir, "pool")[:24], config.input_size)
    model = RegressionPoseModel(config, LSP14, regressor)
    history = fit_regression(model, crop_batches(cache, LSP14, 8), steps=40, lr=2e-3)
    first, last = history[:5], history[-5:]
    assert np.mean([h["offset_nll"] for h in last]) < np.mean([h["offset_nll"] for h in first]) - 1.0
    assert np.mean([h["l1"] for h in last]) < np.mean([h["l1"] for h in first])
    with torch.no_grad():
        out = model(cache.batch(np.arange(4), LSP14, 1.0, None, np.random.default_rng(0))["image"])
    assert out.keypoints.shape == (4, 14, 2) and out.log_likelihood.shape == (4,)
    assert torch.isfinite(out.log_likelihood).all()


def test_synthetic_hands_have_hand21_keypoints_inside_the_image():
    hands = SyntheticHands(64)
    batch = hands.batch(6, np.random.default_rng(0))
    assert batch["image"].shape == (6, 3, 64, 64) and batch["keypoints"].shape == (6, HAND21.num_keypoints, 2)
    assert 0.0 < batch["keypoints"].min() and batch["keypoints"].max() < 1.0
    natural = hands.poses(200, np.random.default_rng(1))
    broken = hands.poses(200, np.random.default_rng(1), ood=True)

    def bend(poses):  # mean absolute turn between consecutive phalanges
        turns = []
        for f in range(5):
            chain = poses[:, [0] + [1 + 4 * f + j for j in range(4)]]
            seg = np.diff(chain, axis=1)
            ang = np.arctan2(seg[..., 1], seg[..., 0])
            turns.append(np.abs((np.diff(ang, axis=1) + np.pi) % (2 * np.pi) - np.pi))
        return np.mean(turns)

    assert bend(broken) > 2 * bend(natural)


@pytest.mark.slow
def test_impossible_hands_get_a_lower_likelihood_than_natural_ones():
    report = hand_demo(steps=400, train_images=1024, test=100)
    assert report["in_distribution_mean_error"] < 0.06  # the regressor learned natural hands (crop units)
    assert report["log_likelihood_out_of_distribution"] < report["log_likelihood_in_distribution"]
    assert report["ood_auroc"] > 0.65  # the product path: likelihood of the regressed pose
    assert report["gt_ood_auroc"] > 0.95  # the offset model itself: likelihood of the true poses
