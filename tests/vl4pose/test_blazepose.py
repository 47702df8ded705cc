"""The opt-in BlazePose second opinion: the mirror rule, the pipeline's use of a hint, and the real worker."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace

import numpy as np
import pytest

from vl4pose.blazepose import HINT_BONUS, DEFAULT_PYTHON, BlazePose, PersonHint, mirror_is_closer, with_landmarks
from vl4pose.crop import CropWindow
from vl4pose.data import load_samples
from vl4pose.errors import ConfigError
from vl4pose.interactive import resolve_clicked
from vl4pose.pipeline_config import PredictorConfig
from vl4pose.postprocess import find_candidates
from vl4pose.predictor import Predictor
from vl4pose.skeletons import get_skeleton

LSP14 = get_skeleton("lsp14")
PERM = LSP14.flip_permutation()


def _pose(rng: np.random.Generator) -> np.ndarray:
    """(14, 2) a pose whose left and right keypoints lie well apart."""
    pose = rng.uniform(0, 100, size=(14, 2))
    for left, right in LSP14.flip_pairs:
        pose[right, 0] = pose[left, 0] + 40.0
    return pose


def test_the_mirror_wins_only_when_it_is_much_closer():
    pose = _pose(np.random.default_rng(0))
    assert mirror_is_closer(pose, pose[PERM], PERM)
    assert not mirror_is_closer(pose, pose, PERM)
    halfway = (pose + pose[PERM]) / 2.0  # equally far from both: not "much closer"
    assert not mirror_is_closer(pose, halfway, PERM)
    hint = np.full_like(pose, np.nan)
    hint[:3] = pose[PERM][:3]  # three shared keypoints are too few to decide
    assert not mirror_is_closer(pose, hint, PERM)
    hint[:4] = pose[PERM][:4]
    assert mirror_is_closer(pose, hint, PERM)


class FakeBlazePose:
    """Returns a fixed hint and records the images it saw."""

    def __init__(self, hint: PersonHint | None) -> None:
        self.hint, self.calls = hint, 0

    def __call__(self, image: np.ndarray) -> PersonHint | None:
        self.calls += 1
        return self.hint


@pytest.fixture(autouse=True)
def any_interpreter(monkeypatch):
    """The pipeline checks that BlazePose's interpreter exists when it is built; the fakes below never run it."""
    monkeypatch.setenv("VL4POSE_BLAZEPOSE_PYTHON", sys.executable)


def _with_hint(checkpoint, hint: PersonHint | None, **config) -> tuple[Predictor, FakeBlazePose]:
    predictor = Predictor(checkpoint, PredictorConfig(blazepose=True, **config))
    predictor._blazepose = FakeBlazePose(hint)  # type: ignore[assignment]
    return predictor, predictor._blazepose  # type: ignore[return-value]


def test_the_hints_box_is_the_first_person_finding_window(tiny_checkpoint, lspet_dir):
    image = lspet_dir / "images" / "im00001.jpg"
    box = np.array([40.0, 30.0, 120.0, 200.0])
    predictor, fake = _with_hint(tiny_checkpoint, PersonHint(box, np.full((14, 2), np.nan)), box_passes=1)
    seen: list[CropWindow] = []
    forward = predictor._forward

    def recording(arrays, windows, flip):  # noqa: ANN001, ANN202
        if not flip:
            seen.extend(windows)
        return forward(arrays, windows, flip)

    predictor._forward = recording  # type: ignore[method-assign]
    predictor.predict(image)
    assert fake.calls == 1 and len(seen) == 1
    assert seen[0].centre == pytest.approx((80.0, 115.0))
    assert seen[0].side == pytest.approx(170.0 * predictor.config.find_padding)


def test_a_mirrored_hint_exchanges_left_and_right(tiny_checkpoint, lspet_dir):
    sample = load_samples("lspet", lspet_dir, "test")[0]
    box = np.array([*np.nanmin(sample.keypoints, axis=0), *np.nanmax(sample.keypoints, axis=0)])
    plain = Predictor(tiny_checkpoint).analyse(sample.image, box)
    pose = Predictor(tiny_checkpoint).resolve(plain).refined
    mirrored, _ = _with_hint(tiny_checkpoint, PersonHint(box, pose[PERM] + 0.5))
    same, _ = _with_hint(tiny_checkpoint, PersonHint(box, pose + 0.5))
    np.testing.assert_array_equal(mirrored.analyse(sample.image, box).output.heatmaps,
                                  plain.output.heatmaps[:, PERM])
    np.testing.assert_array_equal(same.analyse(sample.image, box).output.heatmaps, plain.output.heatmaps)


def test_no_hint_is_the_plain_path(tiny_checkpoint, lspet_dir):
    image = lspet_dir / "images" / "im00001.jpg"
    predictor, fake = _with_hint(tiny_checkpoint, None)
    np.testing.assert_array_equal(predictor.predict(image).refined, Predictor(tiny_checkpoint).predict(image).refined)
    assert fake.calls == 1


def test_a_landmark_inside_the_heatmap_joins_its_keypoints_candidates_above_the_strongest_peak():
    heatmaps = np.random.default_rng(0).uniform(0, 1, size=(1, 3, 8, 8)).astype(np.float32)
    candidates = find_candidates(heatmaps, 4)
    landmarks = np.array([[[2.5, 3.25], [np.nan, np.nan], [8.5, 1.0]]])  # inside, none, outside the 8 x 8 heatmap
    joined = with_landmarks(candidates, landmarks, 8.0)
    assert joined.xy.shape == (1, 3, 5, 2)
    np.testing.assert_array_equal(joined.xy[..., :4, :], candidates.xy)
    np.testing.assert_array_equal(joined.valid[0, :, 4], [True, False, False])
    np.testing.assert_array_equal(joined.xy[0, 0, 4], [2.5, 3.25])
    assert joined.value[0, 0, 4] == pytest.approx(candidates.value[0, 0, 0] + HINT_BONUS)
    assert np.isneginf(joined.value[0, 1:, 4]).all()


