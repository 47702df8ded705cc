"""Security: HTTP Basic auth by default, bounded requests, the access token kept on disk (0600) and out of logs and
answers, a label config validated before anything is stored."""

from __future__ import annotations

import json
import logging
import stat

import pytest
from flask.testing import FlaskClient
from ml_helpers import LSP_CONFIG, TOKEN, basic, lspet_task, predict_body


@pytest.fixture
def locked(make_app):
    """A client without the backend's credentials (``FlaskClient`` sends none)."""
    return FlaskClient(make_app(basic_auth_user="studio", basic_auth_password="s3cret-pass"))


@pytest.mark.parametrize("headers", [{}, basic("studio", "wrong"), basic("other", "s3cret-pass"),
                                     {"Authorization": "Bearer s3cret-pass"}, {"Authorization": "Basic !!!"}])
@pytest.mark.parametrize("method,path", [("POST", "/setup"), ("POST", "/predict"), ("POST", "/webhook"),
                                         ("POST", "/train"), ("GET", "/versions"), ("GET", "/nowhere")])
def test_requests_without_the_right_credentials_are_401(locked, headers, method, path):
    body = {"tasks": [], "project": "7.1", "schema": LSP_CONFIG, "hostname": "http://127.0.0.1:1"}
    response = locked.open(path, method=method, headers=headers, json=body if method == "POST" else None)
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert "s3cret-pass" not in response.get_data(as_text=True)


def test_auth_is_on_by_default_and_health_reveals_nothing_without_it(make_app):
    app = make_app()  # the test apps get credentials like any deployment; no setting turns auth on
    assert app.extensions["vl4pose_ml_backend"].config.auth_enabled
    anonymous = FlaskClient(app)
    for headers in ({}, basic("studio", "wrong")):
        health = anonymous.get("/health", headers=headers)
        assert health.status_code == 200 and health.json == {"status": "UP", "model_class": "VL4Pose"}
    assert anonymous.post("/setup", json={"project": "7.1", "schema": LSP_CONFIG}).status_code == 401
    assert anonymous.post("/predict", json=predict_body([lspet_task(1, 1)])).status_code == 401
    assert "7" in app.test_client().get("/health").json["projects"]  # with the credentials: the projects


def test_right_credentials_pass(locked):
    response = locked.get("/health", headers=basic("studio", "s3cret-pass"))
    assert response.status_code == 200 and response.json["status"] == "UP" and "projects" in response.json
    response = locked.post("/webhook", json={"action": "PROJECT_UPDATED"}, headers=basic("studio", "s3cret-pass"))
    assert response.status_code == 200


def test_a_label_config_is_validated_before_anything_is_stored(client, tmp_path):
    response = client.post("/setup", json={"project": "7.1", "schema": "<View><Image", "access_token": TOKEN,
                                           "hostname": "http://127.0.0.1:1"})
    assert response.status_code == 400 and response.json["error"] == "invalid_label_config"
    response = client.post("/setup", json={"project": "7.1", "schema": (LSP_CONFIG.replace("Neck", "Tail")),
                                           "hostname": "http://127.0.0.1:1", "access_token": TOKEN})
    assert response.status_code == 422
    assert not (tmp_path / "state" / "projects.json").exists()  # neither hostname nor token was kept
    body = predict_body([lspet_task(1, 1)])
    body.pop("label_config")
    assert client.post("/predict", json=body).status_code == 400  # no config was remembered either


def test_a_project_that_is_not_linked_gets_a_clear_error(client):
    for path, body in (("/setup", {"project": "4242.1", "schema": LSP_CONFIG}),
                       ("/predict", {**predict_body([lspet_task(1, 1)]), "project": "4242.1795501997"})):
        response = client.post(path, json=body)
        assert response.status_code == 404 and response.json["error"] == "project_not_linked"
        assert "project 4242 is not linked" in response.json["message"] and "backend link" in response.json["message"]


def test_oversized_request_body_is_413(make_app):
    client = make_app(max_request_bytes=10_000).test_client()
    body = predict_body([lspet_task(i, 1) for i in range(200)])
    assert len(json.dumps(body)) > 10_000
    response = client.post("/predict", json=body)
    assert response.status_code == 413
    assert response.json["error"] == "request_too_large" and "VL4POSE_MAX_REQUEST_BYTES" in response.json["message"]


def test_unknown_endpoint_and_method_are_json(client):
    assert client.get("/nowhere").json["error"] == "not_found"
    response = client.get("/predict")
    assert response.status_code == 405 and response.json["error"] == "method_not_allowed"


def test_access_details_survive_a_restart_and_stay_private(make_app, image_server, tmp_path, caplog):
    first = make_app().test_client()
    with caplog.at_level(logging.DEBUG):
        assert first.post("/setup", json={"project": "12.1795501997", "schema": LSP_CONFIG,
                                          "hostname": image_server.url, "access_token": TOKEN}).status_code == 200
    store = tmp_path / "state" / "projects.json"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert json.loads(store.read_text())["projects"]["12"]["hostname"] == image_server.url
    assert TOKEN not in caplog.text

    restarted = make_app().test_client()  # a new process would build exactly this from the same storage
    body = predict_body([lspet_task(1, 1)])
    body["project"] = "12.1795501997"
    body["label_config"] = LSP_CONFIG
    results = restarted.post("/predict", json=body).json["results"]
    assert len(results[0]) == 2
    assert image_server.requests[-1][1] == f"Token {TOKEN}"


def test_unreadable_project_store_starts_empty(make_app, tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "projects.json").write_text("{broken")
    client = make_app().test_client()
    assert client.get("/health").status_code == 200


def test_unexpected_errors_are_a_json_500_without_traceback(app, monkeypatch):
    from ml_backend.routes import EXTENSION

    def explode(body):
        raise RuntimeError("internal detail /secret/path")

    monkeypatch.setattr(app.extensions[EXTENSION].predictions, "predict", explode)
    response = app.test_client().post("/predict", json={"tasks": []})
    assert response.status_code == 500
    assert response.json == {"error": "internal_error",
                             "message": "the ML backend failed unexpectedly; its log has the details"}


def test_label_studio_event_posts_without_credentials_are_refused_and_explained_once(locked, caplog, monkeypatch):
    """Label Studio 1.23.2 posts a connected backend's project events to /webhook without its Basic auth (measured in
    the browser test): refused like any request, one explanatory warning, then debug lines (one per annotation)."""
    import ml_backend.routes as routes

    monkeypatch.setattr(routes, "_unsigned_webhooks", 0)
    with caplog.at_level(logging.DEBUG, logger="ml_backend.routes"):
        for _ in range(3):
            assert locked.post("/webhook", json={"action": "ANNOTATION_CREATED"}).status_code == 401
        assert locked.post("/webhook", json={}, headers=basic("studio", "wrong")).status_code == 401
    ours = [r for r in caplog.records if r.name == "ml_backend.routes"]
    warnings = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "without its Basic auth" in warnings[0] and "wrong HTTP Basic" in warnings[1]
    assert sum("so far" in r.getMessage() for r in ours if r.levelno == logging.DEBUG) == 2
