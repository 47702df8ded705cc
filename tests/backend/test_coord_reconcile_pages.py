"""Reconcile reads pages, and after the first full pass only what changed (unit tests, fake Label Studio)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from backend.models import AnnotationRecord, AnnotationStatus, Job, JobKind, JobState, Project


@pytest.fixture
def paged(make_app, link, fake_ls):
    app = make_app(queue="memory", reconcile_page_size=5, reconcile_overlap_s=0.0, round_budget=50)
    result = link(app, limit=8)
    fake_ls.import_tasks(result.ls_project_id, [{"data": {"image": f"/data/upload/1/x{i}.jpg"}} for i in range(40)])
    return app, result


def _records(services) -> dict[int, AnnotationStatus]:
    with services.db.session() as session:
        return {r.annotation_id: r.status for r in session.scalars(select(AnnotationRecord))}


def test_a_full_reconcile_reads_every_page_then_only_changed_tasks_are_read(paged, fake_ls):
    from backend.services.reconcile import reconcile

    app, result = paged
    services = app.extensions["vl4pose"]
    tasks = sorted(t for t in fake_ls.tasks if fake_ls.tasks[t]["project"] == result.ls_project_id)
    assert len(tasks) == 48
    ids = [fake_ls.annotate(t, [])["annotation"]["id"] for t in tasks[:3]]
    with services.db.session() as session:  # linking ran the project's first (full) reconcile
        assert session.get(Project, result.project_id).reconcile_cursor is not None
    first = reconcile(services, result.project_id, full=True)
    assert first["mode"] == "full" and first["tasks"] == 48 and first["pages"] == 10 and first["changed"] == 3
    calls = len(fake_ls.calls)
    again = reconcile(services, result.project_id)
    assert again["mode"] == "incremental" and again["tasks"] == 0 and again["pages"] == 1
    assert fake_ls.calls[calls:] == ["tasks_after"]  # one request: nothing changed

    fake_ls.annotate(tasks[10], [])  # a new annotation and an updated one: two tasks read, nothing else
    fake_ls.update(ids[0], [])
    changed = reconcile(services, result.project_id)
    assert changed["mode"] == "incremental" and changed["tasks"] == 2 and changed["changed"] == 2

    fake_ls.delete(ids[1])  # a single deletion touches the task: incremental finds it
    assert reconcile(services, result.project_id)["deleted"] == 1
    # a bulk deletion (no updated_at) and a deleted task: only the full pass sees them
    fake_ls.tasks[tasks[2]]["annotations"].clear()
    del fake_ls.tasks[tasks[10]]
    assert reconcile(services, result.project_id)["deleted"] == 0
    full = reconcile(services, result.project_id, full=True)
    assert full["mode"] == "full" and full["deleted"] == 2 and full["tasks"] == 47
    statuses = _records(services)
    assert statuses[ids[0]] == AnnotationStatus.SUBMITTED
    assert [statuses[i] for i in ids[1:]] == [AnnotationStatus.DELETED] * 2


def test_one_reconcile_per_project_at_a_time_and_the_api_only_queues_it(paged, auth):
    from backend.services.reconcile import ReconcileBusy, reconcile

    app, result = paged
    services = app.extensions["vl4pose"]
    with services.db.session() as session:
        project = session.get(Project, result.project_id)
        project.reconcile_owner, project.reconcile_until = "elsewhere:1:x:2", dt.datetime(2100, 1, 1)
    with pytest.raises(ReconcileBusy, match="being reconciled by elsewhere"):
        reconcile(services, result.project_id)
    client = app.test_client()
    answer = client.post(f"/api/projects/{result.project_id}/reconcile", headers=auth)
    assert answer.status_code == 202 and answer.json["state"] == "queued"  # answered at once, nothing ran
    twice = client.post(f"/api/projects/{result.project_id}/reconcile?full=1", headers=auth)
    assert twice.json["job_id"] == answer.json["job_id"] and twice.json["already_queued"] is True
    from huey.exceptions import RetryTask

    with pytest.raises(RetryTask):  # what huey gets: run it again after the retry delay
        services.jobs.run(answer.json["job_id"])
    with services.db.session() as session:
        job = session.get(Job, answer.json["job_id"])
        assert job.kind == JobKind.RECONCILE and job.state == JobState.RETRYING and "being reconciled" in job.error
        project = session.get(Project, result.project_id)
        project.reconcile_until = dt.datetime(2000, 1, 1)  # that lease expired (its process died)
    services.jobs.run(answer.json["job_id"])
    with services.db.session() as session:
        job = session.get(Job, answer.json["job_id"])
        assert job.state == JobState.DONE and job.payload["result"]["mode"] == "incremental"  # the first request's
