"""Calibration with little validation evidence: a handful of validation images keep the previous model's
temperature, the score's reference is the new model's likelihoods (never pooled raw values), and the score
stays order-preserving and meaningful (each validation image scores its rank, not a fixed sigmoid)."""

from __future__ import annotations

import numpy as np
import pytest

from vl4pose.calibrate import (
    MIN_CALIBRATION_IMAGES,
    calibrate,
    choose_fallback,
    fit_temperature,
    score_pass,
    validation_pass,
)
from vl4pose.checkpoint import Calibration, load_checkpoint
from vl4pose.data import load_samples
from vl4pose.data.crops import CropCache
from vl4pose.skeletons import LSP14
from vl4pose.train import TrainConfig, Trainer

CONFIG = TrainConfig(epochs=1, batch_size=4, steps_per_epoch=2, warmup_steps=1)


@pytest.fixture(scope="module")
def handful(lspet_dir):
    return load_samples("lspet", lspet_dir, "pool")[100:112], load_samples("lspet", lspet_dir, "val")[20:25]


def _pass(ckpt, samples):
    cache = CropCache(samples, ckpt.model_config.input_size)
    return validation_pass(ckpt.pose, ckpt.heads["bones"], cache, ckpt.skeleton, ckpt.model_config.sigma)


@pytest.mark.parametrize(
    "images, current, previous, expected",
    [
        (25, None, True, None),
        (25, 25, True, None),
        (25, 3, True, "pooled_rounds"),
        (5, 2, True, "previous_temperature"),
        (5, None, False, "too_few"),
        (MIN_CALIBRATION_IMAGES, 1, False, "pooled_rounds"),
    ],
)
def test_the_fallback_follows_the_evidence(images, current, previous, expected):
    assert choose_fallback(images, current, previous) == expected


def test_a_handful_of_validation_images_keeps_the_previous_temperature_and_a_meaningful_score(
    tmp_path, handful, tiny_checkpoint
):
    train, val = handful
    previous = Calibration(temperature=0.3)  # not on the fitting grid: kept, never fitted
    trainer = Trainer(tiny_checkpoint.model_config, LSP14, CONFIG, tmp_path, init_from=tiny_checkpoint)
    trainer.calibration_options = {"previous": previous, "current_images": 2}
    best = trainer.fit(train, val)

    report = best.metrics["calibration"]
    assert report["fallback"] == "previous_temperature" and report["validation_images"] == len(val) < 20
    assert report["current_images"] == 2 and report["min_images"] == MIN_CALIBRATION_IMAGES
    assert best.calibration.temperature == previous.temperature == report["temperature"]
    saved = load_checkpoint(tmp_path / "best")
    assert saved.calibration.temperature == previous.temperature
    assert saved.metrics["calibration"]["fallback"] == "previous_temperature"

    # the reference: the new model's likelihoods of the validation images, at the kept temperature
    likelihoods = score_pass(_pass(saved, val), LSP14, saved.calibration)["log_likelihood"]
    assert saved.calibration.reference == pytest.approx(sorted(float(v) for v in likelihoods), abs=1e-4)
    # meaningful: each validation image scores its rank among them (not the sigmoid of < 2 values)
    ranks = (np.arange(len(val)) + 0.5) / len(val)
    np.testing.assert_allclose(saved.calibration.score(np.sort(likelihoods)), ranks, atol=1e-3)
    # order-preserving well beyond the reference (five spreads either side), inside (0, 1)
    spread = float(np.std(likelihoods))
    grid = np.linspace(likelihoods.min() - 5 * spread, likelihoods.max() + 5 * spread, 500)
    scores = saved.calibration.score(grid)
    assert np.all(np.diff(scores) > 0) and 0 < scores[0] < ranks[0] and ranks[-1] < scores[-1] < 1


def test_enough_validation_images_fit_the_temperature_and_say_when_rounds_were_pooled(tiny_checkpoint, handful):
    _, val = handful
    evidence = _pass(tiny_checkpoint, val)
    fitted, _ = fit_temperature(evidence, 5, tiny_checkpoint.model_config.sigma)
    previous = Calibration(temperature=0.3)  # not on the fitting grid
    sigma = tiny_checkpoint.model_config.sigma

    enough, report = calibrate(evidence, LSP14, 5, sigma, previous=previous, min_images=len(val))
    assert report["fallback"] is None and enough.temperature == fitted
    pooled, report = calibrate(evidence, LSP14, 5, sigma, previous=previous, current_images=1, min_images=len(val))
    assert report["fallback"] == "pooled_rounds" and pooled.temperature == fitted and report["current_images"] == 1
    alone, report = calibrate(evidence, LSP14, 5, sigma)
    assert report["fallback"] == "too_few" and alone.temperature == fitted == report["fitted_temperature"]
    assert len(alone.reference) == len(val)
