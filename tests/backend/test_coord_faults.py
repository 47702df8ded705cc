"""Faults: Label Studio unreachable during ranking, a training set without usable keypoints, lost webhooks
found by reconcile, deletions, and a reconcile racing a webhook."""

from __future__ import annotations

import pytest
from coord_fakes import gt_results, sample_for_url
from sqlalchemy import select

from backend.models import AnnotationRecord, AnnotationStatus, Job, JobKind, JobState, Project, Round, RoundState

HOOK = "/hooks/label-studio"


@pytest.fixture
def linked(make_app, fake_ls, link, tiny_checkpoint, lspet_dir):
    # the per-task strategy: rank shards import their own predictions, the path whose faults these tests inject
    # (under the default vl4pose_mix the rank job imports once every shard is in)
    app = make_app(round_budget=2, acquisition_strategy="vl4pose")
    result = link(
        app,
        limit=6,
        holdout_dataset="lspet",
        holdout_data=str(lspet_dir),
        holdout_split="val",
        holdout_limit=2,
        init_checkpoint=str(tiny_checkpoint.path),
    )
    return app, result


def _state(services):
    with services.db.session() as session:
        rounds = session.scalars(select(Round).order_by(Round.number)).all()
        jobs = session.scalars(select(Job).order_by(Job.id)).all()
        project = session.scalar(select(Project))
        return rounds, jobs, project


def _label(app, fake_ls, pool, count, empty=False, webhook=True, headers=None):
    """The annotator labels the head of the queue (ground truth, or nothing at all)."""
    services = app.extensions["vl4pose"]
    rounds, _, project = _state(services)
    tasks = [t for t in rounds[-1].selected_tasks][:count]
    for task_id in tasks:
        sample = sample_for_url(pool, fake_ls.tasks[task_id]["data"]["image"])
        body = fake_ls.annotate(task_id, [] if empty else gt_results(sample, project.label_config))
        if webhook:
            assert app.test_client().post(HOOK, json=body, headers=headers).status_code == 200
    return tasks


def test_label_studio_unreachable_during_rank_is_retried_and_the_round_stays_consistent(
    linked, fake_ls, lspet_pool, hook_headers
):
    app, result = linked
    services = app.extensions["vl4pose"]
    v0, v1 = result.initial_version, f"p{result.ls_project_id}-v1"
    seen = []

    def watch(name, failing):
        if name == "import_predictions" and failing:
            rounds, jobs, _ = _state(services)
            seen.append(
                (
                    len(rounds),
                    rounds[0].state,
                    fake_ls.projects[result.ls_project_id]["model_version"],
                    services.registry().current(),
                    jobs[-1].kind,
                    jobs[-1].state,
                )
            )

    fake_ls.on_call = watch
    fake_ls.fail["import_predictions"] = 2  # the first two attempts of the rank shard cannot reach Label Studio
    _label(app, fake_ls, lspet_pool, 2, headers=hook_headers)
    assert seen == [(1, RoundState.RANKING, v0, v0, JobKind.RANK_SHARD, JobState.RUNNING)] * 2
    rounds, jobs, _ = _state(services)
    rank = [j for j in jobs if j.kind == JobKind.RANK][-1]
    assert rank.state == JobState.DONE and rank.attempts == 1 and rank.error is None
    [shard] = [j for j in jobs if j.kind == JobKind.RANK_SHARD and j.parent_id == rank.id]
    assert shard.state == JobState.DONE and shard.attempts == 3 and shard.error is None
    assert [r.state for r in rounds] == [RoundState.DONE, RoundState.OPEN] and rounds[1].model_version == v1
    assert fake_ls.projects[result.ls_project_id]["model_version"] == v1 and services.registry().current() == v1
    for task_id in fake_ls.tasks:  # retries never duplicate a prediction
        assert len(fake_ls.task_predictions(task_id, v1)) <= 1


def test_label_studio_down_for_good_fails_the_round_readably_and_a_retry_finishes_it(
    linked, fake_ls, lspet_pool, hook_headers, auth
):
    app, result = linked
    services = app.extensions["vl4pose"]
    v0, v1 = result.initial_version, f"p{result.ls_project_id}-v1"
    fake_ls.fail["import_predictions"] = 100
    _label(app, fake_ls, lspet_pool, 2, headers=hook_headers)
    rounds, jobs, project = _state(services)
    rank = [j for j in jobs if j.kind == JobKind.RANK][-1]
    [shard] = [j for j in jobs if j.kind == JobKind.RANK_SHARD and j.parent_id == rank.id]
    assert shard.state == JobState.FAILED and shard.attempts == 4
    assert shard.error.startswith("gave up after 4 attempts: Label Studio at http://fake is unreachable")
    assert rank.state == JobState.FAILED and rank.attempts == 1
    assert rank.error.startswith(f"rank shard job {shard.id} failed: gave up after 4 attempts")
    assert len(rounds) == 1 and rounds[0].state == RoundState.FAILED and rounds[0].error.startswith("ranking failed")
    assert fake_ls.projects[result.ls_project_id]["model_version"] == v0 and services.registry().current() == v0
    assert v1 in services.registry().versions()  # published, not yet serving
    report = app.test_client().get(f"/api/projects/{project.id}", headers=auth).json
    assert any("gave up" in (f["error"] or "") for f in report["failures"])

    fake_ls.fail.clear()
    response = app.test_client().post(f"/api/projects/{project.id}/rounds/close", headers=auth)
    assert response.status_code == 202 and response.json["job_id"] == rank.id  # the failed job runs again
    rounds, jobs, _ = _state(services)
    assert [r.state for r in rounds] == [RoundState.DONE, RoundState.OPEN]
    assert fake_ls.projects[result.ls_project_id]["model_version"] == v1
    assert sorted(services.registry().versions()) == sorted([v0, v1])
    assert [j.kind for j in jobs].count(JobKind.TRAIN) == 1  # the model was not trained twice


