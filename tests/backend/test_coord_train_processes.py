"""Round training in several processes (``VL4POSE_TRAIN_PROCESSES``): the setting, the command and spec the train
job hands to torchrun, and one real 2-process round."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from coord_fakes import gt_results, sample_for_url
from sqlalchemy import select

from backend.config import Settings, SettingsError
from backend.models import ModelVersion, Project, Round, RoundState
from vl4pose.launch import run_spec, torchrun_command


@pytest.fixture
def linked(make_app, link, tiny_checkpoint, lspet_dir):
    def build(**settings):
        app = make_app(round_budget=3, **settings)
        link(app, limit=10, holdout_dataset="lspet", holdout_data=str(lspet_dir), holdout_split="val",
             holdout_limit=4, init_checkpoint=str(tiny_checkpoint.path))
        return app

    return build


def _close_round_with_one_label(app, fake_ls, lspet_pool, auth) -> Round:
    services = app.extensions["vl4pose"]
    with services.db.session() as session:
        project = session.scalar(select(Project))
        task_id = session.scalars(select(Round).order_by(Round.number)).first().selected_tasks[0]
    sample = sample_for_url(lspet_pool, fake_ls.tasks[task_id]["data"]["image"])
    fake_ls.annotate(task_id, gt_results(sample, project.label_config))
    assert app.test_client().post(f"/api/projects/{project.id}/rounds/close", headers=auth).status_code == 202
    with services.db.session() as session:
        return session.scalars(select(Round).order_by(Round.number)).first()


def test_the_setting_is_read_and_checked():
    assert Settings.from_env({}, require_secrets=False).train_processes == 1
    assert Settings.from_env({"VL4POSE_TRAIN_PROCESSES": "4"}, require_secrets=False).train_processes == 4
    with pytest.raises(SettingsError, match="TRAIN_PROCESSES"):
        Settings.from_env({"VL4POSE_TRAIN_PROCESSES": "0"}, require_secrets=False)


def test_the_train_job_hands_torchrun_a_spec_of_the_round(linked, fake_ls, lspet_pool, auth, monkeypatch):
    calls = []

    def fake_torchrun(spec, processes, on_progress=None, **_):
        calls.append(torchrun_command(processes, spec))
        threads = torch.get_num_threads()
        try:
            run_spec(spec)  # what each of the processes runs, here in one
        finally:
            torch.set_num_threads(threads)

    monkeypatch.setattr("vl4pose.launch.run_torchrun", fake_torchrun)
    app = linked(train_processes=3)
    first = _close_round_with_one_label(app, fake_ls, lspet_pool, auth)
    assert first.state == RoundState.DONE, first.error
    spec_path = calls[0][-1]
    assert calls == [[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "3",
                      "-m", "vl4pose.launch", spec_path]]
    spec = json.loads(open(spec_path).read())
    assert spec["out"].endswith("/run") and spec["init"] and spec["skeleton"] == "lsp14"
    assert len(spec["train_samples"]) == 1 and spec["train"]["batch_size"] == 4
    assert spec["calibration"]["previous"]["temperature"] > 0 and spec["calibration"]["current_images"] == 1
    with app.extensions["vl4pose"].db.session() as session:
        assert session.scalar(select(ModelVersion).where(ModelVersion.parent.is_not(None))) is not None


def test_a_round_trains_in_two_real_processes(linked, fake_ls, lspet_pool, auth):
    app = linked(train_processes=2)
    first = _close_round_with_one_label(app, fake_ls, lspet_pool, auth)
    assert first.state == RoundState.DONE, first.error
    services = app.extensions["vl4pose"]
    with services.db.session() as session:
        version = session.scalar(select(ModelVersion).where(ModelVersion.parent.is_not(None)))
    assert version is not None and (services.registry().path(version.version) / "weights.pt").is_file()
    logs = list(Path(services.settings.storage_dir).rglob("train.log"))
    assert logs and "distributed training: 2 processes (gloo)" in logs[0].read_text()
