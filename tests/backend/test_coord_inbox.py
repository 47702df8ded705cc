"""The inbox isolates failures per event: a malformed (poison) event is failed with its reason while the events
around it count and the round closes; infrastructure errors leave events pending; failed and stuck events are
shown with retry and dismiss; reconcile survives a bad item in Label Studio's export."""

from __future__ import annotations

import datetime as dt

import pytest
from coord_fakes import TOKEN, gt_results, sample_for_url
from sqlalchemy import select, update

from backend.models import AnnotationRecord, EventState, Project, Round, RoundState, WebhookEvent

HOOK = "/hooks/label-studio"


def _events(services):
    with services.db.session() as session:
        return session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)).all()


def _poison(fake_ls, task_id, **annotation):
    """A webhook with the right shape outside and bad data inside (what a careless client or another Label
    Studio version may send)."""
    body = fake_ls.annotate(task_id, [])
    fake_ls.tasks[task_id]["annotations"].pop()  # it never existed in Label Studio
    body["annotation"].update(annotation)
    return body


def test_a_poison_event_between_two_good_annotations_is_failed_and_the_round_closes(
    make_app, fake_ls, link, tiny_checkpoint, lspet_dir, lspet_pool, hook_headers, auth
):
    app = make_app(round_budget=2)
    result = link(
        app,
        limit=6,
        holdout_dataset="lspet",
        holdout_data=str(lspet_dir),
        holdout_split="val",
        holdout_limit=2,
        init_checkpoint=str(tiny_checkpoint.path),
    )
    services = app.extensions["vl4pose"]
    client = app.test_client()
    with services.db.session() as session:
        project = session.scalar(select(Project))
        first, second, third = session.scalar(select(Round)).selected_tasks[:2] + [sorted(fake_ls.tasks)[-1]]

    def good(task_id):
        sample = sample_for_url(lspet_pool, fake_ls.tasks[task_id]["data"]["image"])
        return fake_ls.annotate(task_id, gt_results(sample, project.label_config))

    assert client.post(HOOK, json=good(first), headers=hook_headers).status_code == 200
    poison = _poison(fake_ls, third, result="not-a-list")
    assert client.post(HOOK, json=poison, headers=hook_headers).status_code == 200
    assert client.post(HOOK, json=good(second), headers=hook_headers).status_code == 200

    rounds = session_rounds(services)
    assert rounds[0].labelled_count == 2 and rounds[0].state == RoundState.DONE and rounds[0].close_reason == "budget"
    assert rounds[1].state == RoundState.OPEN and rounds[1].model_version == f"p{result.ls_project_id}-v1"
    states = [(e.state, e.body["annotation"]["id"]) for e in _events(services)]
    assert states == [
        (EventState.DONE, fake_ls.tasks[first]["annotations"][0]["id"]),
        (EventState.FAILED, poison["annotation"]["id"]),
        (EventState.DONE, fake_ls.tasks[second]["annotations"][0]["id"]),
    ]
    failed = _events(services)[1]
    assert "'result' must be a list" in failed.error and "not-a-list" in failed.error
    with services.db.session() as session:
        assert {r.task_id for r in session.scalars(select(AnnotationRecord))} == {first, second}

    report = client.get(f"/api/projects/{project.id}", headers=auth).json
    assert report["pending_events"] == 0 and report["events"]["failed"] == 1
    assert report["events"]["failed_events"][0]["id"] == failed.id
    assert any(f.get("event_id") == failed.id and f["state"] == "failed" for f in report["failures"])
    html = client.get(f"/projects/{project.id}", headers=auth).get_data(as_text=True)
    assert "1 webhook events failed" in html and f"/events/{failed.id}/retry" in html
    assert f"/events/{failed.id}/dismiss" in html and "must be a list" in html
    # a reconcile afterwards (every 2 minutes) still works and records nothing new
    assert client.post(f"/api/projects/{project.id}/reconcile", headers=auth).json["failed"] == 0


def session_rounds(services):
    with services.db.session() as session:
        return session.scalars(select(Round).order_by(Round.number)).all()


@pytest.fixture
def linked(make_app, link):
    app = make_app(queue="memory", round_budget=10)
    result = link(app, limit=6)
    return app, result


