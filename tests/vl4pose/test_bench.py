"""The benchmark: its JSON has every figure, and the research-code brute force agrees with the tree DP."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vl4pose.bench import bench_refine, refine_recursive
from vl4pose.cli import main
from vl4pose.likelihood import Candidates
from vl4pose.refine import refine
from vl4pose.skeletons import HAND21, LSP14, Skeleton


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 4), st.sampled_from([LSP14, HAND21, None]))
def test_recursive_brute_force_matches_the_dp(seed, m, skeleton):
    rng = np.random.default_rng(seed)
    if skeleton is None:  # a random tree
        k = int(rng.integers(2, 8))
        skeleton = Skeleton("random", tuple(f"k{i}" for i in range(k)),
                            tuple((int(rng.integers(0, i)), i) for i in range(1, k)), 0)
    k, e = skeleton.num_keypoints, skeleton.num_edges
    xy = torch.from_numpy(rng.uniform(0, 32, (1, k, m, 2)))
    value = torch.from_numpy(np.sort(rng.uniform(0, 1, (1, k, m)), axis=2)[..., ::-1].copy())
    valid = torch.from_numpy(rng.random((1, k, m)) < 0.7)
    valid[..., 0] = True
    cands = Candidates(xy, torch.where(valid, value, torch.full_like(value, -math.inf)), valid)
    log_probs = cands.log_probs(0.2)
    mean, logvar = torch.from_numpy(rng.uniform(0.05, 0.5, (1, e))), torch.from_numpy(rng.uniform(-6, 0, (1, e)))
    dp = refine(cands, log_probs, mean, logvar, skeleton, 32.0)
    choice, score = refine_recursive(log_probs[0].numpy(), xy[0].numpy(), mean[0].numpy(), logvar[0].numpy(),
                                     skeleton, 32.0)
    assert score == pytest.approx(float(dp.score[0]), rel=1e-9, abs=1e-9)
    assert choice == dp.choice[0].tolist()


def test_bench_refine_reports_identical_results_and_the_speed_up():
    report = bench_refine(images=3, repeats=1)
    assert report["refine_identical"] is True
    assert report["refine_bruteforce_ms_k5"] > report["refine_dp_ms_k5"] > 0


def test_bench_json_has_every_figure(lspet_dir, capsys):
    code = main(["bench", "--json", "--preset", "tiny", "--repeats", "1", "--refine-images", "2",
                 "--rank-images", "4", "--data", str(lspet_dir)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    for mode in ("single", "batch"):
        assert report["pose_forward_ms"][mode] > 0
        assert report["vl4pose_overhead_ms"][mode] > 0
        assert set(report["vl4pose_overhead_ms"][f"{mode}_parts"]) == {"aux_net", "candidates", "expectation", "refinement"}
    for key in ("refine_dp_ms_k5", "refine_bruteforce_ms_k5", "rank_images_per_s", "peak_rss_mb", "egl_backward_ms"):
        assert isinstance(report[key], float) and report[key] > 0, key
    assert report["refine_identical"] is True and report["rank_images"] == 4 and report["rank_errors"] == 0
    step = report["train_step_ms"]
    assert step["fp32"] > 0 and (step["bf16"] is None or step["bf16"] > 0)
    assert report["machine"]["cores"] >= 1 and report["machine"]["torch_threads"] == 1


def test_bench_table_is_readable(lspet_dir, capsys):
    main(["bench", "--preset", "tiny", "--repeats", "1", "--refine-images", "2", "--rank-images", "2",
          "--data", str(lspet_dir)])
    text = capsys.readouterr().out
    assert "VL4Pose overhead" in text and re.search(r"DP and brute force identical\s+True", text)
