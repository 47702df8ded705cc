"""The whole loop in one process (huey immediate mode, SQLite, the real Predictor on the tiny model, a fake
Label Studio): link with an initial model -> ranked queue -> webhooks -> round closes -> train -> evaluate ->
rank -> next round; and what the API and the dashboard show afterwards."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from coord_fakes import gt_results, sample_for_url
from sqlalchemy import select

from backend.models import Job, JobState, ModelVersion, Project, Round, RoundState, TaskPrediction
from backend.services.samples import split_validation

HOOK = "/hooks/label-studio"


@pytest.fixture
def looped(make_app, fake_ls, link, tiny_checkpoint, lspet_dir):
    app = make_app(round_budget=3)
    result = link(
        app,
        limit=10,
        holdout_dataset="lspet",
        holdout_data=str(lspet_dir),
        holdout_split="val",
        holdout_limit=4,
        init_checkpoint=str(tiny_checkpoint.path),
    )
    return app, result


def _rounds(services):
    with services.db.session() as session:
        return session.scalars(select(Round).order_by(Round.number)).all()


def test_linking_with_an_initial_model_ranks_the_queue_at_once(looped, fake_ls):
    app, result = looped
    services = app.extensions["vl4pose"]
    v0 = result.initial_version
    assert v0 == f"p{result.ls_project_id}-v0" and result.tasks_imported == 10 and result.holdout_samples == 4
    project = fake_ls.projects[result.ls_project_id]
    assert project["model_version"] == v0 and project["sampling"] == "Uncertainty sampling"
    assert "KeyPointLabels" in project["label_config"]
    [hook] = fake_ls.webhooks_
    assert hook["url"] == "http://127.0.0.1:8200/hooks/label-studio"
    assert hook["headers"] == {"X-VL4Pose-Secret": services.settings.webhook_secret}
    assert {s["path"] for s in fake_ls.storages} == {str(services.settings.label_studio_files_root) + "/lspet/images"}
    for task_id in fake_ls.tasks:
        [prediction] = fake_ls.task_predictions(task_id)
        assert prediction["model_version"] == v0 and 0 <= prediction["score"] < 1  # vl4pose_mix: rank i / N
        assert prediction["result"] and all(r["type"] == "keypointlabels" for r in prediction["result"])
    assert services.registry().current() == v0
    [round_] = _rounds(services)
    assert round_.state == RoundState.OPEN and round_.model_version == v0
    scores = {p["task"]: p["score"] for p in fake_ls.predictions}
    assert round_.selected_tasks == sorted(scores, key=lambda t: (scores[t], t))[:3]
    with services.db.session() as session:
        assert {j.state for j in session.scalars(select(Job))} == {JobState.DONE}
        v0_row = session.scalar(select(ModelVersion).where(ModelVersion.version == v0))
        assert v0_row.metrics["holdout_images"] == 4 and 0 <= v0_row.metrics["holdout_pck"] <= 1


def test_webhooks_close_the_round_and_the_next_round_opens_ranked_by_the_new_model(
    looped, fake_ls, lspet_pool, hook_headers, auth, tiny_checkpoint
):
    app, result = looped
    services = app.extensions["vl4pose"]
    client = app.test_client()
    v0, v1 = result.initial_version, f"p{result.ls_project_id}-v1"
    with services.db.session() as session:
        config = session.scalar(select(Project)).label_config
    selected = _rounds(services)[0].selected_tasks
    for i, task_id in enumerate(selected):
        [prediction] = fake_ls.task_predictions(task_id, v0)
        sample = sample_for_url(lspet_pool, fake_ls.tasks[task_id]["data"]["image"])
        submitted = prediction["result"] if i == 0 else gt_results(sample, config)  # accept one, correct two
        body = fake_ls.annotate(task_id, submitted, prediction=prediction)
        assert client.post(HOOK, json=body, headers=hook_headers).status_code == 200

    first, second = _rounds(services)
    assert first.state == RoundState.DONE and first.close_reason == "budget"
    assert (first.labelled_count, first.accepted_count, first.corrected_count) == (3, 1, 2)
    assert 0 <= first.metrics["served_pck"] <= 1 and first.metrics["served_images"] == 3
    assert first.metrics["trained_version"] == v1 and first.metrics["holdout_images"] == 4
    assert 0 <= first.metrics["holdout_pck"] <= 1
    assert {"train_s", "evaluate_s", "rank_s", "close_to_ranked_s"} <= set(first.timings)
    assert second.state == RoundState.OPEN and second.model_version == v1 and second.number == 2
    assert set(second.selected_tasks).isdisjoint(selected) and len(second.selected_tasks) == 3

    registry = services.registry()
    assert registry.versions() == [v0, v1] and registry.current() == v1
    assert registry.info(v1)["parent"] == v0
    assert fake_ls.projects[result.ls_project_id]["model_version"] == v1
    unlabelled = [t for t in fake_ls.tasks if t not in selected]
    for task_id in unlabelled:
        assert len(fake_ls.task_predictions(task_id, v1)) == 1
    assert all(not fake_ls.task_predictions(t, v1) for t in selected)
    with services.db.session() as session:
        versions = session.scalars(select(ModelVersion).order_by(ModelVersion.id)).all()
        assert [(v.version, v.parent) for v in versions] == [(v0, None), (v1, v0)]
        # three labels; validation membership is a fixed hash of each task id (at least one kept for calibration)
        train, val = split_validation([SimpleNamespace(sample_id=f"task:{t}") for t in selected],
                                      services.settings.train_val_fraction)
        assert len(val) >= 1 and versions[1].train_images == len(train) == 3 - len(val)
        # one or two validation images are too little evidence: v1 keeps v0's temperature and says so
        calibration = versions[1].metrics["calibration"]
        assert calibration["fallback"] == "previous_temperature" and calibration["validation_images"] == len(val)
        assert calibration["temperature"] == tiny_checkpoint.calibration.temperature  # v0 is the tiny checkpoint
        assert {j.kind.value: j.state for j in session.scalars(select(Job))} == {
            "train": JobState.DONE,
            "rank": JobState.DONE,
            "rank_shard": JobState.DONE,
            "evaluate": JobState.DONE,
        }
        stored = session.scalars(select(TaskPrediction).where(TaskPrediction.model_version == v1)).all()
        assert sorted(p.task_id for p in stored) == sorted(unlabelled)

    report = client.get(f"/api/projects/{first.project_id}", headers=auth).json
    assert [r["number"] for r in report["rounds"]] == [1, 2]
    assert report["rounds"][0]["served_pck"] == pytest.approx(first.metrics["served_pck"])
    assert report["accuracy"]["holdout_pck"][0][0] == 0 and [x for x, _ in report["accuracy"]["holdout_pck"]] == [0, 1]
    assert report["current_round"]["model_version"] == v1 and report["current_job"] is None
    queue = report["queue"]
    assert [q["score"] for q in queue] == sorted(q["score"] for q in queue) and len(queue) == len(unlabelled)

    page = client.get(f"/projects/{first.project_id}", headers=auth)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert (
        "<svg" in html
        and v1 in html
        and "Round 2" in html
        and "http" not in html.split("<body>")[1].replace("http-equiv", "")
    )  # nothing loaded from elsewhere
    png = client.get(f"/api/projects/{first.project_id}/tasks/{queue[0]['task_id']}/pose.png", headers=auth)
    assert png.status_code == 200 and png.mimetype == "image/png" and png.data[:4] == b"\x89PNG"


def test_closing_a_round_by_hand_trains_with_what_is_there(looped, fake_ls, lspet_pool, auth):
    app, result = looped
    services = app.extensions["vl4pose"]
    client = app.test_client()
    with services.db.session() as session:
        project = session.scalar(select(Project))
    task_id = _rounds(services)[0].selected_tasks[0]
    sample = sample_for_url(lspet_pool, fake_ls.tasks[task_id]["data"]["image"])
    fake_ls.annotate(task_id, gt_results(sample, project.label_config))  # its webhook is lost; reconcile finds it
    assert client.post(f"/api/projects/{project.id}/rounds/close").status_code == 401
    response = client.post(f"/api/projects/{project.id}/rounds/close", headers=auth)
    assert response.status_code == 202
    first, second = _rounds(services)
    assert first.close_reason == "manual" and first.state == RoundState.DONE and first.labelled_count == 1
    assert second.state == RoundState.OPEN
    again = client.post(f"/api/projects/{project.id}/rounds/close", headers=auth)
    assert again.status_code == 202  # round 2 closes too (with no new labels it trains on the same one)
    assert client.post("/api/projects/99/rounds/close", headers=auth).json["error"] == "not_found"
    np.testing.assert_equal(len(_rounds(services)), 3)
