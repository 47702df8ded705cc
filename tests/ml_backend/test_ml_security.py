"""Security: HTTP Basic auth, bounded requests, the access token kept on disk (0600) and out of logs and answers."""

from __future__ import annotations

import base64
import json
import logging
import stat

import pytest
from ml_helpers import LSP_CONFIG, TOKEN, lspet_task, predict_body


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def locked(make_app):
    return make_app(basic_auth_user="studio", basic_auth_password="s3cret-pass").test_client()


@pytest.mark.parametrize("headers", [{}, basic("studio", "wrong"), basic("other", "s3cret-pass"),
                                     {"Authorization": "Bearer s3cret-pass"}, {"Authorization": "Basic !!!"}])
@pytest.mark.parametrize("method,path", [("GET", "/health"), ("POST", "/setup"), ("POST", "/predict"),
                                         ("POST", "/webhook"), ("GET", "/versions"), ("GET", "/nowhere")])
def test_requests_without_the_right_credentials_are_401(locked, headers, method, path):
    response = locked.open(path, method=method, headers=headers, json={"tasks": []} if method == "POST" else None)
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert "s3cret-pass" not in response.get_data(as_text=True)


def test_right_credentials_pass(locked):
    response = locked.get("/health", headers=basic("studio", "s3cret-pass"))
    assert response.status_code == 200 and response.json["status"] == "UP"
    response = locked.post("/webhook", json={"action": "PROJECT_UPDATED"}, headers=basic("studio", "s3cret-pass"))
    assert response.status_code == 200


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
