"""Failure detection on the product path: the AUROC, its bootstrap interval, and ``vl4pose failures``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vl4pose.cli import main
from vl4pose.failures.report import SERVED, FeaturePredictor, bootstrap_aurocs, product_path_values
from vl4pose.metrics import auroc, auroc_rows

REPO = Path(__file__).resolve().parents[2]
STARTER = REPO / "models" / "lsp14-starter"


def tie_loop_auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """The project's former hand-written AUROC (a Python loop over runs of tied scores), kept as the reference."""
    scores, positives = np.asarray(scores, dtype=float), np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks, ordered, i = np.empty(len(scores)), scores[order], 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and ordered[j + 1] == ordered[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def test_auroc_equals_the_former_tie_loop_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(2, 60))
        scores = rng.integers(0, 4, n).astype(float)  # many ties
        if rng.random() < 0.3:
            scores = scores + rng.random(n)  # no ties
        positives = rng.random(n) < 0.4
        expected = tie_loop_auroc(scores, positives)
        got = auroc(scores, positives)
        assert (np.isnan(expected) and np.isnan(got)) or got == pytest.approx(expected, abs=1e-12)
    assert auroc(np.zeros(10), np.arange(10) < 4) == 0.5  # all tied: chance
    assert auroc([1.0, 2.0, 3.0], [False, True, True]) == 1.0
    assert auroc([3.0, 2.0, 1.0], [False, True, True]) == 0.0
    assert np.isnan(auroc([1.0, 2.0], [True, True]))


def test_auroc_rows_is_auroc_per_row():
    rng = np.random.default_rng(0)
    scores, positives = rng.integers(0, 5, (7, 30)).astype(float), rng.random((7, 30)) < 0.5
    assert auroc_rows(scores, positives) == pytest.approx([auroc(s, p) for s, p in zip(scores, positives)])


def _synthetic(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    failed = rng.random(n) < 0.4
    return {"good": failed + rng.normal(0, 0.8, n), "weak": failed + rng.normal(0, 2.5, n),
            "none": np.zeros(n)}, failed


def test_bootstrap_interval_contains_the_point_estimate_and_shrinks_with_n():
    small = bootstrap_aurocs(*_synthetic(80), resamples=400)
    large = bootstrap_aurocs(*_synthetic(2000), resamples=400)
    for result in (small, large):
        for name in ("good", "weak"):
            assert result[name]["low"] <= result[name]["auroc"] <= result[name]["high"]
        assert result["none"]["auroc"] == result["none"]["low"] == result["none"]["high"] == 0.5
        assert result["good"]["diff_to_best"] == result["good"]["diff_low"] == result["good"]["diff_high"] == 0.0
        assert result["weak"]["diff_low"] > 0.0  # the paired interval separates the two scores
    width = {name: (r["good"]["high"] - r["good"]["low"]) for name, r in (("small", small), ("large", large))}
    assert width["large"] < 0.5 * width["small"]


def test_bootstrap_is_deterministic_with_its_seed():
    scores, failed = _synthetic(150)
    first = bootstrap_aurocs(scores, failed, resamples=200, seed=5)
    assert bootstrap_aurocs(scores, failed, resamples=200, seed=5) == first
    other = bootstrap_aurocs(scores, failed, resamples=200, seed=6)
    assert other["good"]["auroc"] == first["good"]["auroc"]
    assert (other["good"]["low"], other["good"]["high"]) != (first["good"]["low"], first["good"]["high"])


def test_product_path_is_the_predictors_own(lspet_dir):
    """The feature-keeping Predictor gives the plain Predictor's poses and scores (same batches: identical), and VL4Pose's strategy score
    read from its final pass orders the images like the served score."""
    from vl4pose.data import load_samples
    from vl4pose.predictor import Predictor
    from vl4pose.strategies import get_strategies

    samples = load_samples("lspet", str(lspet_dir), "test")[:4]
    plain = Predictor(STARTER).predict_batch([s.image for s in samples])
    kept, values = product_path_values(FeaturePredictor(STARTER), samples, get_strategies(["vl4pose", "random"]), 4)
    for a, b in zip(plain, kept):
        assert np.array_equal(a.raw, b.raw) and a.score == b.score
    assert values["vl4pose"].shape == (4,) and not values["random"].any()
    assert np.array_equal(np.argsort(values["vl4pose"]), np.argsort([-p.score for p in kept]))


def test_failures_command_on_a_checkpoint_and_on_a_run_folder(lspet_dir, tmp_path, capsys):
    out = tmp_path / "one.json"
    assert main(["--threads", "1", "failures", "--checkpoint", str(STARTER), "--data", str(lspet_dir),
                 "--limit", "5", "--resamples", "50", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| vl4pose |" in table and f"| {SERVED} |" in table
    report = json.loads(out.read_text())
    assert report["images"] == 5 and report["box"] == "auto" and report["predictor"]["auto_box"] is True
    assert set(report["failure_auroc"]) == {"random", "multipeak_entropy", "vl4pose", "vl4pose_edges",
                                            "vl4pose_entropy", SERVED}

    run = tmp_path / "run"  # a finished simulate folder whose models are the starter (links), read only
    for folder in ("seed0/round0", "seed0/vl4pose/round2"):
        (run / folder).mkdir(parents=True)
        (run / folder / "best").symlink_to(STARTER)
    records = [{"strategy": "vl4pose", "seed": 0, "round": r, "checkpoint": c} for r, c in
               ((0, "seed0/round0/best"), (1, "seed0/vl4pose/round1/best"), (2, "seed0/vl4pose/round2/best"))]
    data = {"dataset": "lspet", "data": str(lspet_dir), "split_file": None, "splits": ["pool", "val", "test"],
            "limits": [None, None, 3]}
    (run / "results.json").write_text(json.dumps({"records": records, "data": data}))
    before = sorted(p.name for p in run.rglob("*"))
    assert main(["--threads", "1", "failures", "--run", str(run), "--strategies", "vl4pose", "--resamples", "20",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result["models"]["0"]) == ["round0", "vl4pose"]
    assert result["models"]["0"]["vl4pose"]["checkpoint"].endswith("round2/best")
    assert result["models"]["0"]["round0"]["images"] == 3
    assert sorted(p.name for p in run.rglob("*")) == before
    assert main(["failures", "--run", str(run), "--out", str(run / "x.json")]) == 2  # never written into a run
