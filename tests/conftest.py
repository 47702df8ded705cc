"""Shared fixtures: real data locations (skipped when absent) and a tiny trained checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VL4POSE_SHARED_DATA", REPO.parent / "shared" / "data"))
LSPET = SHARED_DATA / "lspet"
COCO = SHARED_DATA / "coco_mini"


@pytest.fixture(scope="session")
def lspet_dir() -> Path:
    if not (LSPET / "joints.mat").is_file():
        pytest.skip(f"LSPET not found at {LSPET}")
    return LSPET


@pytest.fixture(scope="session")
def coco_dir() -> Path:
    if not (COCO / "annotations").is_dir():
        pytest.skip(f"COCO subset not found at {COCO}")
    return COCO


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, lspet_dir):
    """A tiny model trained for a few steps on a handful of LSPET images (a real, if weak, checkpoint)."""
    from vl4pose.data import load_samples
    from vl4pose.models import preset
    from vl4pose.skeletons import LSP14
    from vl4pose.train import TrainConfig, Trainer

    train = load_samples("lspet", lspet_dir, "pool")[:48]
    val = load_samples("lspet", lspet_dir, "val")[:16]
    out = tmp_path_factory.mktemp("tiny_run")
    config = TrainConfig(epochs=2, batch_size=8, steps_per_epoch=3, warmup_steps=2)
    return Trainer(preset("tiny"), LSP14, config, out).fit(train, val)
