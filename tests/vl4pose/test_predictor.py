"""Checkpoint round trip, the Predictor's inputs and outputs, and the train/evaluate/predict CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from vl4pose.checkpoint import Calibration, load_checkpoint, save_checkpoint
from vl4pose.cli import main
from vl4pose.errors import CheckpointError, ImageError
from vl4pose.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    return Predictor(tiny_checkpoint)


@pytest.fixture(scope="module")
def image_path(lspet_dir):
    return lspet_dir / "images" / "im00001.jpg"


def test_checkpoint_folder_is_self_describing(tiny_checkpoint):
    names = {p.name for p in tiny_checkpoint.path.iterdir()}
    assert {"weights.pt", "config.json", "skeleton.json", "calibration.json", "metrics.json", "versions.json"} <= names
    calibration = json.loads((tiny_checkpoint.path / "calibration.json").read_text())
    assert calibration["temperature"] > 0 and len(calibration["reference"]) > 0
    assert json.loads((tiny_checkpoint.path / "versions.json").read_text())["torch"] == torch.__version__


def test_save_load_gives_identical_outputs(tiny_checkpoint, tmp_path, image_path):
    copy = save_checkpoint(tmp_path / "copy", tiny_checkpoint)
    a = Predictor(tiny_checkpoint).predict(image_path)
    b = Predictor(load_checkpoint(copy)).predict(image_path)
    np.testing.assert_array_equal(a.refined, b.refined)
    assert a.log_likelihood == b.log_likelihood and a.score == b.score


def test_incomplete_checkpoint_names_what_is_missing(tiny_checkpoint, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint.path, broken)
    (broken / "weights.pt").unlink()
    with pytest.raises(CheckpointError, match=r"missing \['weights.pt'\]"):
        load_checkpoint(broken)
    shutil.copy(tiny_checkpoint.path / "weights.pt", broken / "weights.pt")
    (broken / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        load_checkpoint(broken)
    (broken / "config.json").write_text((tiny_checkpoint.path / "config.json").read_text())
    (broken / "weights.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_checkpoint(broken)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")


def test_path_bytes_and_array_agree(predictor, image_path):
    from vl4pose.data.sample import load_image

    by_path = predictor.predict(image_path)
    by_bytes = predictor.predict(image_path.read_bytes())
    by_array = predictor.predict(load_image(image_path))
    for other in (by_bytes, by_array):
        np.testing.assert_allclose(other.refined, by_path.refined, atol=1e-4)
    k = predictor.skeleton.num_keypoints
    assert by_path.raw.shape == (k, 2) and by_path.confidence.shape == (k,)
    assert 0.0 < by_path.score < 1.0 and np.isfinite(by_path.log_likelihood)
    assert ((by_path.confidence >= 0) & (by_path.confidence <= 1)).all()


def test_clamped_keypoint_is_kept_exactly(predictor, image_path):
    result = predictor.predict(image_path, clamped={"left_wrist": (40.0, 30.0), 0: (12.5, 80.25)})
    np.testing.assert_allclose(result.refined[predictor.skeleton.index("left_wrist")], [40.0, 30.0], atol=1e-3)
    np.testing.assert_allclose(result.refined[0], [12.5, 80.25], atol=1e-3)
    assert result.placed[0] and not result.moved[0]


def test_batch_keeps_order_and_reports_bad_images(predictor, image_path, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"garbage")
    results = predictor.predict_batch([image_path, corrupt, tmp_path / "missing.jpg", image_path])
    assert isinstance(results[1], ImageError) and "corrupt.jpg" in str(results[1])
    assert isinstance(results[2], ImageError)
    np.testing.assert_allclose(results[0].refined, results[3].refined)
    single = predictor.predict(image_path)
    # batched and single passes round differently, and the log-parabola sub-pixel fit amplifies that on the
    # tiny model's flat heatmaps (0.0206 px seen): a tenth of a pixel is far below what an annotator sees
    np.testing.assert_allclose(results[0].refined, single.refined, atol=0.1)


def test_person_finding_passes_use_the_wider_window_and_the_final_crop_the_box_padding(
        tiny_checkpoint, image_path, monkeypatch):
    import dataclasses

    import vl4pose.pipeline as pipeline
    from vl4pose.predictor import PredictorConfig

    paddings = []

    def recording_window(box, image_size, padding=1.25):
        paddings.append(padding)
        return person_window(box, image_size, padding)

    person_window = pipeline.person_window
    monkeypatch.setattr(pipeline, "person_window", recording_window)
    config = PredictorConfig(box_passes=3, box_tolerance=0.0, find_padding=1.7, box_padding=1.2)
    predictor = Predictor(tiny_checkpoint, config)
    predictor.calibration = dataclasses.replace(predictor.calibration, min_peak=0.0)  # every keypoint placed
    result = predictor.predict(image_path)
    assert paddings == [1.7, 1.7, 1.7, 1.2]  # each pass builds the next finding window, the last box the final crop
    paddings.clear()
    boxed = predictor.predict(image_path, box=result.box)
    assert len(paddings) == 1 and np.isfinite(boxed.refined).all()  # a given box: its one window, no finding pass


def test_person_finding_stops_for_each_image_whose_window_settles(tiny_checkpoint, lspet_dir, monkeypatch):
    import dataclasses

    from vl4pose.errors import ConfigError
    from vl4pose.predictor import PredictorConfig

    images = [lspet_dir / "images" / f"im0000{i}.jpg" for i in (1, 2, 3)]
    batches: list[int] = []

    def counting(self, arrays, windows, flip):
        if not flip:
            batches.append(len(arrays))
        return forward(self, arrays, windows, flip)

    forward = Predictor._forward
    monkeypatch.setattr(Predictor, "_forward", counting)
    runs = {}
    for tolerance in (0.0, 0.05, 100.0):
        predictor = Predictor(tiny_checkpoint, PredictorConfig(box_passes=4, box_tolerance=tolerance, scales=(1.0,)))
        predictor.calibration = dataclasses.replace(predictor.calibration, min_peak=0.0)  # every keypoint placed
        batches.clear()
        runs[tolerance] = (predictor.predict_batch(images), list(batches))
    assert runs[0.0][1] == [3, 3, 3, 3]  # never settled: every pass, every image
    assert runs[100.0][1] == [3]  # every window settles after the whole-image pass: the final crop is its box
    assert runs[0.05][1][0] == 3 and len(runs[0.05][1]) <= 4 and runs[0.05][1] == sorted(runs[0.05][1], reverse=True)
    for bad in ({"box_passes": 0}, {"box_tolerance": -0.1}):
        with pytest.raises(ConfigError, match="at least 1 and box_tolerance .* at least 0, e.g. 6 and 0.05"):
            PredictorConfig(**bad)
    single = Predictor(tiny_checkpoint, PredictorConfig(box_passes=1, scales=(1.0,)))
    single.calibration = predictor.calibration
    for one, settled in zip(single.predict_batch(images), runs[100.0][0]):  # one pass, whichever way it ended
        np.testing.assert_allclose(one.refined, settled.refined, atol=1e-6)


def test_calibrated_score_preserves_order():
    calibration = Calibration(reference=sorted(np.random.default_rng(0).normal(-20, 5, 200).tolist()))
    x = np.linspace(-80, 40, 1000)
    scores = calibration.score(x)
    assert np.all(np.diff(scores) > 0) and scores.min() > 0 and scores.max() < 1
    assert abs(calibration.score(np.array([np.median(calibration.reference)]))[0] - 0.5) < 0.01


def test_cli_predict_and_evaluate_json(tiny_checkpoint, image_path, lspet_dir, capsys):
    assert main(["predict", str(image_path), "--checkpoint", str(tiny_checkpoint.path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["image"] == str(image_path) and set(out[0]["refined"]) == set(tiny_checkpoint.skeleton.keypoints)
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint.path.parent), "--dataset", "lspet", "--data",
                 str(lspet_dir), "--split", "test", "--limit", "12", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 12 and 0.0 <= report["pck@0.2"] <= 1.0
    assert set(report["raw"]["per_keypoint"]) == set(tiny_checkpoint.skeleton.keypoints)


def test_cli_errors_are_messages_not_tracebacks(tmp_path, caplog):
    assert main(["predict", "x.jpg", "--checkpoint", str(tmp_path / "none")]) == 2
    assert "checkpoint folder" in caplog.text and "not found" in caplog.text


def test_the_placement_threshold_follows_how_sure_the_model_is():
    """A young model's flat heatmaps still place (almost) every labelled keypoint; a sure model keeps 0.1."""
    from vl4pose.calibrate import ValidationPass, fit_min_peak
    from vl4pose.inference import NetworkOutput

    rng = np.random.default_rng(0)

    def val_pass(peak_scale: float) -> ValidationPass:
        heatmaps = torch.from_numpy(rng.uniform(0, 1, (20, 14, 8, 8)).astype(np.float32)) * peak_scale
        labelled = rng.uniform(size=(20, 14)) < 0.9
        return ValidationPass(NetworkOutput(heatmaps, torch.zeros(20, 13), torch.zeros(20, 13), []),
                              np.zeros((20, 14, 2)), labelled)

    flat = val_pass(0.03)
    threshold = fit_min_peak(flat)
    peaks = flat.output.heatmaps.flatten(2).amax(2).numpy()[flat.labelled]
    assert threshold < 0.03 and (peaks >= threshold).mean() >= 0.95
    assert fit_min_peak(val_pass(2.0)) == 0.1
    assert fit_min_peak(ValidationPass(flat.output, flat.keypoints, np.zeros((20, 14), bool))) == 0.1


