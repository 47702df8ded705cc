"""Contract tests: every captured Label Studio 1.23.2 request to an ML backend, replayed through the
Flask test client, and every field of the answer checked.

The captures were recorded with a two-label config (Nose, Tail) and images under ``set1/``. Replayed
verbatim, their configs must be refused with a clear 4xx; replayed with our LSP config and LSPET
images (everything else untouched) they must get complete answers.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from ml_helpers import LSP_CONFIG, TOKEN, capture

LSP_LABELS = set(re.findall(r'<Label value="([^"]+)"', LSP_CONFIG))
SKIP_HEADERS = {"host", "content-length", "connection", "accept-encoding", "content-type"}


def replay(client, name: str, body: dict | None = None):
    """Send a capture (or ``body`` in its place) with the captured method, path and headers."""
    record = capture(name)
    headers = {k: v for k, v in record["headers"].items() if k.lower() not in SKIP_HEADERS}
    payload = record["json"] if body is None else body
    if record["method"] == "GET":
        return client.get(record["path"], headers=headers)
    return client.post(record["path"], json=payload, headers=headers)


def with_lspet(body: dict, server_url: str | None = None) -> dict:
    """The capture with our LSP config and LSPET images (``set1/imgN.png`` -> ``lspet/images/im0000N.jpg``)."""
    text = json.dumps(body)
    text = re.sub(r"set1/img(\d+)\.png", lambda m: f"lspet/images/im{int(m.group(1)):05d}.jpg", text)
    out = json.loads(text)
    for key in ("label_config", "schema"):
        if key in out:
            out[key] = LSP_CONFIG
    if server_url and "hostname" in out:
        out["hostname"], out["access_token"] = server_url, TOKEN
    return out


def connect(client, server_url: str, project: str) -> None:
    """/setup for the capture's project, as Label Studio does before every /predict."""
    body = with_lspet(capture("02_setup_POST")["json"], server_url)
    body["project"] = project
    assert client.post("/setup", json=body).status_code == 200


def check_keypoint_result(item: dict, size: tuple[int, int]) -> None:
    assert set(item) == {"id", "from_name", "to_name", "type", "original_width", "original_height",
                         "image_rotation", "value", "score"}
    assert isinstance(item["id"], str) and item["id"]
    assert (item["from_name"], item["to_name"], item["type"]) == ("kp", "image", "keypointlabels")
    assert (item["original_width"], item["original_height"]) == size
    assert item["image_rotation"] == 0
    value = item["value"]
    assert set(value) == {"x", "y", "width", "keypointlabels"}
    assert 0.0 <= value["x"] <= 100.0 and 0.0 <= value["y"] <= 100.0
    assert value["width"] == 0.75
    assert len(value["keypointlabels"]) == 1 and value["keypointlabels"][0] in LSP_LABELS
    assert 0.0 <= item["score"] <= 1.0


def check_task_predictions(entry: list, size: tuple[int, int], version: str = "tiny-v1") -> None:
    assert isinstance(entry, list) and len(entry) == 2
    refined, raw = entry
    assert set(refined) == set(raw) == {"result", "score", "model_version"}
    assert refined["model_version"] == version and raw["model_version"] == f"{version}-raw"
    assert 0.0 < refined["score"] < 1.0 and raw["score"] == refined["score"]
    for prediction in entry:
        labels = [r["value"]["keypointlabels"][0] for r in prediction["result"]]
        assert len(labels) == len(set(labels))
        ids = [r["id"] for r in prediction["result"]]
        assert len(ids) == len(set(ids))
        for item in prediction["result"]:
            check_keypoint_result(item, size)


@pytest.mark.parametrize("name", ["01_health_GET", "16_health_GET_without_sentry_headers"])
def test_health_captures(app, client, name):
    from flask.testing import FlaskClient

    response = replay(FlaskClient(app), name)  # Label Studio's connection check, without credentials
    assert response.status_code == 200
    assert response.json == {"status": "UP", "model_class": "VL4Pose"}  # nothing more without credentials
    response = replay(client, name)  # with the backend's credentials: every linked project's model
    assert response.status_code == 200
    seven = response.json["projects"]["7"]
    assert seven == {"model_version": "tiny-v1", "model_loaded": seven["model_loaded"], "skeleton": seven["skeleton"],
                     "model_error": None}
    assert seven["skeleton"] in (None, "lsp14")


def test_setup_capture_verbatim_is_refused_naming_labels(client):
    response = replay(client, "02_setup_POST")
    assert response.status_code == 422
    body = response.json
    assert body["error"] == "unknown_labels"
    assert body["unknown"] == ["Nose", "Tail"]
    assert body["expected"][:3] == ["right_ankle", "right_knee", "right_hip"] and len(body["expected"]) == 14
    assert body["skeleton"] == "lsp14"
    assert "Nose" in body["message"] and "Tail" in body["message"]
    assert "0123456789abcdef" not in json.dumps(body)  # the access token never appears in an answer


