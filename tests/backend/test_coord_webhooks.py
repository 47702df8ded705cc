"""The webhook endpoint and the inbox: secret checks, malformed bodies, duplicates, out-of-order events."""

from __future__ import annotations

import json

import pytest
from coord_fakes import gt_results, sample_for_url
from sqlalchemy import func, select

from backend.models import AnnotationRecord, AnnotationStatus, Round, WebhookEvent

HOOK = "/hooks/label-studio"


@pytest.fixture
def linked(make_app, fake_ls, link):
    app = make_app(queue="memory")  # events are stored; the test decides when they are processed
    result = link(app)
    return app, result


def _events(app):
    with app.extensions["vl4pose"].db.session() as session:
        return session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)).all()


def _records(app):
    with app.extensions["vl4pose"].db.session() as session:
        return session.scalars(select(AnnotationRecord).order_by(AnnotationRecord.annotation_id)).all()


def _process(app):
    from backend.services.events import process_pending

    return process_pending(app.extensions["vl4pose"].db, app.extensions["vl4pose"].jobs)


def _task(fake_ls, index=0):
    return sorted(fake_ls.tasks)[index]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-VL4Pose-Secret": "wrong-secret-0123456789"},
        {"X-VL4Pose-Secret": ""},
        {"Authorization": "Bearer test-webhook-secret-0123456789"},
    ],
)
def test_unsigned_or_wrongly_signed_webhooks_are_refused_and_not_stored(linked, fake_ls, headers):
    app, _ = linked
    body = fake_ls.annotate(_task(fake_ls), [])
    response = app.test_client().post(HOOK, json=body, headers=headers)
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized" and "X-VL4Pose-Secret" in response.json["message"]
    assert "test-webhook-secret" not in response.get_data(as_text=True)
    assert _events(app) == []


@pytest.mark.parametrize(
    "data, content_type, fragment",
    [
        ("not json", "application/json", "not JSON"),
        ("[1, 2]", "application/json", "JSON object"),
        ('{"project": {"id": 1}}', "application/json", "'action'"),
        ('{"action": "ANNOTATION_CREATED", "project": {"id": 1}}', "application/json", "'annotation' object"),
        (
            '{"action": "ANNOTATIONS_DELETED", "project": {"id": 1}, "annotations": 5}',
            "application/json",
            "'annotations' list",
        ),
        (
            '{"action": "ANNOTATION_CREATED", "project": {"id": "x"}, "annotation": {}}',
            "application/json",
            "integer 'id'",
        ),
    ],
)
def test_malformed_webhooks_get_a_clear_400(linked, hook_headers, data, content_type, fragment):
    app, _ = linked
    response = app.test_client().post(HOOK, data=data, content_type=content_type, headers=hook_headers)
    assert response.status_code == 400, response.json
    assert response.json["error"] == "bad_request" and fragment in response.json["message"]
    assert _events(app) == []


def test_oversized_webhook_is_refused(linked, hook_headers):
    app, _ = linked
    response = app.test_client().post(
        HOOK,
        data=json.dumps({"action": "X", "pad": "x" * 5_000_000}),
        content_type="application/json",
        headers=hook_headers,
    )
    assert response.status_code == 413 and response.json["error"] == "request_entity_too_large"


def test_a_valid_event_is_stored_raw_and_processed_later(linked, fake_ls, hook_headers, lspet_pool):
    app, result = linked
    task_id = _task(fake_ls)
    config = app.extensions["vl4pose"].db
    sample = sample_for_url(lspet_pool, fake_ls.tasks[task_id]["data"]["image"])
    with config.session() as session:
        label_config = session.scalar(select(Round)).project.label_config
    body = fake_ls.annotate(task_id, gt_results(sample, label_config))
    response = app.test_client().post(HOOK, json=body, headers=hook_headers)
    assert response.status_code == 200 and response.json["ok"] is True
    [event] = _events(app)
    assert event.action == "ANNOTATION_CREATED" and event.ls_project_id == result.ls_project_id
    assert event.body["annotation"]["id"] == body["annotation"]["id"] and "token" not in event.body["project"]
    assert not event.processed and _records(app) == []
    assert _process(app) == 1
    [record] = _records(app)
    assert record.task_id == task_id and record.status == AnnotationStatus.SUBMITTED and record.source == "webhook"
    assert record.keypoint_count == int(sample.labelled.sum())
    assert record.keypoints[0] == pytest.approx(list(sample.keypoints[0]), abs=0.01)
    assert _events(app)[0].processed