def test_rescaled_heatmaps_put_a_peak_where_the_other_window_saw_it():
    """A peak in the heatmap of a window 0.8x the side maps into the scale-1 frame at the same image point."""
    from vl4pose.crop import CropWindow, heatmap_matrix
    from vl4pose.postprocess import rescale_heatmaps

    to_heat = heatmap_matrix(128, 32)
    window, smaller = CropWindow((100.0, 80.0), 200.0), CropWindow((100.0, 80.0), 160.0)
    image_point = np.array([130.0, 60.0, 1.0])
    peak = (to_heat @ smaller.matrix(128) @ image_point)[:2]  # where the smaller crop's heatmap peaks
    grid = np.arange(32.0)
    source = np.exp(-((grid[None, :] - peak[0]) ** 2 + (grid[:, None] - peak[1]) ** 2) / 2.0)[None]
    matrix = to_heat @ smaller.matrix(128) @ np.linalg.inv(to_heat @ window.matrix(128))
    out = rescale_heatmaps(source.astype(np.float32), matrix)
    expected = (to_heat @ window.matrix(128) @ image_point)[:2]
    y, x = np.unravel_index(out[0].argmax(), out[0].shape)
    assert abs(x - expected[0]) <= 0.5 and abs(y - expected[1]) <= 0.5
    assert np.allclose(rescale_heatmaps(source, np.eye(3)), source)  # identity: unchanged
    shifted = np.eye(3)
    shifted[0, 2] = 40.0  # every output pixel reads beyond the source: zeros, not edge values
    assert not rescale_heatmaps(source, shifted).any()
    with pytest.raises(ValueError, match="axis-aligned"):
        rescale_heatmaps(source, np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))


