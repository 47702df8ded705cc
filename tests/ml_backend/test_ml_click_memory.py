"""A task's earlier interactive clicks: clamped by every later re-solve, never suggested again, forgotten on submit.

Label Studio 1.23.2 sends a later click's request without the earlier clicks (accepting a click's suggestions deletes
the click's dynamic region): the ML backend keeps them per task (``ml_backend/clickmemory.py``).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from ml_helpers import LSP_CONFIG, TOKEN, capture, keypoint_click, lspet_task, place_every_keypoint, predict_body

from ml_backend.clickmemory import ClickMemory, Kept, answer_accepted, forget_for_event
from ml_backend.routes import EXTENSION
from vl4pose.data.sample import image_size

NECK, ANKLE = (40.0, 30.0), (60.0, 90.0)


def _answer(client, lspet_dir, label: str, xy: tuple[float, float], task_id: int = 1, after: dict | None = None,
            **extra) -> dict[str, tuple]:
    """Label -> (x, y) percent of the interactive answer to one click on task ``task_id`` (image 1). ``after``: the
    answer accepted before the click (the draft's region of the clicked label, which Label Studio sends along, is
    where that answer put it)."""
    w, h = image_size(lspet_dir / "images" / "im00001.jpg")
    context = [keypoint_click(label, *xy, w, h, **extra)]
    if after is not None and label in after:
        region = {**keypoint_click(label, *after[label], w, h), "id": "draft1", "origin": "prediction"}
        del region["is_positive"]
        context.insert(0, region)
    response = client.post("/predict", json=predict_body([lspet_task(task_id, 1)], {"result": context}))
    assert response.status_code == 200, response.json
    return {r["value"]["keypointlabels"][0]: (r["value"]["x"], r["value"]["y"])
            for r in response.json["results"][0]["result"]}


def test_a_later_click_keeps_the_earlier_one_clamped_and_leaves_it_where_it_is(connected, lspet_dir, monkeypatch):
    import ml_backend.predictions as predictions

    place_every_keypoint(monkeypatch, True)  # every answer suggests every label (the tiny model's choice varies)
    solve, calls = predictions.resolve_clicked, []

    def recording(pipeline, analysis, clamped, *args, **kwargs):
        calls.append((clamped, prediction := solve(pipeline, analysis, clamped, *args, **kwargs)))
        return prediction

    monkeypatch.setattr(predictions, "resolve_clicked", recording)
    w, h = image_size(lspet_dir / "images" / "im00001.jpg")
    first = _answer(connected, lspet_dir, "Neck", NECK)
    assert first["Neck"] == NECK
    second = _answer(connected, lspet_dir, "Right Ankle", ANKLE, after=first)
    assert "Neck" not in second, "accepting all must not move the earlier click: its label is not suggested again"
    assert second["Right Ankle"] == ANKLE
    clamped, solved = calls[-1]  # the second re-solve clamps both clicks, in image pixels
    names = solved.keypoint_names
    assert sorted(names[i] for i in clamped) == ["neck", "right_ankle"]
    for name, (x, y) in (("neck", NECK), ("right_ankle", ANKLE)):
        assert clamped[names.index(name)] == pytest.approx((x * w / 100, y * h / 100))
    for label, xy in second.items():  # the rest: that re-solve's positions
        if label != "Right Ankle":
            i = names.index(label.lower().replace(" ", "_"))
            assert np.allclose(np.array(xy) * (w, h) / 100, np.clip(solved.refined[i], 0, (w, h)), atol=0.5), label

    again = _answer(connected, lspet_dir, "Neck", (45.0, 32.0), after={**second, "Neck": NECK})  # clicked again
    assert again["Neck"] == (45.0, 32.0)  # the new click wins
    assert again.get("Right Ankle", ANKLE) == ANKLE  # nothing tells the second answer was accepted: at its click


def test_clicks_not_yet_accepted_are_suggested_at_their_place(connected, lspet_dir, monkeypatch):
    """A click before the last answer was accepted: the draft's region of the clicked label is not where that answer
    put it, so the earlier click is still pending (accepting all will delete its dynamic region) and is suggested
    where it was put; a click settled by an accepted answer is never suggested again, and no earlier click is ever
    suggested anywhere but at its click."""
    place_every_keypoint(monkeypatch, True)  # every answer suggests every label
    first = _answer(connected, lspet_dir, "Neck", NECK)
    second = _answer(connected, lspet_dir, "Right Ankle", ANKLE, after=first)  # the first answer accepted
    assert "Neck" not in second
    served = {"Left Wrist": (1.0, 1.0)}  # the draft's own region: the second answer not accepted
    third = _answer(connected, lspet_dir, "Left Wrist", (20.0, 50.0), after=served)
    assert "Neck" not in third and third["Right Ankle"] == ANKLE and third["Left Wrist"] == (20.0, 50.0)
    assert second["Left Wrist"] != served["Left Wrist"]
    assert _answer(connected, lspet_dir, "Right Knee", (30.0, 70.0), task_id=2)["Right Knee"] == (30.0, 70.0)
    fourth = _answer(connected, lspet_dir, "Right Knee", (30.0, 70.0), after=third)  # the third answer accepted
    assert "Neck" not in fourth and fourth["Right Knee"] == (30.0, 70.0)
    # accepted, unless the third answer left the knee where an earlier one had it (then they are suggested again)
    assert fourth.get("Right Ankle", ANKLE) == ANKLE and fourth.get("Left Wrist", (20.0, 50.0)) == (20.0, 50.0)


def test_the_memory_is_per_task_and_off_at_zero_seconds(make_app, connected, image_server, lspet_dir):
    _answer(connected, lspet_dir, "Neck", NECK, task_id=1)
    assert _answer(connected, lspet_dir, "Right Ankle", ANKLE, task_id=2).get("Neck") != NECK  # another task

    client = make_app(click_memory_seconds=0).test_client()
    client.post("/setup", json={"project": "7.1", "schema": LSP_CONFIG, "hostname": image_server.url,
                                "access_token": TOKEN})
    _answer(client, lspet_dir, "Neck", NECK, task_id=3)
    assert _answer(client, lspet_dir, "Right Ankle", ANKLE, task_id=3).get("Neck") != NECK


def test_an_api_context_without_positive_clicks_is_not_remembered(connected, lspet_dir):
    """A caller that sends its clicks without ``is_positive`` sends all of them each time: nothing is added."""
    _answer(connected, lspet_dir, "Neck", NECK, is_positive=None)
    assert _answer(connected, lspet_dir, "Right Ankle", ANKLE, is_positive=None).get("Neck") != NECK


@pytest.mark.parametrize("event", ["08_webhook_ANNOTATION_CREATED", "09_webhook_ANNOTATION_UPDATED",
                                   "11c_coordinator_webhook_ANNOTATIONS_DELETED"])
def test_submitting_or_deleting_the_annotation_forgets_the_clicks(connected, lspet_dir, event):
    _answer(connected, lspet_dir, "Neck", NECK)
    body = capture(event)["json"]
    body["project"]["id"] = 7
    if "task" in body:
        body["task"]["id"] = 1
    response = connected.post("/webhook", json=body)
    assert response.status_code == 200 and response.json["status"] == "ok"
    assert _answer(connected, lspet_dir, "Right Ankle", ANKLE).get("Neck") != NECK


def test_every_worker_sees_the_clicks_and_old_ones_expire(make_app, connected, image_server, lspet_dir, monkeypatch):
    """Two apps on one state folder are two gunicorn workers; a task untouched for longer than the setting is
    forgotten."""
    place_every_keypoint(monkeypatch, True)
    _answer(connected, lspet_dir, "Neck", NECK)
    other = make_app().test_client()
    other.post("/setup", json={"project": "7.1", "schema": LSP_CONFIG, "hostname": image_server.url,
                               "access_token": TOKEN})
    assert _answer(other, lspet_dir, "Right Ankle", ANKLE)["Neck"] == NECK  # pending: at the click

    memory = connected.application.extensions[EXTENSION].predictions.memory
    [path] = memory.root.glob("7-1.json")
    old = time.time() - memory.ttl - 1
    os.utime(path, (old, old))
    assert _answer(connected, lspet_dir, "Right Ankle", ANKLE).get("Neck") != NECK


def test_a_task_whose_annotations_changed_starts_afresh(connected, lspet_dir, monkeypatch):
    """The request's task lists its annotations: one submitted (or updated, or deleted) since the clicks means the
    annotator moved on, even when no webhook reached the backend."""
    place_every_keypoint(monkeypatch, True)  # the second click (nothing accepted) suggests the first at its place
    w, h = image_size(lspet_dir / "images" / "im00001.jpg")
    task = lspet_task(1, 1)

    def answer(label: str, xy: tuple[float, float]) -> dict[str, tuple]:
        body = predict_body([task], {"result": [keypoint_click(label, *xy, w, h)]})
        return {r["value"]["keypointlabels"][0]: (r["value"]["x"], r["value"]["y"])
                for r in connected.post("/predict", json=body).json["results"][0]["result"]}

    answer("Neck", NECK)
    task["drafts"] = [{"id": 3, "result": []}]  # a draft saved meanwhile changes nothing
    assert answer("Right Ankle", ANKLE)["Neck"] == NECK
    task["annotations"] = [{"id": 41, "updated_at": "2026-12-01T05:00:00Z", "result": []}]
    assert answer("Right Ankle", ANKLE).get("Neck") != NECK
    answer("Neck", NECK)
    task["annotations"][0]["updated_at"] = "2026-12-01T05:10:00Z"
    assert answer("Right Ankle", ANKLE).get("Neck") != NECK


def test_the_memory_refuses_odd_ids_and_survives_a_damaged_file(tmp_path, caplog):
    memory = ClickMemory(tmp_path / "clicks", ttl=60)
    click = keypoint_click("Neck", *NECK, 100, 100)
    for project, task in (("7", "../../etc"), ("7/..", 1), ("7", None), (None, 1), ("7", True)):
        memory.remember(project, {"id": task}, [click], {}, [])
        assert memory.recall(project, {"id": task}).clicks == []
    assert not (tmp_path / "clicks").exists()
    memory.remember("7", {"id": 1}, [click], {"Neck": list(NECK)}, ["Tail"])
    kept = memory.recall("7", {"id": 1})
    assert [item["value"]["x"] for item in kept.clicks] == [NECK[0]] and kept.suggested == {"Neck": list(NECK)}
    assert kept.settled == ["Tail"]
    (tmp_path / "clicks" / "7-1.json").write_text(json.dumps({"annotations": [], "clicks": [], "settled": [],
                                                               "suggested": {"Neck": "here", "Tail": [1, True]}}))
    assert memory.recall("7", {"id": 1}).suggested == {}  # odd places are dropped, not fatal
    (tmp_path / "clicks" / "7-1.json").write_text("{not json")
    assert memory.recall("7", {"id": 1}).clicks == [] and "unreadable" in caplog.text
    memory.remember("7", {"id": 2}, [click], {}, [])
    assert forget_for_event(memory, {"action": "TASKS_DELETED", "project": {"id": 7}, "tasks": [{"id": 2}]}) == 1
    assert forget_for_event(memory, {"action": "ANNOTATION_CREATED", "project": "junk", "task": [1]}) == 0
    assert memory.recall("7", {"id": 2}).clicks == []


def test_an_answer_reads_as_accepted_only_on_positive_evidence():
    kept = Kept([], {"Neck": [40.0, 30.0], "Right Ankle": [60.0, 90.0]}, [], {"Right Ankle": [[60.0, 90.0]]})
    region = keypoint_click("Neck", 40.0, 30.0, 100, 100)
    moved = keypoint_click("Neck", 41.0, 30.0, 100, 100)
    assert answer_accepted(kept, [region], {})
    assert answer_accepted(kept, [moved, region], {})  # any of the label's regions
    assert not answer_accepted(kept, [moved], {})
    assert not answer_accepted(kept, [], {})  # no region of the label: nothing tells
    assert not answer_accepted(kept, [region], {"Neck": [40.0, 30.0]})  # the answer left it where it was served
    ankle = keypoint_click("Right Ankle", 60.0, 90.0, 100, 100)
    assert not answer_accepted(kept, [ankle], {})  # an earlier answer had put it there too
