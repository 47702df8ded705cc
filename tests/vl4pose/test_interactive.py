"""The interactive re-solve's uses of a click: swapped left/right pairs and re-framing the final crop."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vl4pose.crop import CropWindow
from vl4pose.errors import ConfigError
from vl4pose.interactive import ClickConfig, reframe_box, resolve_clicked, swap_heatmaps, swapped_pairs
from vl4pose.pipeline import Analysis, NetworkArrays
from vl4pose.prediction import PosePrediction
from vl4pose.skeletons import get_skeleton

STARTER = Path(__file__).resolve().parents[2] / "models" / "lsp14-starter"
LSP = get_skeleton("lsp14")
LEFT_WRIST, RIGHT_WRIST, NECK = LSP.index("left_wrist"), LSP.index("right_wrist"), LSP.index("neck")


def analysis_of(side: float = 100.0, channels: int = 14) -> Analysis:
    """An analysed image whose crop is the square (0, 0)-(side, side); heatmap channel k is filled with k."""
    heatmaps = np.broadcast_to(np.arange(channels, dtype=np.float32)[None, :, None, None], (1, channels, 4, 4))
    output = NetworkArrays(heatmaps.copy(), np.zeros((1, 13), np.float32), np.zeros((1, 13), np.float32))
    return Analysis((200, 200), CropWindow((side / 2, side / 2), side), output)


def prediction_of(refined: np.ndarray, placed: np.ndarray | None = None) -> PosePrediction:
    k = len(refined)
    placed = np.ones(k, dtype=bool) if placed is None else placed
    return PosePrediction((200, 200), np.array([0.0, 0.0, 100.0, 100.0]), refined, refined, np.ones(k),
                          np.ones(k), placed, np.zeros(k, dtype=bool), -10.0, 0.5, LSP.keypoints)


def pose_in_crop() -> np.ndarray:
    """(14, 2) a pose inside the crop: x from 20 to 72, y from 30 to 56."""
    return np.stack([20.0 + 4 * np.arange(14), 30.0 + 2 * np.arange(14)], axis=1)


@pytest.mark.parametrize("config", [dict(reframe="sometimes"), dict(margin=0.5), dict(margin=-0.1),
                                    dict(swap_radius=-0.1), dict(swap_radius=1.5)])
def test_bad_click_settings_say_what_is_allowed(config):
    with pytest.raises(ConfigError, match="must be|is not one of"):
        ClickConfig(**config)


def test_the_crop_is_reframed_on_every_click_or_when_a_click_leaves_it():
    analysis = analysis_of()
    pose = pose_in_crop()
    outside_rule = ClickConfig(reframe="outside")
    assert reframe_box(analysis, prediction_of(pose), []) is None  # no click
    assert reframe_box(analysis, prediction_of(pose), [NECK]) == pytest.approx(  # the default: every click
        [pose[:, 0].min(), pose[:, 1].min(), pose[:, 0].max(), pose[:, 1].max()])
    assert reframe_box(analysis, prediction_of(pose), [NECK], outside_rule) is None  # a click inside the crop
    outside = pose.copy()
    outside[NECK] = (150.0, 40.0)  # resolve() puts a clicked keypoint at its click
    box = reframe_box(analysis, prediction_of(outside), [NECK], outside_rule)
    assert box == pytest.approx([20.0, 30.0, 150.0, outside[:, 1].max()])  # the click and the re-solved pose
    assert reframe_box(analysis, prediction_of(outside), [NECK], ClickConfig(reframe="never")) is None
    near = pose.copy()
    near[NECK] = (95.0, 40.0)
    assert reframe_box(analysis, prediction_of(near), [NECK], outside_rule) is None
    assert reframe_box(analysis, prediction_of(near), [NECK], ClickConfig(reframe="outside", margin=0.1)) is not None


def test_keypoints_the_model_does_not_place_do_not_stretch_the_new_window():
    outside = pose_in_crop()
    outside[NECK] = (150.0, 40.0)
    outside[0] = (-500.0, -500.0)
    placed = np.ones(14, dtype=bool)
    placed[0] = False
    box = reframe_box(analysis_of(), prediction_of(outside, placed), [NECK], ClickConfig(reframe="outside"))
    assert box[0] > 0 and box[1] > 0


def test_a_click_on_the_twin_suggestion_swaps_the_pair():
    analysis = analysis_of()
    served = pose_in_crop()
    served[LEFT_WRIST], served[RIGHT_WRIST] = (10.0, 10.0), (80.0, 80.0)
    flip = LSP.flip_permutation()
    on_twin = {LEFT_WRIST: np.array([81.0, 80.0])}
    assert swapped_pairs(analysis, prediction_of(served), on_twin, flip, 0.05) == [(LEFT_WRIST, RIGHT_WRIST)]
    assert swapped_pairs(analysis, prediction_of(served), on_twin, flip, 0.0) == []  # off
    assert swapped_pairs(analysis, prediction_of(served), {**on_twin, RIGHT_WRIST: np.array([10.0, 10.0])},
                         flip, 0.05) == []  # the annotator placed both
    assert swapped_pairs(analysis, prediction_of(served), {LEFT_WRIST: np.array([90.0, 80.0])}, flip, 0.05) == []
    unplaced = np.ones(14, dtype=bool)
    unplaced[RIGHT_WRIST] = False
    assert swapped_pairs(analysis, prediction_of(served, unplaced), on_twin, flip, 0.05) == []
    near_own = served.copy()
    near_own[LEFT_WRIST] = (81.5, 80.0)  # the click is nearer the keypoint's own suggestion: a correction, no swap
    assert swapped_pairs(analysis, prediction_of(near_own), on_twin, flip, 0.05) == []
    assert swapped_pairs(analysis, prediction_of(served), {NECK: np.array([80.0, 80.0])}, flip, 0.5) == []


def test_swapping_exchanges_heatmap_channels_of_a_copy():
    analysis = analysis_of()
    swapped = swap_heatmaps(analysis, [(LEFT_WRIST, RIGHT_WRIST)])
    channel = swapped.output.heatmaps[0, :, 0, 0]
    assert channel[LEFT_WRIST] == RIGHT_WRIST and channel[RIGHT_WRIST] == LEFT_WRIST and channel[NECK] == NECK
    assert analysis.output.heatmaps[0, LEFT_WRIST, 0, 0] == LEFT_WRIST  # the cached analysis is untouched
    assert swap_heatmaps(analysis, []) is analysis
    assert swapped.output.single is None
    multi = replace(analysis, output=replace(analysis.output, single=analysis.output.heatmaps + 100.0))
    single = swap_heatmaps(multi, [(LEFT_WRIST, RIGHT_WRIST)]).output.single[0, :, 0, 0]  # the likelihood's too
    assert single[LEFT_WRIST] == RIGHT_WRIST + 100.0 and single[NECK] == NECK + 100.0


def test_a_click_outside_the_crop_reanalyses_the_image_around_it(lspet_dir):
    """On a real image with the shipped starter, under the ``outside`` rule: a click inside the automatic crop is a
    plain clamped re-solve; one outside it runs the final pass again on a window that holds the click, which stays
    where it was put. The default rule re-frames the inside click too."""
    from vl4pose.predictor import Predictor

    predictor = Predictor(STARTER)
    image = lspet_dir / "images" / "im00003.jpg"
    analysis = predictor.analyse(image)
    calls = []

    def reanalyse(box):
        calls.append(box)
        return predictor.analyse(image, box)

    x0, y0, x1, y1 = analysis.window.box()
    inside = {"neck": ((x0 + x1) / 2, (y0 + y1) / 2)}
    outside_rule = ClickConfig(reframe="outside")
    got = resolve_clicked(predictor, analysis, inside, outside_rule, reanalyse)
    assert calls == [] and np.allclose(got.refined, predictor.resolve(analysis, inside).refined)
    got = resolve_clicked(predictor, analysis, inside, ClickConfig(), reanalyse)
    assert len(calls) == 1 and np.allclose(got.refined[NECK], inside["neck"], atol=1e-3)  # re-framed, still clamped
    calls.clear()

    width, height = analysis.image_size
    assert x1 < width - 2 or x0 > 2, "the automatic crop spans the image's width: pick another image"
    outside = {"left_ankle": (x1 + 1.0 if x1 < width - 2 else x0 - 1.0, (y0 + y1) / 2)}
    got = resolve_clicked(predictor, analysis, outside, outside_rule, reanalyse)
    assert len(calls) == 1
    box = calls[0]
    assert box[0] - 1e-6 <= outside["left_ankle"][0] <= box[2] + 1e-6  # the click spans the box (to rounding)
    assert np.allclose(got.refined[LSP.index("left_ankle")], outside["left_ankle"], atol=1e-3)
    assert resolve_clicked(predictor, analysis, outside, ClickConfig(), None).box == pytest.approx(
        analysis.window.box())  # no re-framing without reanalyse (an annotator's own box)


def test_both_crops_resolve_like_one_when_they_are_the_same_crop(lspet_dir):
    """Candidates of two crops, mapped into one: with the same crop twice (every candidate doubled) the joint
    choice is the plain clamped re-solve's."""
    from vl4pose.interactive import resolve_both
    from vl4pose.predictor import Predictor

    predictor = Predictor(STARTER)
    analysis = predictor.analyse(lspet_dir / "images" / "im00007.jpg")
    x0, y0, x1, y1 = analysis.window.box()
    clicks = {LSP.index("right_knee"): np.array([x0 + 0.3 * (x1 - x0), y0 + 0.7 * (y1 - y0)])}
    plain = predictor.resolve(analysis, clicks)
    both = resolve_both(predictor, analysis, analysis, clicks)
    assert np.allclose(both.refined, plain.refined, atol=1e-6)
    assert np.array_equal(both.placed, plain.placed)
    assert both.score == plain.score