def test_multi_scale_test_moves_poses_not_the_likelihood(tiny_checkpoint, image_path):
    """The average over scales places the pose; the likelihood (and the calibrated score) and which keypoints are
    placed stay those of the scale-1 crop, which the calibration's reference and ``min_peak`` were fitted on."""
    from vl4pose.errors import ConfigError
    from vl4pose.predictor import PredictorConfig

    single = Predictor(tiny_checkpoint, PredictorConfig(scales=(1.0,))).predict(image_path)
    same = Predictor(tiny_checkpoint, PredictorConfig(scales=(1.0, 1.0))).predict(image_path)
    assert np.allclose(same.raw, single.raw, atol=1e-4) and same.score == pytest.approx(single.score, abs=1e-6)
    multi = Predictor(tiny_checkpoint, PredictorConfig(scales=(1.0, 0.8, 1.3))).predict(image_path)
    assert multi.log_likelihood == pytest.approx(single.log_likelihood, abs=1e-5)
    assert np.array_equal(multi.peak, single.peak) and np.array_equal(multi.placed, single.placed)
    assert np.abs(multi.raw - single.raw).max() > 1e-3  # the other crops did move the pose
    for bad in [(0.9, 1.0), (), (1.0, -1.0)]:
        with pytest.raises(ConfigError, match="start with 1.0"):
            PredictorConfig(scales=bad)


def test_cli_scales_option(tiny_checkpoint, image_path, capsys):
    outputs = []
    for scales in ("1", "1,0.8,1.3"):
        assert main(["predict", str(image_path), "--checkpoint", str(tiny_checkpoint.path), "--scales", scales,
                     "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out)[0])
    assert outputs[0]["raw"] != outputs[1]["raw"] and outputs[0]["score"] == outputs[1]["score"]  # wired through
    with pytest.raises(SystemExit):
        main(["predict", str(image_path), "--checkpoint", str(tiny_checkpoint.path), "--scales", "1,big"])
    assert "comma-separated list of numbers" in capsys.readouterr().err
