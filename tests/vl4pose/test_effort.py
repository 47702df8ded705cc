"""The simulated annotator: the click loop on hand-made poses (stub resolvers) and one real run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vl4pose.effort.annotator import (EffortTally, candidate_reach, format_effort, image_effort, keypoint_errors,
                                      simulate_clicks)

REPO = Path(__file__).resolve().parents[2]
STARTER = REPO / "models" / "lsp14-starter"

K = 5
GT = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [30.0, 0.0], [40.0, 0.0]])
ALL = np.ones(K, dtype=bool)


def shifted(offsets: dict[int, float]) -> np.ndarray:
    """GT with keypoint i moved ``offsets[i]`` pixels down."""
    pose = GT.copy()
    for i, dy in offsets.items():
        pose[i, 1] += dy
    return pose


def chain_resolver(start: np.ndarray):
    """A stub re-solve that puts every neighbour (i + 1) of a clicked keypoint i at the truth."""
    def resolve(clamped):
        pose = start.copy()
        for i, xy in clamped.items():
            pose[i] = xy
            if i + 1 < K:
                pose[i + 1] = GT[i + 1]
        return pose, np.ones(K, dtype=bool)
    return resolve


def test_interactive_resolve_that_fixes_neighbours_takes_fewer_clicks():
    start = shifted({i: 50.0 for i in range(K)})
    one_by_one = simulate_clicks(start, ALL, GT, ALL, threshold=5.0)
    interactive = simulate_clicks(start, ALL, GT, ALL, 5.0, chain_resolver(start))
    assert len(one_by_one.clicks) == K
    assert interactive.clicks == [0, 2, 4]  # every click fixes the next keypoint
    assert interactive.fixed == [[1], [3], []] and interactive.broken == [[], [], []]
    traces = image_effort(start, start, ALL, GT, ALL, 5.0, chain_resolver(start))
    assert {m: len(t.clicks) for m, t in traces.items()} == {"raw": 5, "refined": 5, "scratch": 5, "interactive": 3}


def test_worst_keypoint_is_clicked_first():
    start = shifted({1: 20.0, 3: 60.0, 4: 30.0})
    assert simulate_clicks(start, ALL, GT, ALL, 5.0).clicks == [3, 4, 1]


def test_tolerance_edge_counts_as_correct():
    assert simulate_clicks(shifted({2: 5.0}), ALL, GT, ALL, threshold=5.0).clicks == []
    assert simulate_clicks(shifted({2: 5.0 + 1e-6}), ALL, GT, ALL, threshold=5.0).clicks == [2]


def test_unlabelled_keypoints_are_ignored():
    labelled = np.array([True, True, False, True, False])
    gt = GT.copy()
    gt[~labelled] = np.nan  # no ground truth there
    start = shifted({2: 500.0, 4: 500.0, 0: 9.0})
    assert simulate_clicks(start, ALL, gt, labelled, 5.0).clicks == [0]
    errors = keypoint_errors(start, ALL, gt, labelled)
    assert np.isnan(errors[~labelled]).all() and np.isfinite(errors[labelled]).all()
    assert len(image_effort(start, start, ALL, gt, labelled, 5.0, None)["scratch"].clicks) == 3


def test_an_unserved_keypoint_takes_a_click_even_when_its_position_is_right():
    served = np.array([True, True, False, True, True])
    assert simulate_clicks(GT.copy(), served, GT, ALL, 5.0).clicks == [2]


def test_the_annotator_sees_what_accepting_the_ml_backends_suggestions_leaves():
    """The ML backend suggests every label of the draft, placed by the re-solve or not: a draft keypoint the re-solve
    does not place still moves; a keypoint first shown by a re-solve keeps its place when a later re-solve does not
    place it (a stale place, here the right one)."""
    served = np.array([True, True, True, False, False])
    start = shifted({0: 50.0, 1: 50.0, 2: 50.0})

    def resolve(clamped):
        first = len(clamped) == 1
        pose = shifted({0: 60.0} if first else {4: 50.0})
        return pose, np.array([False, False, False, False, first])  # 4 placed by the first re-solve only

    trace = simulate_clicks(start, served, GT, ALL, 5.0, resolve)
    # click 3 (not shown: the worst); the re-solve moves the draft's 0-2 though it places none (1 and 2 right, 0
    # not) and shows 4 at the truth; click 0; the second re-solve places nothing: 0-2 move again, 4 stays right
    assert trace.clicks == [3, 0]
    assert trace.fixed == [[1, 2, 4], []] and trace.broken == [[], []]


def test_clicks_are_bounded_by_the_labelled_keypoints_even_when_every_resolve_breaks_the_rest():
    def spoiler(clamped):  # moves every unclicked keypoint far away, even correct ones
        pose = GT + 100.0
        for i, xy in clamped.items():
            pose[i] = xy
        return pose, np.ones(K, dtype=bool)

    start = shifted({0: 50.0})  # only one keypoint wrong at the start
    trace = simulate_clicks(start, ALL, GT, ALL, 5.0, spoiler)
    assert len(trace.clicks) == K and sorted(trace.clicks) == list(range(K))
    assert trace.broken[0] == [1, 2, 3, 4]


def test_candidate_reach():
    candidates = np.zeros((K, 2, 2))
    candidates[:, 0] = GT + [0.0, 30.0]
    candidates[:, 1] = GT + [0.0, 3.0]
    valid = np.ones((K, 2), dtype=bool)
    valid[2, 1] = False
    assert candidate_reach(candidates, valid, GT, 5.0).tolist() == [True, True, False, True, True]


def test_tally_summary_and_table():
    start = shifted({i: 50.0 for i in range(K)})
    tally = EffortTally([f"k{i}" for i in range(K)])
    tally.add(image_effort(start, start, ALL, GT, ALL, 5.0, chain_resolver(start)), np.ones(K, dtype=bool))
    tally.add(image_effort(GT, GT, ALL, GT, ALL, 5.0, chain_resolver(GT)))
    summary = tally.summary()
    assert summary["refined"]["mean_clicks"] == 2.5 and summary["interactive"]["mean_clicks"] == 1.5
    assert summary["refined"]["zero_click_share"] == 0.5
    assert summary["interactive_saving_pct"] == pytest.approx(40.0)
    assert summary["per_keypoint"]["k1"] == {"raw": 1, "refined": 1, "interactive": 0, "scratch": 2,
                                             "fixed_by_resolve": 1, "broken_by_resolve": 0, "wrong_with_candidate": 1}
    report = {"images": 2, "scored_images": 2, "skipped_no_torso": 0, "unreadable": 0, "box": "auto",
              "labelled_per_image": 5.0, "unserved_per_image": 0.0, "tolerances": {"0.2": summary}}
    assert "40.0%" in format_effort(report)


def test_calibration_override_is_a_diagnosis_only_when_asked():
    from types import SimpleNamespace

    from vl4pose.effort.run import override_calibration
    from vl4pose.postprocess import Calibration

    served = Calibration(temperature=0.1, max_candidates=5)
    pipeline = SimpleNamespace(calibration=served)
    assert override_calibration(pipeline).calibration is served
    changed = override_calibration(pipeline, max_candidates=20).calibration
    assert (changed.max_candidates, changed.temperature) == (20, 0.1)


def test_cli_on_lspet_test_images_with_the_starter(lspet_dir, tmp_path, capsys):
    """Five LSPET test images through ``vl4pose effort``; mode (b) must agree with the PCK code's verdicts."""
    from vl4pose.cli import main
    from vl4pose.data import load_samples
    from vl4pose.metrics import correct_keypoints, torso_size
    from vl4pose.predictor import Predictor

    out = tmp_path / "effort.json"
    code = main(["effort", "--dataset", "lspet", "--data", str(lspet_dir), "--split", "test", "--checkpoint",
                 str(STARTER), "--limit", "5", "--out", str(out), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert saved["complete"] and printed["tolerances"] == saved["tolerances"]
    assert saved["images"] == 5 and saved["scored_images"] + saved["skipped_no_torso"] == 5
    assert saved["scored_images"] == len(saved["per_image"]) >= 1
    assert saved["clicks"] == {"reframe": "always", "margin": 0.0, "swap_radius": 0.1}  # the ML backend's

    samples = load_samples("lspet", lspet_dir, "test")[:5]
    predictor = Predictor(STARTER)
    predictions = predictor.predict_batch([s.image for s in samples])
    by_id = {row["id"]: row for row in saved["per_image"]}
    for sample, prediction in zip(samples, predictions):
        labelled = sample.labelled
        torso = torso_size(sample.keypoints[None], labelled[None], predictor.skeleton)
        if sample.sample_id not in by_id:
            assert not np.isfinite(torso).any()
            continue
        row = by_id[sample.sample_id]
        for tolerance in ("0.2", "0.1"):
            correct = correct_keypoints(prediction.refined[None], sample.keypoints[None], labelled[None], torso,
                                        float(tolerance))[0]
            wrong = labelled & ((correct == 0) | ~prediction.placed)
            assert sorted(row[tolerance]["refined"]) == sorted(np.flatnonzero(wrong).tolist())
            assert len(row[tolerance]["interactive"]) <= row["labelled"]
    for summary in saved["tolerances"].values():
        for mode in ("raw", "refined", "interactive"):
            assert summary[mode]["mean_clicks"] <= summary["scratch"]["mean_clicks"]