def test_a_training_set_without_usable_keypoints_fails_with_a_clear_reason(
    linked, fake_ls, lspet_pool, hook_headers, auth
):
    app, result = linked
    services = app.extensions["vl4pose"]
    tasks = _label(app, fake_ls, lspet_pool, 2, empty=True, headers=hook_headers)
    rounds, jobs, project = _state(services)
    train = [j for j in jobs if j.kind == JobKind.TRAIN][-1]
    assert train.state == JobState.FAILED and train.attempts == 1
    assert "no usable keypoints" in train.error and "Traceback" not in train.error
    assert rounds[0].state == RoundState.FAILED and "no usable keypoints" in rounds[0].error
    assert services.registry().versions() == [result.initial_version]
    page = app.test_client().get(f"/projects/{project.id}", headers=auth).get_data(as_text=True)
    assert "no usable keypoints" in page

    # the annotators fix their labels; retrying the round trains on a fresh snapshot and completes it
    for task_id in tasks:
        annotation = fake_ls.tasks[task_id]["annotations"][0]
        sample = sample_for_url(lspet_pool, fake_ls.tasks[task_id]["data"]["image"])
        body = fake_ls.update(annotation["id"], gt_results(sample, project.label_config))
        app.test_client().post(HOOK, json=body, headers=hook_headers)
    assert app.test_client().post(f"/api/projects/{project.id}/rounds/close", headers=auth).status_code == 202
    rounds, jobs, _ = _state(services)
    assert [r.state for r in rounds] == [RoundState.DONE, RoundState.OPEN]
    assert [j.state for j in jobs if j.kind == JobKind.TRAIN] == [JobState.DONE]


class _Answer:
    def __init__(self, status_code: int, json: dict) -> None:
        self.status_code, self.json = status_code, json


def _reconcile(app, project_id, auth) -> _Answer:
    """POST /reconcile queues a job and answers at once (202); play the worker (memory queue) and read its counts."""
    from backend.models import Job

    response = app.test_client().post(f"/api/projects/{project_id}/reconcile", headers=auth)
    assert response.status_code == 202 and response.json["state"] == "queued", response.json
    services = app.extensions["vl4pose"]
    services.jobs.run(response.json["job_id"])
    with services.db.session() as session:
        job = session.get(Job, response.json["job_id"])
        assert job.state == JobState.DONE, job.error
        return _Answer(response.status_code, {**response.json, **job.payload["result"]})


def test_a_lost_webhook_is_found_by_reconcile_and_counts_for_the_round(make_app, fake_ls, link, lspet_pool, auth):
    app = make_app(queue="memory", round_budget=5)
    result = link(app, limit=6)
    services = app.extensions["vl4pose"]
    rounds, _, project = _state(services)
    task_id = sorted(fake_ls.tasks)[0]
    sample = sample_for_url(lspet_pool, fake_ls.tasks[task_id]["data"]["image"])
    fake_ls.annotate(task_id, gt_results(sample, project.label_config))  # Label Studio's webhook never arrived
    response = _reconcile(app, project.id, auth)
    assert response.status_code == 202 and response.json["changed"] == 1
    with services.db.session() as session:
        [record] = session.scalars(select(AnnotationRecord)).all()
        assert record.source == "reconcile" and record.task_id == task_id and record.round_id == rounds[0].id
        assert record.keypoint_count == int(sample.labelled.sum())
        assert session.scalar(select(Round)).labelled_count == 1
    again = _reconcile(app, project.id, auth).json
    assert again["changed"] == 0 and again["deleted"] == 0 and again["mode"] == "incremental"

    fake_ls.delete(record.annotation_id)  # deleted in Label Studio, webhook lost too
    assert _reconcile(app, project.id, auth).json["deleted"] == 1
    with services.db.session() as session:
        assert session.scalar(select(AnnotationRecord)).status == AnnotationStatus.DELETED
        assert session.scalar(select(Round)).labelled_count == 0
    assert result.tasks_imported == 6


def test_an_annotation_arriving_during_a_reconcile_is_not_taken_for_deleted(make_app, fake_ls, link, hook_headers):
    from backend.services.events import process_pending
    from backend.services.reconcile import reconcile

    app = make_app(queue="memory")
    result = link(app, limit=4)
    services = app.extensions["vl4pose"]
    task_id = sorted(fake_ls.tasks)[1]
    late = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": result.ls_project_id},
        "task": {"id": task_id, "data": fake_ls.tasks[task_id]["data"]},
        "annotation": {"id": 5000, "task": task_id, "result": [], "updated_at": "2026-01-02T00:00:00Z"},
    }

    def during_export(name, failing):
        if name == "tasks_after":  # created in Label Studio after the page was read
            app.test_client().post(HOOK, json=late, headers=hook_headers)
            process_pending(services.db, services.jobs)

    fake_ls.on_call = during_export
    counts = reconcile(services, result.project_id)
    assert counts["deleted"] == 0
    with services.db.session() as session:
        assert session.scalar(select(AnnotationRecord)).status == AnnotationStatus.SUBMITTED
