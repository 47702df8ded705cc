"""The JSON API and the dashboard: authentication, login sessions with CSRF, input validation, CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from coord_fakes import REPO, TOKEN


@pytest.fixture
def app(make_app, link):
    app = make_app(queue="memory")
    link(app, limit=4)
    return app


@pytest.mark.parametrize(
    "path",
    [
        "/api/projects",
        "/api/projects/1",
        "/api/projects/1/rounds",
        "/api/jobs/1",
        "/api/projects/1/queue",
        "/api/projects/1/tasks/1/pose.png",
    ],
)
def test_api_needs_the_token(app, path):
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Token {TOKEN}"}):
        response = client.get(path, headers=headers)
        assert response.status_code == 401 and response.json["error"] == "unauthorized"


def test_api_answers_with_the_token(app, auth):
    client = app.test_client()
    [project] = client.get("/api/projects", headers=auth).json["projects"]
    assert project["skeleton"] == "lsp14" and project["current_round"]["number"] == 1
    report = client.get(f"/api/projects/{project['id']}", headers=auth).json
    assert report["current_round"]["state"] == "open" and report["queue"] == [] and report["current_job"] is None
    assert client.get("/api/projects/99", headers=auth).json["error"] == "not_found"
    assert client.get("/api/jobs/99", headers=auth).status_code == 404
    assert client.get(f"/api/projects/{project['id']}/queue?limit=abc", headers=auth).status_code == 400
    assert client.get("/api/health").json["ok"] is True
    assert client.get("/api/nothing", headers=auth).json["error"] == "not_found"


@pytest.mark.parametrize(
    "body, fragment",
    [
        ([], "JSON object"),
        ({"imagez": "/x"}, "unknown fields ['imagez']"),
        ({"images": 5}, "'images' must be str"),
        ({"images": "/no/such/folder"}, "does not exist"),
        ({"skeleton": "octopus8", "images": "/tmp"}, "unknown skeleton"),
        ({"dataset": "lspet"}, "dataset and data go together"),
        ({"images": "/tmp", "round_budget": 0}, "round_budget must be at least 1"),
        ({"images": "/tmp", "round_budget": True}, "'round_budget' must be int"),
        ({"images": "/tmp", "labels": "maybe"}, "labels must be one of"),
        ({}, "nothing to link"),
        ({"project_id": 12345}, "refused (404)"),
    ],
)
def test_linking_through_the_api_validates_its_input(app, auth, body, fragment):
    response = app.test_client().post("/api/projects", json=body, headers=auth)
    assert response.status_code == 400, response.json
    assert fragment in response.json["message"] and "Traceback" not in response.get_data(as_text=True)


def test_dashboard_login_session_and_csrf(app):
    client = app.test_client()
    first = client.get("/")
    assert first.status_code == 302 and "/login" in first.headers["Location"]
    assert client.post("/login", data={"token": "wrong"}).status_code == 401
    assert client.post("/login", data={"token": TOKEN, "next": "//evil.example"}).headers["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200 and "unit test" in page.get_data(as_text=True)
    project = client.get("/projects/1")
    html = project.get_data(as_text=True)
    assert project.status_code == 200 and "Round 1" in html and "Close round now" in html
    assert client.post("/projects/1/close").status_code == 403  # no CSRF token
    assert client.post("/api/projects/1/rounds/close").json["error"] == "forbidden"
    with client.session_transaction() as session:
        csrf = session["csrf"]
    closed = client.post("/projects/1/close", data={"csrf_token": csrf})
    assert closed.status_code == 302
    assert "training job" in client.get("/projects/1").get_data(as_text=True)
    client.post("/logout", data={"csrf_token": csrf})
    assert client.get("/api/projects").status_code == 401


def _cli(*args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VL4POSE_") or k == "VL4POSE_SHARED_DATA"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "backend", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_refuses_to_start_without_secrets_and_manages_the_schema(tmp_path):
    missing = _cli("link", "--images", str(tmp_path))
    assert missing.returncode == 2 and "VL4POSE_WEBHOOK_SECRET" in missing.stderr
    env = {"VL4POSE_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite'}", "VL4POSE_STORAGE_DIR": str(tmp_path)}
    upgraded = _cli("db", "upgrade", env_extra=env)
    assert upgraded.returncode == 0 and re.search(r"schema revision: \d{4}\b", upgraded.stdout)
    status = _cli("status", env_extra={**env, "VL4POSE_AUTO_MIGRATE": "0"})
    assert status.returncode == 0, status.stderr
    bad = _cli("close-round", "7", env_extra={**env, "VL4POSE_WEBHOOK_SECRET": "s" * 20, "VL4POSE_API_TOKEN": "t" * 20})
    assert bad.returncode == 1 and "project 7 is not linked" in bad.stderr