@pytest.mark.parametrize(
    "annotation, fragment",
    [
        ({"result": "not-a-list"}, "'result' must be a list"),
        ({"result": [1, 2]}, "result[0] must be an object"),
        ({"result": [{"type": "keypointlabels", "value": "x"}]}, "needs a 'value' object"),
        ({"result": [{"type": "keypointlabels", "value": {"x": "abc", "y": 1}}]}, "value.x must be a finite number"),
        ({"result": [{"type": "keypointlabels", "value": {"x": 1, "y": 2, "keypointlabels": "Neck"}}]}, "labels"),
        (
            {"result": [{"type": "keypointlabels", "original_width": "wide", "value": {"x": 1, "y": 2}}]},
            "original_width must be a positive number",
        ),
        ({"prediction": "served"}, "'prediction' must be an object"),
        ({"prediction": {"result": {"x": 1}}}, "its prediction: 'result' must be a list"),
        ({"parent_prediction": 2**70}, "signed 64-bit"),
        ({"id": "seven"}, "integer id"),
    ],
)
def test_malformed_annotations_fail_with_a_clear_reason_and_the_next_event_is_processed(
    linked, fake_ls, hook_headers, annotation, fragment
):
    from backend.services.events import process_pending

    app, _ = linked
    services = app.extensions["vl4pose"]
    client = app.test_client()
    tasks = sorted(fake_ls.tasks)
    client.post(HOOK, json=_poison(fake_ls, tasks[0], **annotation), headers=hook_headers)
    client.post(HOOK, json=fake_ls.annotate(tasks[1], []), headers=hook_headers)
    assert process_pending(services.db, services.jobs) == 2
    bad, good = _events(services)
    assert bad.state == EventState.FAILED and fragment in bad.error and bad.processed
    assert "Traceback" not in bad.error and "AttributeError" not in bad.error
    assert good.state == EventState.DONE
    assert process_pending(services.db, services.jobs) == 0  # the failed event is not retried by itself


def test_an_event_with_a_task_that_is_not_an_object_fails_alone(linked, fake_ls, hook_headers):
    from backend.services.events import process_pending

    app, _ = linked
    body = fake_ls.annotate(sorted(fake_ls.tasks)[0], [])
    body["task"] = "task-7"
    app.test_client().post(HOOK, json=body, headers=hook_headers)
    assert process_pending(app.extensions["vl4pose"].db, app.extensions["vl4pose"].jobs) == 1
    [event] = _events(app.extensions["vl4pose"])
    assert event.state == EventState.FAILED and "'task' must be an object" in event.error


def test_an_infrastructure_error_leaves_events_pending_for_the_next_run(linked, fake_ls, hook_headers, monkeypatch):
    """Unit test: the database failing is played by a patched apply_event raising SQLAlchemy's OperationalError."""
    from sqlalchemy.exc import OperationalError

    from backend.services import events

    app, _ = linked
    services = app.extensions["vl4pose"]
    for task_id in sorted(fake_ls.tasks)[:3]:
        app.test_client().post(HOOK, json=fake_ls.annotate(task_id, []), headers=hook_headers)
    real, calls = events.apply_event, []

    def locked(session, event):
        calls.append(event.id)
        if len(calls) == 2:
            raise OperationalError("UPDATE round", {}, Exception("database is locked"))
        return real(session, event)

    monkeypatch.setattr(events, "apply_event", locked)
    assert events.process_pending(services.db, services.jobs) == 1  # the run stops at the infrastructure error
    first, second, third = _events(services)
    assert first.state == EventState.DONE
    assert second.state == third.state == EventState.PENDING and not second.processed
    assert second.attempts == 1 and "will retry" in second.error and "database is locked" in second.error
    assert events.process_pending(services.db, services.jobs) == 2  # the next run takes both
    assert {e.state for e in _events(services)} == {EventState.DONE}
    assert all(e.error is None for e in _events(services))


