"""The orchestration pieces on their own: generated demo data, pid records and process groups, the simulated
annotator's ground-truth lookup and acceptance rule, the start command's options."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from waiting import wait_for


def test_the_generated_demo_set_loads_like_lspet_with_keypoints_inside_the_images(tmp_path):
    from stack.demo import ensure_generated
    from vl4pose.data import load_samples
    from vl4pose.data.sample import image_size

    folder = ensure_generated(tmp_path / "demo", pool=12, val=3, test=5)
    marker = (folder / "GENERATED").stat().st_mtime
    pool, test = load_samples("lspet", folder, "pool"), load_samples("lspet", folder, "test")
    assert len(pool) == 12 and len(test) == 5 and len(load_samples("lspet", folder, "val")) == 3
    for sample in pool + test:
        w, h = image_size(sample.image)
        assert sample.labelled.all()
        assert (sample.keypoints >= 0).all() and (sample.keypoints[:, 0] < w).all() and (sample.keypoints[:, 1] < h).all()
        assert np.linalg.norm(sample.keypoints[12] - (sample.keypoints[2] + sample.keypoints[3]) / 2) > 10  # torso
    assert ensure_generated(folder, pool=12, val=3, test=5) == folder
    assert (folder / "GENERATED").stat().st_mtime == marker, "an identical set is reused, not drawn again"


def _config(tmp_path):
    from stack.config import Secrets, StackConfig

    return StackConfig(tmp_path, Secrets.generate(), tmp_path)


def test_a_pid_record_is_trusted_only_while_its_process_runs_the_recorded_command(tmp_path):
    from stack import services

    config = _config(tmp_path)
    argv = [sys.executable, "-c", "import time; time.sleep(60)", "vl4pose-test-marker"]
    child = subprocess.Popen(argv, start_new_session=True)
    grandchild_code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    try:
        services._write_record(config, "worker", child.pid, argv)
        wait_for(lambda: services.running_pid(config, "worker"), 10, "the forked child to exec the recorded command",
                 every=0.05)
        assert services.running_pid(config, "worker") == child.pid
        services._write_record(config, "ml", child.pid, [sys.executable, "-m", "something", "else"])
        assert services.running_pid(config, "ml") is None, "same pid, another command: not ours"
        assert services.stop_service(config, "worker") is True
        assert child.poll() is not None and services.running_pid(config, "worker") is None
        assert services.stop_service(config, "worker") is False
        group = subprocess.Popen([sys.executable, "-c", grandchild_code], start_new_session=True)
        services._write_record(config, "coordinator", group.pid, [sys.executable, "-c", grandchild_code])
        time.sleep(1.0)
        assert services._group_alive(group.pid)
        assert services.stop_service(config, "coordinator", kill=True)
        assert not services._group_alive(group.pid), "the whole process group is gone"
    finally:
        child.kill()


def test_status_reports_stopped_services(tmp_path):
    from stack import services

    report = services.status(_config(tmp_path))
    assert set(report) == set(services.SERVICES)
    assert all(item["pid"] is None for item in report.values())


def test_ground_truth_is_found_from_local_files_and_upload_urls(tmp_path):
    from stack.annotator import GroundTruth
    from vl4pose.data.sample import Sample

    image = tmp_path / "data" / "images" / "im00007.jpg"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"")
    sample = Sample("im00007", image, np.zeros((14, 2)), np.full(14, 2))
    truth = GroundTruth([sample], files_root=tmp_path)
    assert truth.find("/data/local-files/?d=data/images/im00007.jpg") is sample
    assert truth.find("/data/local-files/?d=elsewhere/im00007.jpg") is sample  # by name when the path differs
    assert truth.find("/data/upload/3/1a2b3c4d-im00007.jpg") is sample
    assert truth.find("/data/upload/3/1a2b3c4d-im00008.jpg") is None


def test_a_suggestion_is_accepted_only_within_tolerance_with_the_same_keypoints_placed():
    from stack.annotator import SimulatedAnnotator
    from vl4pose.skeletons import LSP14

    annotator = SimulatedAnnotator.__new__(SimulatedAnnotator)
    annotator.skeleton, annotator.tolerance = LSP14, 0.2
    truth = np.array([[50.0 + 5 * i, 20.0 + 10 * i] for i in range(14)])
    torso = np.linalg.norm(truth[9] - truth[2])  # left shoulder to right hip, one of the torso diagonals
    accepted, error = annotator.close_enough(truth + 1.0, truth)
    assert accepted and error == pytest.approx(np.sqrt(2))
    far = truth.copy()
    far[5] += [0.5 * torso, 0]
    assert annotator.close_enough(far, truth)[0] is False
    missing = truth.copy()
    missing[0] = np.nan
    assert annotator.close_enough(missing, truth)[0] is False, "a keypoint the suggestion lacks is a correction"
    assert annotator.close_enough(truth, missing)[0] is False, "an extra keypoint is a correction too"


def test_start_options_are_checked_before_anything_starts(tmp_path):
    from stack.config import StackError
    from stack.start import StartOptions, user_link

    with pytest.raises(StackError, match="--dataset must be one of"):
        user_link(StartOptions(data=tmp_path, dataset="imagenet"))
    with pytest.raises(StackError, match="does not exist"):
        user_link(StartOptions(data=tmp_path / "nope", dataset="folder"))
    key, spec = user_link(StartOptions(data=tmp_path, dataset="folder", round_budget=5))
    assert spec.options["images"] == tmp_path and "--round-budget" in spec.argv() and key.startswith("user:folder:")


def test_credentials_are_made_once_and_kept_private(tmp_path, monkeypatch):
    from stack.start import load_state, save_state, stack_config

    monkeypatch.setenv("VL4POSE_LS_PORT", "18080")
    state = load_state(tmp_path)
    config = stack_config(tmp_path, state, default_root=tmp_path / "data")
    save_state(tmp_path, state)
    assert (tmp_path / "stack.json").stat().st_mode & 0o777 == 0o600
    again = stack_config(tmp_path, load_state(tmp_path))
    assert again.secrets == config.secrets and again.files_root == (tmp_path / "data").resolve()
    assert again.ports["labelstudio"] == 18080 and len(config.secrets.api_token) >= 16
    assert json.loads((tmp_path / "stack.json").read_text())["files_root"] == str((tmp_path / "data").resolve())
    monkeypatch.setenv("VL4POSE_ML_PORT", "ninety")
    with pytest.raises(Exception, match="VL4POSE_ML_PORT"):
        stack_config(tmp_path, load_state(tmp_path))


def test_the_starter_progress_line_estimates_time_left_from_the_rate_since_its_first_report(monkeypatch):
    import io

    from stack import starter
    from vl4pose.train import Progress

    clock = iter([100.0, 110.0, 120.0])
    monkeypatch.setattr(starter.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    line = starter.ProgressLine(out)  # created at t=100
    line(Progress(epoch=2, epochs=4, step=0, steps=10, loss=1.0, validation={"pck@0.2": 0.5}))  # resumed at 50 %
    line(Progress(epoch=3, epochs=4, step=0, steps=10, loss=1.0, validation={"pck@0.2": 0.6}))  # 75 % 10 s later
    first, second = out.getvalue().splitlines()
    assert "epoch 3/4" in first and "timing it" in first and "50.0 %" in first
    assert "epoch 4/4" in second and "about 10 s left" in second and "60.0 %" in second


def test_lsp14_projects_on_photographs_start_from_the_shipped_starter():
    """The committed human-pose starter loads as a checkpoint, carries its model card, and is chosen only where it
    fits: lsp14, and never for an LSPET demo whose tasks it may have trained on."""
    from stack.starter import SHIPPED_STARTER_EXCLUDES, shipped_starter
    from vl4pose.checkpoint import load_checkpoint

    shipped = shipped_starter("lsp14")
    assert shipped is not None, "models/lsp14-starter is missing: ship it with scripts/ship_starter.py"
    ckpt = load_checkpoint(shipped)
    assert ckpt.skeleton.name == "lsp14" and ckpt.calibration.reference
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in ckpt.pose.parameters())  # fp16 -> fp32
    card = (shipped / "MODEL_CARD.md").read_text()
    assert "research" in card.lower() and "--skip 200" in card
    assert shipped_starter("coco17") is None and shipped_starter("hand21") is None
    assert shipped_starter("lsp14", demo_tasks=SHIPPED_STARTER_EXCLUDES) == shipped
    assert shipped_starter("lsp14", demo_tasks=SHIPPED_STARTER_EXCLUDES + 1) is None


def test_waiting_on_the_coordinator_stops_at_a_failed_job_but_not_at_an_isolated_bad_event(monkeypatch):
    from stack.project import Coordinator
    from stack.config import StackError

    event = {"what": "webhook event 7 (ANNOTATION_CREATED)", "state": "failed", "error": "'result' must be a list",
             "event_id": 7}
    job = {"what": "train job 3", "state": "failed", "error": "training diverged"}
    reports = iter([{"failures": [event], "n": 0}, {"failures": [event], "n": 1}])
    coordinator = Coordinator("http://127.0.0.1:1", "token")
    monkeypatch.setattr(coordinator, "project", lambda project_id: next(reports))
    monkeypatch.setattr("stack.project.time.sleep", lambda s: None)
    assert coordinator.wait(1, lambda r: r["n"] == 1, "the round", 30)["n"] == 1
    monkeypatch.setattr(coordinator, "project", lambda project_id: {"failures": [event, job], "n": 0})
    with pytest.raises(StackError, match="train job 3 failed: training diverged"):
        coordinator.wait(1, lambda r: r["n"] == 1, "the round", 30)