def _landmarks_near_our_pose(checkpoint, image) -> tuple[Predictor, np.ndarray]:
    """A predictor whose fake BlazePose places every keypoint 1.3 px from our own refined pose (not a heatmap peak),
    and those (14, 2) landmarks."""
    pose = Predictor(checkpoint).predict(image).refined
    landmarks = pose + 1.3
    box = np.array([*landmarks.min(axis=0), *landmarks.max(axis=0)])
    predictor, _ = _with_hint(checkpoint, PersonHint(box, landmarks))
    return predictor, landmarks


def _on_landmark(pose: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    return np.linalg.norm(pose - landmarks, axis=1) < 1e-3


def test_landmarks_move_the_served_pose_never_the_likelihood(tiny_checkpoint, lspet_dir):
    image = lspet_dir / "images" / "im00001.jpg"
    predictor, landmarks = _landmarks_near_our_pose(tiny_checkpoint, image)
    analysis = predictor.analyse(image)
    np.testing.assert_array_equal(analysis.landmarks, landmarks)
    without = predictor.resolve(replace(analysis, landmarks=None))
    served = predictor.resolve(analysis)
    assert served.log_likelihood == without.log_likelihood and served.score == without.score
    np.testing.assert_array_equal(served.raw, without.raw)
    assert _on_landmark(served.refined, landmarks).any() and not _on_landmark(without.refined, landmarks).any()
    clicked = predictor.resolve(analysis, {0: (5.0, 7.0)})  # a click outweighs the landmark
    np.testing.assert_allclose(clicked.refined[0], [5.0, 7.0], atol=1e-6)


def test_the_interactive_re_solve_offers_the_landmarks_too(tiny_checkpoint, lspet_dir):
    image = lspet_dir / "images" / "im00001.jpg"
    predictor, landmarks = _landmarks_near_our_pose(tiny_checkpoint, image)
    analysis = predictor.analyse(image)
    click = {0: tuple(landmarks[0] + 4.0)}
    solved = resolve_clicked(predictor, analysis, click, reanalyse=lambda box: predictor.analyse(image, box))
    plain = resolve_clicked(predictor, replace(analysis, landmarks=None), click,
                            reanalyse=lambda box: replace(predictor.analyse(image, box), landmarks=None))
    unclicked = np.arange(14) != 0
    assert _on_landmark(solved.refined, landmarks)[unclicked].any()
    assert not _on_landmark(plain.refined, landmarks)[unclicked].any()
    np.testing.assert_allclose(solved.refined[0], click[0], atol=1e-6)


def test_a_missing_interpreter_says_how_to_install_it(tmp_path):
    with pytest.raises(ConfigError, match="setup.sh --blazepose"):
        BlazePose(LSP14, python=tmp_path / "nothing" / "python")


def _fake_interpreter(folder, body: str):
    """An executable shell script standing in for the worker's Python."""
    script = folder / "python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


def test_a_failing_worker_costs_one_hint_not_the_batch(tmp_path, caplog):
    finder = BlazePose(LSP14, python=_fake_interpreter(tmp_path, "exit 3"), timeout_s=10)
    with caplog.at_level(logging.WARNING, logger="vl4pose.blazepose"):
        assert finder(np.zeros((20, 30, 3), np.uint8)) is None
    assert "BlazePose worker failed" in caplog.text
    finder.close()


@pytest.mark.skipif(not DEFAULT_PYTHON.is_file(), reason=f"{DEFAULT_PYTHON} not found: `bash scripts/setup.sh --blazepose`")
def test_the_real_worker_finds_the_annotated_person(lspet_dir):
    finder = BlazePose(LSP14, python=DEFAULT_PYTHON)
    try:
        errors = []
        for sample in load_samples("lspet", lspet_dir, "val")[:5]:
            image = sample.load_image()
            hint = finder(image)
            assert hint is not None
            height, width = image.shape[:2]
            assert hint.box.shape == (4,) and -0.5 * width < hint.box[0] < hint.box[2] < 1.5 * width
            assert np.isnan(hint.keypoints[12:]).all() and np.isfinite(hint.keypoints[:12]).all()  # no neck, head top
            size = np.nanmax(sample.keypoints, axis=0) - np.nanmin(sample.keypoints, axis=0)
            errors.append(np.nanmedian(np.linalg.norm(hint.keypoints[:12] - sample.keypoints[:12], axis=1)) / size.max())
        assert np.median(errors) < 0.15, errors  # its landmarks lie on the annotated person
        assert finder(np.full((64, 64, 3), 255, np.uint8)) is None  # a blank image: no one
    finally:
        finder.close()


def test_a_missing_interpreter_is_refused_when_the_predictor_is_built(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("VL4POSE_BLAZEPOSE_PYTHON", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="setup.sh --blazepose"):
        Predictor(tiny_checkpoint, PredictorConfig(blazepose=True))


def test_a_worker_that_stops_reading_misses_its_deadline_not_ours(tmp_path, caplog):
    hangs = _fake_interpreter(tmp_path, "exec sleep 60")  # never reads its stdin, never replies
    finder = BlazePose(LSP14, python=hangs, timeout_s=1)
    with caplog.at_level(logging.WARNING, logger="vl4pose.blazepose"):
        assert finder(np.zeros((300, 300, 3), np.uint8)) is None  # 270 kB: more than a pipe's buffer
    assert "within the deadline" in caplog.text
    finder.close()
