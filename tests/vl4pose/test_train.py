"""Training: smoke run, resume after an interruption, fine-tuning, detached auxiliary features, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vl4pose.data import load_samples
from vl4pose.heads import build_heads
from vl4pose.models import build_pose, preset
from vl4pose.skeletons import LSP14
from vl4pose.train import TrainConfig, Trainer
from vl4pose.errors import TrainingError

CONFIG = TrainConfig(epochs=2, batch_size=4, steps_per_epoch=2, warmup_steps=1)


@pytest.fixture(scope="module")
def few(lspet_dir):
    return load_samples("lspet", lspet_dir, "pool")[:12], load_samples("lspet", lspet_dir, "val")[:6]


def test_two_step_smoke_run_writes_a_best_checkpoint(tmp_path, few):
    steps = []
    best = Trainer(preset("tiny"), LSP14, CONFIG, tmp_path, callbacks=[steps.append]).fit(*few)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert best.path == tmp_path / "best" and best.metrics["best_epoch"]["epoch"] in (1, 2)
    assert best.calibration.temperature > 0 and len(best.calibration.reference) == 6
    assert steps and steps[-1].fraction == pytest.approx(1.0)


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, few):
    torch.manual_seed(0)
    straight = Trainer(preset("tiny"), LSP14, CONFIG, tmp_path / "a").fit(*few)

    def stop(progress):
        if progress.epoch == 1 and progress.step == 1:
            raise Interrupt

    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        Trainer(preset("tiny"), LSP14, CONFIG, tmp_path / "b", callbacks=[stop]).fit(*few)
    torch.manual_seed(123)  # a different initialisation: resuming must not depend on it
    resumed = Trainer(preset("tiny"), LSP14, CONFIG, tmp_path / "b").fit(*few)
    for key, value in straight.pose.state_dict().items():
        torch.testing.assert_close(resumed.pose.state_dict()[key], value, rtol=1e-4, atol=1e-5)
    assert len(json.loads((tmp_path / "b" / "history.json").read_text())) == 2


def test_resume_refuses_other_settings(tmp_path, few):
    Trainer(preset("tiny"), LSP14, CONFIG, tmp_path).fit(*few)
    with pytest.raises(TrainingError, match="other settings"):
        Trainer(preset("tiny"), LSP14, TrainConfig(epochs=3, batch_size=4), tmp_path).fit(*few)


def test_fine_tune_starts_from_the_given_weights(tmp_path, few):
    first = Trainer(preset("tiny"), LSP14, CONFIG, tmp_path / "a").fit(*few)
    trainer = Trainer(preset("tiny"), LSP14, CONFIG, tmp_path / "b", init_from=first)
    for key, value in first.pose.state_dict().items():
        torch.testing.assert_close(trainer.pose.state_dict()[key], value)


def test_zero_usable_keypoints_fails_clearly(tmp_path, few):
    train, val = few
    unlabelled = [type(s)(s.sample_id, s.image, np.full_like(s.keypoints, np.nan), np.zeros_like(s.visibility)) for s in train]
    with pytest.raises(TrainingError, match="no usable keypoints"):
        Trainer(preset("tiny"), LSP14, CONFIG, tmp_path).fit(unlabelled, val)


def test_auxiliary_loss_sends_no_gradient_to_the_pose_model(few):
    from vl4pose.data.crops import CropCache

    config = preset("tiny")
    pose, heads = build_pose(config, 14), build_heads([], config, LSP14)
    batch = CropCache(few[0][:4], config.input_size).batch(np.arange(4), LSP14, 1.0, None, np.random.default_rng(0))
    output = pose(batch["image"])
    heads["bones"].loss([f.detach() for f in output.features], batch, torch.zeros(4)).backward()
    assert all(p.grad is None for p in pose.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in heads.parameters())


def test_cli_train_smoke(tmp_path, lspet_dir):
    from vl4pose.cli import main

    code = main(["train", "--dataset", "lspet", "--data", str(lspet_dir), "--limit", "8", "--preset", "tiny",
                 "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--out", str(tmp_path / "run")])
    assert code == 0 and (tmp_path / "run" / "best" / "weights.pt").is_file()


def test_cli_train_model_override_sets_the_network_shape(tmp_path, lspet_dir):
    from vl4pose.checkpoint import load_checkpoint
    from vl4pose.cli import main

    code = main(["train", "--dataset", "lspet", "--data", str(lspet_dir), "--limit", "8", "--preset", "tiny",
                 "--model", "input_size=96", "channels=24", "--epochs", "1", "--steps-per-epoch", "1",
                 "--batch-size", "4", "--out", str(tmp_path / "run")])
    config = load_checkpoint(tmp_path / "run" / "best").model_config
    assert code == 0 and (config.input_size, config.channels, config.stacks) == (96, 24, 1)


@pytest.mark.parametrize("extra, message", [
    (["--model", "width=3"], "KEY one of"),
    (["--model", "stacks=two"], "'two' is not a whole number"),
    (["--model", "input_size=80"], "multiple of 32"),
    (["--model", "stacks=2", "--init", "INIT"], "keeps --init's shape"),
])
def test_cli_train_bad_model_override_says_what_to_do(tmp_path, lspet_dir, few, caplog, extra, message):
    from vl4pose.cli import main

    init = tmp_path / "init"
    if "INIT" in extra:
        Trainer(preset("tiny"), LSP14, CONFIG, init).fit(*few)
    args = [str(init / "best") if a == "INIT" else a for a in extra]
    code = main(["train", "--dataset", "lspet", "--data", str(lspet_dir), "--limit", "8", "--preset", "tiny",
                 "--epochs", "1", "--steps-per-epoch", "1", "--out", str(tmp_path / "run"), *args])
    assert code == 2 and message in caplog.text and not (tmp_path / "run" / "best").exists()

