"""Pose engine v2: devices, the training time budget, flip test and distribution-aware decoding."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from vl4pose.budget import TimeBudget
from vl4pose.codec import encode
from vl4pose.data import load_samples
from vl4pose.data.crops import CropCache
from vl4pose.data.transforms import AugmentConfig
from vl4pose import device as device_module
from vl4pose.device import prepare_module, resolve_device, training_bf16
from vl4pose.errors import ConfigError, TrainingError
from vl4pose.inference import run_network
from vl4pose.models import preset
from vl4pose.postprocess import subpixel_dark
from vl4pose.skeletons import LSP14
from vl4pose.train import TrainConfig, Trainer

def cuda(test):
    """A test that needs a CUDA GPU: marked ``cuda`` (``pytest -m cuda`` selects them) and skipped without one."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh runs it)")
    return pytest.mark.cuda(skip(test))


@pytest.fixture(scope="module")
def few(lspet_dir):
    return load_samples("lspet", lspet_dir, "pool")[:24], load_samples("lspet", lspet_dir, "val")[:6]


# -- devices ----------------------------------------------------------------------------------------
def test_device_settings_resolve_and_refuse_clearly(monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("VL4POSE_DEVICE", "cpu")
    assert resolve_device(None).type == "cpu"
    with pytest.raises(ConfigError, match="choose one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cpu"):
            resolve_device("cuda")


def test_cli_device_cuda_without_a_gpu_is_a_message(tmp_path, lspet_dir, caplog):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from vl4pose.cli import main

    code = main(["train", "--dataset", "lspet", "--data", str(lspet_dir), "--limit", "8", "--preset", "tiny",
                 "--out", str(tmp_path / "run"), "--device", "cuda", "--epochs", "1"])
    assert code == 2 and "--device cpu" in caplog.text


def test_a_checkpoint_saved_from_another_device_loads_on_the_cpu(tiny_checkpoint, tmp_path):
    """Weights saved from GPU tensors carry their device; loading maps them to the CPU."""
    from vl4pose.checkpoint import load_checkpoint, save_checkpoint

    folder = save_checkpoint(tmp_path / "ckpt", tiny_checkpoint)
    weights = torch.load(folder / "weights.pt", weights_only=True)
    # what a GPU save looks like to a CPU-only machine: the same tensors, tagged for another device
    torch.save(weights, folder / "weights.pt")
    loaded = load_checkpoint(folder)
    assert all(p.device.type == "cpu" for p in loaded.pose.parameters())


def test_the_batched_data_path_on_a_device_matches_the_cpu_path(few):
    """The GPU data path (canvases on the device, warp + encode there) is the same code; on CPU tensors it must
    give the same batch as the default path for the same random draws."""
    train, _ = few
    plain = CropCache(train[:8], 64)
    placed = CropCache(train[:8], 64, device=torch.device("cpu"))
    a = plain.batch(np.arange(8), LSP14, 1.0, AugmentConfig(), np.random.default_rng(3))
    b = placed.batch(np.arange(8), LSP14, 1.0, AugmentConfig(), np.random.default_rng(3))
    for key in ("image", "heatmaps", "weights", "labelled"):
        torch.testing.assert_close(a[key], b[key])
    heatmaps, _ = encode(a["keypoints"], a["labelled"], 16, 1.0)
    torch.testing.assert_close(heatmaps, a["heatmaps"])


def test_training_precision_resolves_and_refuses_emulated_bf16(monkeypatch):
    """auto = bf16 where the hardware does it natively; bf16 on a CPU without it is a message, not a slow run."""
    cpu = torch.device("cpu")
    assert training_bf16(cpu, "fp32") is False
    monkeypatch.setattr(device_module, "cpu_bf16_supported", lambda: True)
    assert training_bf16(cpu, "auto") is True and training_bf16(cpu, "bf16") is True
    monkeypatch.setattr(device_module, "cpu_bf16_supported", lambda: False)
    assert training_bf16(cpu, "auto") is False
    with pytest.raises(ConfigError, match="--precision fp32"):
        training_bf16(cpu, "bf16")
    with pytest.raises(ConfigError, match="choose one of"):
        training_bf16(cpu, "fp8")


def test_channels_last_inference_matches_the_plain_layout(tiny_checkpoint):
    """Channels-last memory is a speed setting: the network's outputs stay those of the NCHW layout."""
    pose = tiny_checkpoint.pose.eval()
    crops = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = pose(crops).heatmaps[-1].clone()
        fast = prepare_module(pose, torch.device("cpu"))
        assert next(p for p in fast.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
        out = run_network(fast, tiny_checkpoint.heads["bones"], crops).heatmaps
    torch.testing.assert_close(out, plain, rtol=1e-4, atol=1e-5)


def test_bf16_training_on_the_cpu_keeps_fp32_weights(tmp_path, few):
    """With bf16 autocast of the trunk in training, the weights, the checkpoint and inference stay fp32."""
    from vl4pose.checkpoint import load_checkpoint

    config = TrainConfig(epochs=1, batch_size=4, steps_per_epoch=3, warmup_steps=1, precision="bf16")
    if not device_module.cpu_bf16_supported():
        with pytest.raises(ConfigError, match="no native bf16"):
            Trainer(preset("tiny"), LSP14, config, tmp_path)
        return
    trainer = Trainer(preset("tiny"), LSP14, config, tmp_path)
    assert trainer.bf16
    trainer.fit(*few)
    loaded = load_checkpoint(tmp_path / "best")
    assert all(p.dtype == torch.float32 for p in loaded.pose.parameters())
    history = json.loads((tmp_path / "history.json").read_text())
    assert np.isfinite(history[-1]["train_loss"])


@cuda
def test_training_and_inference_on_cuda(tmp_path, few):
    """bf16 trunk, channels-last, canvases on the GPU; the checkpoint loads on the CPU afterwards."""
    from vl4pose.checkpoint import load_checkpoint
    from vl4pose.predictor import Predictor, PredictorConfig

    config = TrainConfig(epochs=1, batch_size=4, steps_per_epoch=3, warmup_steps=1)
    best = Trainer(preset("tiny"), LSP14, config, tmp_path, device="cuda").fit(*few)
    assert best.path == tmp_path / "best"
    cpu = load_checkpoint(tmp_path / "best")
    image = few[1][0].image
    on_gpu = Predictor(tmp_path / "best", PredictorConfig(device="cuda")).predict(image)
    on_cpu = Predictor(cpu, PredictorConfig(device="cpu")).predict(image)
    assert on_gpu.raw.dtype == np.float64 and np.isfinite(on_gpu.log_likelihood)
    # bf16 trunk vs fp32: poses agree to about a heatmap pixel on most keypoints
    assert np.mean(np.linalg.norm(on_gpu.raw - on_cpu.raw, axis=1) < 8.0) >= 0.7


# -- time budget ------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_budget_schedule_reaches_its_end_when_throughput_halves():
    """Simulated run: 100 s budget, 0.1 s steps that become 0.2 s halfway; the schedule ends on time."""
    clock = FakeClock()
    budget = TimeBudget(100.0, clock=clock)
    fractions, step_time = [], 0.1
    while True:
        left = budget.step_time_left(steps_per_epoch=50, step_in_epoch=len(fractions) % 50, per_step=step_time,
                                     val_estimate=1.0)
        if left <= 0:
            break
        fractions.append(budget.fraction(left))
        step_time = 0.2 if clock.now > 40 else 0.1
        clock.now += step_time
        budget.step_seconds += step_time
        if len(fractions) % 50 == 0:
            clock.now += 1.0  # a validation
    assert clock.now <= 100.0 - 2.0 + 0.2  # a final validation and the calibration still fit
    assert clock.now >= 100.0 - 2.0 - 1.5  # and little of the budget is left unused
    assert fractions == sorted(fractions) and fractions[-1] > 0.97


def test_a_time_budget_run_whose_throughput_halves_ends_on_time(tmp_path, few, caplog):
    """The real training loop on a clock the test drives: steps take 0.1 s, then 0.2 s from the middle of a 20 s
    budget on (throughput halves); the run still ends on time with its schedule finished, and it writes progress
    lines to the log."""
    clock = FakeClock()
    budget_s = 20.0
    factors = []

    def tick(progress):
        if progress.validation is not None:
            clock.now += 0.3  # a validation pass
            return
        factors.append(trainer.lr_factor)
        clock.now += 0.1 if clock.now < budget_s / 2 else 0.2

    config = TrainConfig(epochs=1000, batch_size=4, steps_per_epoch=4, warmup_steps=2, time_budget_s=budget_s,
                         log_every_s=1.0)
    trainer = Trainer(preset("tiny"), LSP14, config, tmp_path, callbacks=[tick], clock=clock)
    with caplog.at_level(logging.INFO, logger="vl4pose.train"):
        best = trainer.fit(*few)
    assert budget_s - 1.5 <= clock.now <= budget_s + 0.2, f"ended at {clock.now:.2f} s of a {budget_s} s budget"
    after_warmup = factors[2:]
    assert all(b <= a + 1e-9 for a, b in zip(after_warmup, after_warmup[1:]))  # the schedule never goes back up
    assert factors[-1] < 0.05 and max(factors) > 0.9  # the whole cosine: warm, then down to (nearly) its floor
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history) >= 10 and history[-1]["epoch"] == len(history)
    assert any("images/s" in r.message and "left of a 0.3 min budget" in r.message for r in caplog.records)
    assert best.calibration.reference


def test_a_time_budget_too_small_for_one_epoch_says_what_to_do(tmp_path, lspet_dir):
    """50 steps of 0.1 s cannot fit a 2 s budget: after timing a few steps the run stops with what to do."""
    train = load_samples("lspet", lspet_dir, "pool")[:200]
    val = load_samples("lspet", lspet_dir, "val")[:4]
    clock = FakeClock()

    def tick(progress):
        clock.now += 0.1

    config = TrainConfig(batch_size=4, warmup_steps=1, time_budget_s=2.0, budget_check_steps=3)
    with pytest.raises(TrainingError, match="--time-budget 1 or more|--time-budget [0-9]+ or more"):
        Trainer(preset("tiny"), LSP14, config, tmp_path, callbacks=[tick], clock=clock).fit(train, val)


def test_time_budget_must_be_positive():
    with pytest.raises(TrainingError, match="positive"):
        TimeBudget(0.0)


# -- inference --------------------------------------------------------------------------------------
def test_flip_test_is_mirror_consistent(tiny_checkpoint, few):
    """The flip-test average of a mirrored crop is the mirrored (left/right swapped) average of the crop."""
    cache = CropCache(few[1], 64)
    images = cache.batch(np.arange(len(cache)), LSP14, 1.0, None, np.random.default_rng(0))["image"]
    perm = LSP14.flip_permutation()
    pose, bones = tiny_checkpoint.pose.eval(), tiny_checkpoint.heads["bones"].eval()
    plain = run_network(pose, bones, images, perm).heatmaps
    mirrored = run_network(pose, bones, images.flip(-1), perm).heatmaps
    torch.testing.assert_close(mirrored.flip(-1)[:, perm], plain, rtol=1e-4, atol=1e-5)
    single = run_network(pose, bones, images).heatmaps
    assert not torch.allclose(single, plain)


@pytest.mark.parametrize("seed", range(5))
def test_dark_decoding_recovers_a_gaussian_centre(seed):
    rng = np.random.default_rng(seed)
    centre = torch.tensor(rng.uniform(6, 26, size=(1, 3, 2)), dtype=torch.float32)
    heatmaps, _ = encode(centre, torch.ones(1, 3), 32, 2.0)
    flat = heatmaps.reshape(1, 3, -1).argmax(dim=2)
    xs, ys = (flat % 32)[..., None], (flat // 32)[..., None]
    fx, fy = subpixel_dark(heatmaps.numpy(), xs.numpy(), ys.numpy(), 2.0)
    found = np.stack([fx[..., 0], fy[..., 0]], axis=-1)
    np.testing.assert_allclose(found, centre.numpy(), atol=0.02)
