"""Findings 1 and 2 of the hardening issue, reproduced through the app with listeners on 127.0.0.1: Label Studio's
token never reaches another origin (hostile /setup, relative and absolute URLs, redirects) and no cookie is kept."""

from __future__ import annotations

import logging

from ml_helpers import LSP_CONFIG, TOKEN, predict_body

from ml_backend.projects import ProjectStore


def image_task(task_id: int, url: str) -> dict:
    return {"id": task_id, "data": {"image": url}}


def test_a_hostile_setup_gets_no_token_for_its_host(make_app, listeners, caplog):
    studio, attacker = listeners(), listeners()
    attacker_port = attacker.url.rsplit(":", 1)[1]
    for allow in ("", f"127.0.0.1:{attacker_port}"):  # blocked as an internal address; allow-listed: fetched bare
        client = make_app(label_studio_url=studio.url, label_studio_token=TOKEN, fetch_allow_hosts=allow).test_client()
        assert client.post("/setup", json={"project": "7.1", "schema": LSP_CONFIG, "hostname": studio.url,
                                           "access_token": TOKEN}).status_code == 200
        assert client.post("/setup", json={"project": "7.2", "schema": LSP_CONFIG,  # the hostile one: no token
                                           "hostname": attacker.url}).status_code == 200
        tasks = [image_task(1, "/data/upload/1/x.jpg"), image_task(2, f"{attacker.url}/absolute.jpg"),
                 image_task(3, f"{studio.url}/redirect?to={attacker.url}/redirected.jpg")]
        with caplog.at_level(logging.WARNING, logger="ml_backend"):
            response = client.post("/predict", json=predict_body(tasks))
        assert response.status_code == 200
        if not allow:
            assert attacker.requests == [] and "internal address 127.0.0.1" in caplog.text
    assert {r["path"] for r in attacker.requests} == {"/data/upload/1/x.jpg", "/absolute.jpg", "/redirected.jpg"}
    assert attacker.credentials() == [(None, None)] * 3  # no token, no cookie ever arrived there
    assert [r["authorization"] for r in studio.requests] == [f"Token {TOKEN}"] * len(studio.requests)
    assert TOKEN not in caplog.text


def test_an_unlinked_project_fetches_nothing(client, listeners):
    attacker = listeners()
    assert client.post("/setup", json={"project": "999.1", "schema": LSP_CONFIG,
                                       "hostname": attacker.url}).status_code == 404
    body = {**predict_body([image_task(1, "/data/upload/1/x.jpg")]), "project": "999.1"}
    assert client.post("/predict", json=body).status_code == 404
    assert attacker.requests == []


def test_a_new_hostname_drops_the_stored_token(tmp_path):
    store = ProjectStore(tmp_path / "projects.json")
    store.remember("7", "http://studio.example:8080", "tok-1", None)
    assert [c.origin for c in store.access("7").credentials] == [("http", "studio.example", 8080)]
    store.remember("7", "http://studio.example:8080/", None, None)  # same origin again, no token: kept
    assert len(store.access("7").credentials) == 1
    store.remember("7", "http://127.0.0.1:6666", None, None)  # another origin without a token: dropped
    access = store.access("7")
    assert access.hostname == "http://127.0.0.1:6666" and access.credentials == ()
    assert "tok-1" not in (tmp_path / "projects.json").read_text()
    assert ProjectStore(tmp_path / "projects.json").access("7").credentials == ()  # also after a restart


def test_the_configured_token_goes_to_the_configured_origin_only(tmp_path):
    store = ProjectStore(tmp_path / "projects.json", "http://127.0.0.1:8080", "admin-token")
    unknown = store.access("5")  # never set up: the configured Label Studio, its token for its origin
    assert unknown.hostname == "http://127.0.0.1:8080" and unknown.trusted == ("http://127.0.0.1:8080",)
    assert unknown.credential_for("http://127.0.0.1:8080/data/upload/1/x.jpg").header == "Token admin-token"
    assert unknown.credential_for("http://127.0.0.1:9999/x.jpg") is None
    store.remember("5", "http://127.0.0.1:9999", None, None)
    moved = store.access("5")  # relative URLs now go to 9999 but no token goes with them, and 9999 is not trusted
    assert moved.credential_for("http://127.0.0.1:9999/x.jpg") is None and moved.trusted == ("http://127.0.0.1:8080",)


def test_label_studio_cookies_never_reach_another_service(make_app, listeners):
    studio, other = listeners(), listeners()
    other_port = other.url.rsplit(":", 1)[1]
    client = make_app(fetch_allow_hosts=f"127.0.0.1:{other_port}").test_client()
    client.post("/setup", json={"project": "7.1", "schema": LSP_CONFIG, "hostname": studio.url, "access_token": TOKEN})
    for task in ([image_task(1, "/set-cookie.png")], [image_task(2, f"{other.url}/ok.png")],
                 [image_task(3, "/again.png")]):
        assert len(client.post("/predict", json=predict_body(task)).json["results"][0]) == 2
    assert other.credentials() == [(None, None)]  # neither Label Studio's sessionid nor its token
    assert [cookie for _, cookie in studio.credentials()] == [None, None]