def test_failed_and_stuck_events_can_be_retried_or_dismissed(linked, fake_ls, hook_headers, auth):
    from backend.services.events import process_pending

    app, result = linked
    services = app.extensions["vl4pose"]
    client = app.test_client()
    tasks = sorted(fake_ls.tasks)
    client.post(HOOK, json=_poison(fake_ls, tasks[0], result="not-a-list"), headers=hook_headers)
    process_pending(services.db, services.jobs)
    client.post(HOOK, json=fake_ls.annotate(tasks[1], []), headers=hook_headers)  # the worker is not running
    failed_id, pending_id = (e.id for e in _events(services))
    report = client.get(f"/api/projects/{result.project_id}", headers=auth).json["events"]
    assert (report["pending"], report["stuck"], report["failed"]) == (1, 0, 1)
    with services.db.session() as session:  # ten minutes later it is still pending: stuck
        session.execute(update(WebhookEvent).values(received_at=dt.datetime(2020, 1, 1)))
    report = client.get(f"/api/projects/{result.project_id}", headers=auth).json
    assert report["events"]["stuck"] == 1 and report["events"]["stuck_events"][0]["id"] == pending_id
    stuck = next(f for f in report["failures"] if f.get("event_id") == pending_id)
    assert stuck["state"] == "stuck" and "worker" in stuck["error"]

    assert client.post(f"/api/events/{failed_id}/retry").status_code == 401
    retried = client.post(f"/api/events/{failed_id}/retry", headers=auth)
    assert retried.status_code == 202 and retried.json["event"]["state"] == "pending"  # queued (memory queue)
    assert process_pending(services.db, services.jobs) == 2
    again = next(e for e in _events(services) if e.id == failed_id)
    assert again.state == EventState.FAILED and again.attempts == 2  # still bad data: failed again
    assert client.post(f"/api/events/{pending_id}/retry", headers=auth).json["error"] == "conflict"  # done now
    dismissed = client.post(f"/api/events/{failed_id}/dismiss", headers=auth)
    assert dismissed.status_code == 200 and dismissed.json["event"]["state"] == "dismissed"
    assert client.post(f"/api/events/{failed_id}/dismiss", headers=auth).status_code == 409
    assert client.post("/api/events/999/dismiss", headers=auth).json["error"] == "not_found"
    report = client.get(f"/api/projects/{result.project_id}", headers=auth).json
    assert report["events"]["failed"] == 0 and not any(f.get("event_id") for f in report["failures"])


def test_the_dashboard_retries_and_dismisses_with_its_forms(linked, fake_ls, hook_headers):
    from backend.services.events import process_pending

    app, result = linked
    services = app.extensions["vl4pose"]
    client = app.test_client()
    client.post(HOOK, json=_poison(fake_ls, sorted(fake_ls.tasks)[0], result="not-a-list"), headers=hook_headers)
    process_pending(services.db, services.jobs)
    [event] = _events(services)
    client.post("/login", data={"token": TOKEN})
    page = f"/projects/{result.project_id}"
    assert client.post(f"/events/{event.id}/dismiss", data={"back": page}).status_code == 403  # no CSRF token
    with client.session_transaction() as session:
        csrf = session["csrf"]
    retried = client.post(f"/events/{event.id}/retry", data={"csrf_token": csrf, "back": page})
    assert retried.status_code == 302 and retried.headers["Location"].endswith(page)
    assert "retried: now pending" in client.get(page).get_data(as_text=True)
    process_pending(services.db, services.jobs)
    client.post(f"/events/{event.id}/dismiss", data={"csrf_token": csrf, "back": page})
    html = client.get(page).get_data(as_text=True)
    assert "dismissed" in html and f"/events/{event.id}/retry" not in html
    assert _events(services)[0].state == EventState.DISMISSED


def test_reconcile_records_a_bad_exported_annotation_as_failed_and_counts_the_rest(linked, fake_ls, lspet_pool, auth):
    from backend.services.reconcile import reconcile

    app, result = linked
    services = app.extensions["vl4pose"]
    with services.db.session() as session:
        config = session.scalar(select(Project)).label_config
    good, bad, other = sorted(fake_ls.tasks)[:3]
    for task_id in (good, other):
        sample = sample_for_url(lspet_pool, fake_ls.tasks[task_id]["data"]["image"])
        fake_ls.annotate(task_id, gt_results(sample, config))  # webhooks lost: reconcile must find them
    fake_ls.annotate(bad, [])
    fake_ls.tasks[bad]["annotations"][0]["result"] = "not-a-list"  # another Label Studio version's shape
    counts = reconcile(services, result.project_id)
    assert counts["changed"] == 2 and counts["failed"] == 1 and counts["annotations"] == 3
    with services.db.session() as session:
        assert {r.task_id for r in session.scalars(select(AnnotationRecord))} == {good, other}
        assert session.scalar(select(Round)).labelled_count == 2
    [event] = _events(services)
    assert event.state == EventState.FAILED and event.body["source"] == "reconcile"
    assert "export" in event.error and "'result' must be a list" in event.error
    again = reconcile(services, result.project_id, full=True)  # (an incremental one reads changed tasks only)
    assert again["failed"] == 1 and again["changed"] == 0 and len(_events(services)) == 1  # recorded once
    report = app.test_client().get(f"/api/projects/{result.project_id}", headers=auth).json
    assert report["events"]["failed_events"][0]["source"] == "reconcile"

    pages = fake_ls.tasks_after  # items that are not even objects are recorded too
    fake_ls.tasks_after = lambda *args: [*pages(*args), "oops", {"id": 9, "annotations": ["not one"]}]
    counts = reconcile(services, result.project_id, full=True)
    assert counts["failed"] == 3 and counts["changed"] == 0
    assert sum(e.state == EventState.FAILED for e in _events(services)) == 2  # one per distinct bad item key