def test_the_same_webhook_twice_changes_nothing_the_second_time(linked, fake_ls, hook_headers):
    app, _ = linked
    client = app.test_client()
    body = fake_ls.annotate(_task(fake_ls), [])
    for _ in range(2):
        assert client.post(HOOK, json=body, headers=hook_headers).status_code == 200
    assert _process(app) == 2
    assert len(_records(app)) == 1
    with app.extensions["vl4pose"].db.session() as session:
        round_ = session.scalar(select(Round))
        assert round_.labelled_count == 1
        assert session.scalar(select(func.count()).select_from(WebhookEvent).where(WebhookEvent.processed)) == 2


def test_out_of_order_events_keep_the_newest_state(linked, fake_ls, hook_headers):
    app, _ = linked
    client = app.test_client()
    created = fake_ls.annotate(_task(fake_ls), [])
    result = [
        {
            "from_name": "kp",
            "to_name": "image",
            "type": "keypointlabels",
            "original_width": 100,
            "original_height": 100,
            "value": {"x": 10.0, "y": 20.0, "width": 0.75, "keypointlabels": ["Neck"]},
        }
    ]
    updated = fake_ls.update(created["annotation"]["id"], result)
    client.post(HOOK, json=updated, headers=hook_headers)
    client.post(HOOK, json=created, headers=hook_headers)  # the older state arrives last
    _process(app)
    [record] = _records(app)
    assert record.keypoint_count == 1 and record.keypoints[12] == [10.0, 20.0]


def test_a_delete_is_final_even_when_the_create_arrives_late(linked, fake_ls, hook_headers):
    app, _ = linked
    client = app.test_client()
    created = fake_ls.annotate(_task(fake_ls), [])
    deleted = fake_ls.delete(created["annotation"]["id"])
    client.post(HOOK, json=deleted, headers=hook_headers)
    client.post(HOOK, json=created, headers=hook_headers)
    _process(app)
    [record] = _records(app)
    assert record.status == AnnotationStatus.DELETED
    with app.extensions["vl4pose"].db.session() as session:
        assert session.scalar(select(Round)).labelled_count == 0


def test_events_of_unlinked_projects_and_other_actions_are_kept_but_ignored(linked, hook_headers):
    app, result = linked
    client = app.test_client()
    client.post(
        HOOK,
        json={"action": "ANNOTATION_CREATED", "project": {"id": 999}, "annotation": {"id": 1, "task": 1, "result": []}},
        headers=hook_headers,
    )
    client.post(HOOK, json={"action": "PROJECT_UPDATED", "project": {"id": result.ls_project_id}}, headers=hook_headers)
    assert _process(app) == 2
    events = _events(app)
    assert "not linked" in events[0].error and events[1].error is None and all(e.processed for e in events)
    assert _records(app) == []


def test_unknown_labels_are_recorded_as_an_error_not_a_crash(linked, fake_ls, hook_headers):
    app, _ = linked
    result = [
        {
            "from_name": "kp",
            "to_name": "image",
            "type": "keypointlabels",
            "original_width": 100,
            "original_height": 100,
            "value": {"x": 1.0, "y": 2.0, "width": 0.75, "keypointlabels": ["Tail"]},
        }
    ]
    app.test_client().post(HOOK, json=fake_ls.annotate(_task(fake_ls), result), headers=hook_headers)
    _process(app)
    [record] = _records(app)
    assert record.keypoint_count == 0 and "Tail" in record.error


def test_old_processed_events_are_pruned(linked, fake_ls, hook_headers):
    import datetime as dt

    from sqlalchemy import update

    from backend.services.events import prune_inbox

    app, _ = linked
    client = app.test_client()
    for index in range(3):
        client.post(HOOK, json=fake_ls.annotate(_task(fake_ls, index), []), headers=hook_headers)
    _process(app)
    client.post(HOOK, json=fake_ls.annotate(_task(fake_ls, 3), []), headers=hook_headers)  # not processed yet
    services = app.extensions["vl4pose"]
    with services.db.session() as session:
        session.execute(update(WebhookEvent).values(received_at=dt.datetime(2020, 1, 1)))
    assert prune_inbox(services.db, services.settings.inbox_keep_days) == 3
    [left] = _events(app)
    assert not left.processed


def test_an_event_without_its_task_gets_the_image_from_the_next_reconcile(linked, fake_ls, hook_headers):
    from backend.services.reconcile import reconcile

    app, result = linked
    body = fake_ls.annotate(_task(fake_ls), [])
    body.pop("task")
    app.test_client().post(HOOK, json=body, headers=hook_headers)
    _process(app)
    assert _records(app)[0].image_url == ""
    assert reconcile(app.extensions["vl4pose"], result.project_id)["changed"] == 0
    [record] = _records(app)
    assert record.image_url == fake_ls.tasks[record.task_id]["data"]["image"]