def test_setup_capture_with_lsp_config(client, image_server):
    response = replay(client, "02_setup_POST", with_lspet(capture("02_setup_POST")["json"], image_server.url))
    assert response.status_code == 200
    assert response.json == {"model_version": "tiny-v1", "skeleton": "lsp14"}


@pytest.mark.parametrize("name", ["03_predict_on_task_open", "04_predict_batch_dm", "15_predict_batch_2_tasks",
                                  "10_predict_interactive", "10b_predict_interactive"])
def test_predict_capture_verbatim_is_refused_naming_labels(client, name):
    response = replay(client, name)
    assert response.status_code == 422
    assert response.json["error"] == "unknown_labels" and response.json["unknown"] == ["Nose", "Tail"]


@pytest.mark.parametrize("name", ["03_predict_on_task_open", "04_predict_batch_dm", "15_predict_batch_2_tasks"])
def test_predict_capture_with_lsp_config(client, image_server, name, lspet_dir, model_registry):
    from vl4pose.data.sample import image_size
    from vl4pose.predictor import Predictor

    body = with_lspet(capture(name)["json"])
    connect(client, image_server.url, body["project"])
    response = replay(client, name, body)
    assert response.status_code == 200
    answer = response.json
    assert set(answer) == {"results", "model_version"} and answer["model_version"] == "tiny-v1"
    assert len(answer["results"]) == len(body["tasks"])
    files = [lspet_dir / "images" / re.search(r"im\d+\.jpg", t["data"]["image"]).group(0) for t in body["tasks"]]
    expected = Predictor(model_registry.path("tiny-v1")).predict_batch(files)
    for entry, path, prediction in zip(answer["results"], files, expected):
        size = image_size(path)
        check_task_predictions(entry, size)
        assert entry[0]["score"] == pytest.approx(prediction.score, abs=1e-6)
        placed = {prediction.keypoint_names[i] for i in np.flatnonzero(prediction.placed)}
        got = {r["value"]["keypointlabels"][0].lower().replace(" ", "_"): r for r in entry[0]["result"]}
        assert set(got) == placed
        for name_, item in got.items():
            i = prediction.keypoint_names.index(name_)
            x, y = item["value"]["x"] * size[0] / 100, item["value"]["y"] * size[1] / 100
            expected_xy = np.clip(prediction.refined[i], 0, size)
            assert np.allclose((x, y), expected_xy, atol=0.5)
            assert item["score"] == pytest.approx(prediction.confidence[i], abs=1e-6)


@pytest.mark.parametrize("name", ["10_predict_interactive", "10b_predict_interactive"])
def test_interactive_capture_with_lsp_config(client, image_server, name, lspet_dir):
    from vl4pose.data.sample import image_size

    body = with_lspet(capture(name)["json"])
    size = image_size(lspet_dir / "images" / re.search(r"im\d+\.jpg", body["tasks"][0]["data"]["image"]).group(0))
    connect(client, image_server.url, body["project"])
    click = body["params"]["context"]["result"][0]
    for key in ("keypointlabels", "labels"):
        if key in click["value"]:
            click["value"][key] = ["Left Wrist"]
    response = replay(client, name, body)
    assert response.status_code == 200
    answer = response.json
    assert set(answer) == {"results", "model_version"} and answer["model_version"] == "tiny-v1"
    assert len(answer["results"]) == 1
    suggestion = answer["results"][0]
    assert set(suggestion) == {"result", "score", "model_version"} and suggestion["model_version"] == "tiny-v1"
    assert 0.0 < suggestion["score"] < 1.0
    labels = [r["value"]["keypointlabels"][0] for r in suggestion["result"]]
    assert len(labels) == len(set(labels))  # one suggestion per label, the clicked one at the click
    [clicked] = [r["value"] for r in suggestion["result"] if r["value"]["keypointlabels"] == ["Left Wrist"]]
    assert (clicked["x"], clicked["y"]) == (click["value"]["x"], click["value"]["y"])
    for item in suggestion["result"]:
        check_keypoint_result(item, size)  # the LSPET image's own size, not the capture's 200x100


FORWARDED = ["05_webhook_START_TRAINING_from_train_button", "07_webhook_START_TRAINING_on_annotation_submit",
             "08_webhook_ANNOTATION_CREATED", "09_webhook_ANNOTATION_UPDATED", "13_webhook_TASKS_CREATED"]


@pytest.mark.parametrize("name", FORWARDED + ["06_webhook_PROJECT_UPDATED"])
def test_webhook_captures_answer_at_once(client, name):
    response = replay(client, name)
    assert response.status_code == 200
    assert response.json == {"status": "ok", "action": capture(name)["json"]["action"], "forwarded": False}


def test_legacy_train_capture(client):
    response = replay(client, "12_legacy_train_POST_when_flag_off")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "job": None, "forwarded": False}


def test_versions_capture(client):
    response = replay(client, "14_versions_GET")  # Label Studio names no project here
    assert response.status_code == 200
    assert response.json == {"versions": ["tiny-v1"], "current": None}
    assert client.get("/versions?project=7.1795501997").json == {"versions": ["tiny-v1"], "current": "tiny-v1"}
    assert client.get("/versions?project=4242.1").json["current"] is None  # not linked
