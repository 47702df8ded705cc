"""Ids beyond the database's integer range (signed 64-bit) answer a clean 404 on every route with an id, never a
500 (SQLite raised OverflowError), and the largest storable id still reaches the route's own 404."""

from __future__ import annotations

import pytest

BEYOND = 2**63  # one past SQLite's largest integer
HUGE = 10**30


@pytest.fixture
def app(make_app, link):
    app = make_app(queue="memory")
    link(app, limit=2)
    return app


@pytest.mark.parametrize(
    "method, template",
    [
        ("get", "/api/jobs/{id}"),
        ("post", "/api/jobs/{id}/retry"),
        ("get", "/api/projects/{id}"),
        ("get", "/api/projects/{id}/rounds"),
        ("get", "/api/projects/{id}/queue"),
        ("post", "/api/projects/{id}/rounds/close"),
        ("post", "/api/projects/{id}/reconcile"),
        ("get", "/api/projects/{id}/tasks/1/pose.png"),
        ("get", "/api/projects/1/tasks/{id}/pose.png"),
        ("post", "/api/events/{id}/retry"),
        ("post", "/api/events/{id}/dismiss"),
    ],
)
@pytest.mark.parametrize("value", [BEYOND, HUGE])
def test_api_ids_beyond_64_bits_are_a_clean_404(app, auth, method, template, value):
    response = getattr(app.test_client(), method)(template.format(id=value), headers=auth)
    assert response.status_code == 404, response.get_data(as_text=True)
    assert response.json["error"] == "not_found"


@pytest.mark.parametrize(
    "path", ["/api/jobs/{id}", "/api/projects/{id}", "/api/projects/1/tasks/{id}/pose.png", "/api/projects/{id}/queue"]
)
def test_the_largest_storable_id_reaches_the_route(app, auth, path):
    response = app.test_client().get(path.format(id=BEYOND - 1), headers=auth)
    assert response.status_code == 404
    assert str(BEYOND - 1) in response.json["message"]  # the route's own answer, not "no such page"


@pytest.mark.parametrize("template", ["/projects/{id}", "/api/projects/1/tasks/{id}/pose.png"])
def test_dashboard_and_image_ids_beyond_64_bits_are_a_clean_404(app, auth, template):
    response = app.test_client().get(template.format(id=BEYOND), headers=auth)
    assert response.status_code == 404 and "internal" not in response.get_data(as_text=True)


def test_dashboard_forms_with_ids_beyond_64_bits_are_a_clean_404(app):
    from coord_fakes import TOKEN

    client = app.test_client()
    client.post("/login", data={"token": TOKEN})
    with client.session_transaction() as session:
        csrf = session["csrf"]
    for path in (f"/projects/{BEYOND}/close", f"/jobs/{BEYOND}/retry", f"/events/{BEYOND}/retry",
                 f"/events/{BEYOND}/dismiss"):
        assert client.post(path, data={"csrf_token": csrf}).status_code == 404


def test_webhooks_with_ids_beyond_64_bits_are_refused_or_failed_not_a_500(app, hook_headers, auth):
    from backend.services.events import process_pending

    client = app.test_client()
    refused = client.post(
        "/hooks/label-studio",
        json={"action": "ANNOTATION_CREATED", "project": {"id": BEYOND}, "annotation": {"id": 1}},
        headers=hook_headers,
    )
    assert refused.status_code == 400 and "64-bit" in refused.json["message"]
    ls_project = client.get("/api/projects/1", headers=auth).json["project"]["ls_project_id"]
    stored = client.post(
        "/hooks/label-studio",
        json={"action": "ANNOTATION_CREATED", "project": {"id": ls_project}, "annotation": {"id": BEYOND, "task": 1}},
        headers=hook_headers,
    )
    assert stored.status_code == 200
    assert process_pending(app.extensions["vl4pose"].db, app.extensions["vl4pose"].jobs) == 1
    [failed] = client.get("/api/projects/1", headers=auth).json["events"]["failed_events"]
    assert "signed 64-bit" in failed["error"]
