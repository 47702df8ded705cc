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


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio 1.23.2 from .lsvenv on 127.0.0.1, shared by the whole session.

    Local files under ``SHARED_DATA`` are served as ``/data/local-files/?d=<path relative to it>``
    (a project still needs a Local Files import storage covering the folder).
    """
    from stack.labelstudio import DEFAULT_VENV, LabelStudioServer

    if not (DEFAULT_VENV / "bin" / "label-studio").exists():
        pytest.fail(f"Label Studio is not installed in {DEFAULT_VENV}; run `bash scripts/setup.sh`")
    server = LabelStudioServer(tmp_path_factory.mktemp("label_studio"),  # links resolved, as Label Studio does
                               files_root=SHARED_DATA.resolve() if SHARED_DATA.is_dir() else None)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def model_registry(tmp_path_factory, tiny_checkpoint):
    """A model registry with the tiny checkpoint published as version ``tiny-v1`` (current for no project yet:
    a test makes it current for the Label Studio projects it uses)."""
    from vl4pose.registry import ModelRegistry

    registry = ModelRegistry(tmp_path_factory.mktemp("models"))
    registry.publish(tiny_checkpoint, "tiny-v1")
    return registry
