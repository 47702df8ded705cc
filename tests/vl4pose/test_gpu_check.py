"""The prepared GPU check runs here in its CPU dry-run mode, so no device time is lost to a bug."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vl4pose.data import load_samples

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pack(gpu_pack) -> Path:
    return gpu_pack


def test_the_pack_keeps_keypoints_on_the_person(pack, lspet_dir):
    """The pack holds the asked-for images with its settings recorded; packed keypoints are the originals moved into canvas pixels: bone lengths scale by one factor per image."""
    settings = json.loads((pack / "PACK.json").read_text())
    assert settings["canvas"] == 160 and settings["quality"] == 75
    assert {k: len(v) for k, v in json.loads((pack / "split.json").read_text()).items()} == \
        {"pool": 48, "val": 16, "test": 24}
    original = {s.sample_id: s for s in load_samples("lspet", lspet_dir, "pool")[:48]}
    for sample in load_samples("lspet", pack, "pool"):
        source = original[sample.sample_id]
        assert (sample.labelled == source.labelled).all()
        a, b = source.keypoints[source.labelled], sample.keypoints[sample.labelled]
        if len(a) < 2:
            continue
        ratio = np.linalg.norm(b[1:] - b[0], axis=1) / np.maximum(np.linalg.norm(a[1:] - a[0], axis=1), 1e-6)
        keep = np.linalg.norm(a[1:] - a[0], axis=1) > 5
        assert np.allclose(ratio[keep], np.median(ratio[keep]), rtol=0.02)
        assert sample.load_image().shape[:2] == (160, 160)


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_figure(pack, tmp_path):
    env = {**os.environ, "VL4POSE_GPU_PACK": str(pack), "PYTHON": sys.executable}
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", str(tmp_path / "out")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert done.returncode == 0, (results["steps"], done.stderr[-2000:])
    assert results["dry_run"] and results["device"] == "cpu"
    assert results["history"] and results["evaluate_gt"]["images"] == 24 and results["evaluate_auto"]["images"] == 24
    assert results["bench"]["rank_images_per_s"] > 0 and "flipped" in results["bench"]["rank_passes"]
    assert "| test PCK@0.2, auto box |" in (tmp_path / "out" / "table.md").read_text()


def test_gpu_check_without_a_pack_says_how_to_build_it(tmp_path):
    env = {**os.environ, "VL4POSE_GPU_PACK": str(tmp_path / "missing")}
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", str(tmp_path / "out")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "scripts/gpu_pack.py" in done.stderr
