"""/predict: per-task failures stay per task, images are cached and bounded, the token stays with Label Studio."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from ml_helpers import LSP_CONFIG, TOKEN, lspet_task, predict_body

from vl4pose.data.sample import image_size


def test_failures_give_that_task_no_prediction_and_the_others_theirs(connected, image_server, caplog):
    tasks = [
        lspet_task(1, 1),
        {"id": 2, "data": {"image": "/data/local-files/?d=lspet/images/im99999.jpg"}},  # 404
        {"id": 3, "data": {"image": "/corrupt.jpg"}},                                     # not an image
        {"id": 4, "data": {"text": "no image field"}},                                     # no image field
        {"id": 5, "data": {"image": "s3://bucket/key.jpg"}},                                # unsupported scheme
        {"id": 6, "data": {"image": ""}},                                                   # empty
        lspet_task(7, 2),
    ]
    with caplog.at_level(logging.WARNING, logger="ml_backend"):
        response = connected.post("/predict", json=predict_body(tasks))
    assert response.status_code == 200
    results = response.json["results"]
    assert len(results) == len(tasks)
    assert [len(entry) for entry in results] == [2, 0, 0, 0, 0, 0, 2]
    log = caplog.text
    for reason in ("task 2: no prediction: image", "HTTP 404", "task 3: no prediction", "cannot be",
                   "task 4: no prediction", "data['image']", "task 5: no prediction", "s3", "task 6: no prediction"):
        assert reason in log
    assert TOKEN not in log


def test_refused_token_is_a_per_task_failure(client, image_server, caplog):
    client.post("/setup", json={"project": "7.1", "schema": LSP_CONFIG, "hostname": image_server.url,
                                "access_token": "wrong-token"})
    with caplog.at_level(logging.WARNING, logger="ml_backend"):
        response = client.post("/predict", json=predict_body([lspet_task(1, 1)]))
    assert response.status_code == 200 and response.json["results"] == [[]]
    assert "HTTP 401" in caplog.text and "wrong-token" not in caplog.text


def test_images_are_fetched_once_then_served_from_the_disk_cache(connected, image_server, tmp_path):
    body = predict_body([lspet_task(1, 3), lspet_task(2, 4)])
    first = connected.post("/predict", json=body).json
    second = connected.post("/predict", json=body).json
    assert image_server.count("im00003.jpg") == 1 and image_server.count("im00004.jpg") == 1
    assert [[p["score"] for p in e] for e in first["results"]] == [[p["score"] for p in e] for e in second["results"]]
    assert len(list((tmp_path / "cache").glob("*/*"))) == 2


def test_token_goes_to_label_studio_only(make_app, image_server):
    """An absolute URL on another origin (allow-listed: it is on loopback) is fetched without the token."""
    client = make_app(fetch_allow_hosts="localhost").test_client()
    client.post("/setup", json={"project": "7.1", "schema": LSP_CONFIG, "hostname": image_server.url,
                                "access_token": TOKEN})
    other = image_server.url.replace("127.0.0.1", "localhost")
    tasks = [{"id": 1, "data": {"image": f"{image_server.url}/small.png"}},
             {"id": 2, "data": {"image": f"{other}/small.png"}}]
    results = client.post("/predict", json=predict_body(tasks)).json["results"]
    sent = [auth for path, auth in image_server.requests if path.startswith("/small.png")]
    assert sorted(sent, key=str) == [None, f"Token {TOKEN}"]  # fetched in parallel: any order
    assert len(results[0]) == 2 and results[1] == []  # the other origin got no token, so the server refused it


def test_too_many_pixels_or_bytes_are_refused_per_task(make_app, image_server, caplog):
    client = make_app(max_image_pixels=300 * 300, max_image_bytes=1_000_000).test_client()
    client.post("/setup", json={"project": "7.1", "schema": LSP_CONFIG, "hostname": image_server.url,
                                "access_token": TOKEN})
    tasks = [{"id": 1, "data": {"image": "/big.png"}}, {"id": 2, "data": {"image": "/small.png"}}]
    with caplog.at_level(logging.WARNING, logger="ml_backend"):
        results = client.post("/predict", json=predict_body(tasks)).json["results"]
    assert results[0] == [] and len(results[1]) == 2
    assert "400x300 pixels, over VL4POSE_MAX_IMAGE_PIXELS" in caplog.text

    client = make_app(max_image_bytes=2000).test_client()
    client.post("/setup", json={"project": "7.1", "schema": LSP_CONFIG, "hostname": image_server.url,
                                "access_token": TOKEN})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ml_backend"):
        results = client.post("/predict", json=predict_body([lspet_task(1, 5)])).json["results"]
    assert results == [[]] and "VL4POSE_MAX_IMAGE_BYTES=2000" in caplog.text


def test_relative_url_without_any_hostname_is_a_per_task_failure(client, caplog):
    with caplog.at_level(logging.WARNING, logger="ml_backend"):
        response = client.post("/predict", json=predict_body([lspet_task(1, 1)]))
    assert response.status_code == 200 and response.json["results"] == [[]]
    assert "no Label Studio hostname is known" in caplog.text


def test_fallback_label_studio_url_and_token_from_settings(make_app, image_server):
    client = make_app(label_studio_url=image_server.url, label_studio_token=TOKEN).test_client()
    results = client.post("/predict", json=predict_body([lspet_task(1, 1)])).json["results"]
    assert len(results[0]) == 2


def test_keypoints_the_model_does_not_place_are_left_out(connected, model_registry, lspet_dir):
    from vl4pose.predictor import Predictor

    predictor = Predictor(model_registry.path("tiny-v1"))
    numbers = [1, 2, 3, 4, 5, 6]
    results = connected.post("/predict", json=predict_body([lspet_task(n, n) for n in numbers])).json["results"]
    for n, entry in zip(numbers, results):
        path = lspet_dir / "images" / f"im{n:05d}.jpg"
        prediction = predictor.predict(path)
        for item, xy in ((entry[0], prediction.refined), (entry[1], prediction.raw)):
            names = [r["value"]["keypointlabels"][0].lower().replace(" ", "_") for r in item["result"]]
            assert sorted(names) == sorted(prediction.keypoint_names[i] for i in np.flatnonzero(prediction.placed))
            w, h = image_size(path)
            for r, name in zip(item["result"], names):
                i = prediction.keypoint_names.index(name)
                got = (r["value"]["x"] * w / 100, r["value"]["y"] * h / 100)
                assert np.allclose(got, np.clip(xy[i], 0, (w, h)), atol=0.5)


def test_no_published_model_answers_empty_lists_and_health_still_200(make_app, tmp_path, caplog):
    from vl4pose.registry import ModelRegistry

    ModelRegistry(tmp_path / "no-models").link_project("7")  # linked, nothing published yet
    client = make_app(models_dir=tmp_path / "no-models").test_client()
    health = client.get("/health")
    assert health.status_code == 200 and health.json["projects"]["7"]["model_version"] is None
    with caplog.at_level(logging.WARNING, logger="ml_backend"):
        response = client.post("/predict", json=predict_body([lspet_task(1, 1), lspet_task(2, 2)]))
    assert response.status_code == 200
    assert response.json == {"results": [[], []], "model_version": None}
    assert "project 7 has no model version yet" in caplog.text
    assert client.get("/versions?project=7.1").json == {"versions": [], "current": None}


def test_label_config_from_setup_is_used_when_predict_has_none(connected):
    body = predict_body([lspet_task(1, 1)])
    body.pop("label_config")
    response = connected.post("/predict", json=body)
    assert response.status_code == 200 and len(response.json["results"][0]) == 2


@pytest.mark.parametrize("body", [
    None, [], {"tasks": "not a list"}, {"tasks": [1, 2]}, {"tasks": [{"id": 1}], "project": "7.1", "params": {}},
])
def test_malformed_predict_bodies_are_400(client, body):
    response = client.post("/predict", json=body) if body is not None else client.post(
        "/predict", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json["error"] in ("invalid_json", "invalid_request") and response.json["message"]


def test_large_batches_are_split_into_chunks_in_task_order(make_app, image_server):
    client = make_app(predict_chunk=2).test_client()
    client.post("/setup", json={"project": "7.1", "schema": LSP_CONFIG, "hostname": image_server.url,
                                "access_token": TOKEN})
    numbers = [6, 5, 4, 3, 2]
    chunked = client.post("/predict", json=predict_body([lspet_task(n, n) for n in numbers])).json["results"]
    single = [client.post("/predict", json=predict_body([lspet_task(n, n)])).json["results"][0] for n in numbers]
    got, want = np.array([e[0]["score"] for e in chunked]), np.array([e[0]["score"] for e in single])
    # the batch size changes the network's float sums, which the tiny model's flat heatmaps amplify in the
    # likelihood (0.0043 apart on an AMD EPYC, 2026-12-02); the task order shows in each result's image size
    assert got == pytest.approx(want, abs=1e-2)
    def sizes(entries: list) -> list:  # the image size of each entry's first keypoint, [] where none is placed
        return [[(r["original_width"], r["original_height"]) for r in e[0]["result"][:1]] for e in entries]
    assert sizes(chunked) == sizes(single)
