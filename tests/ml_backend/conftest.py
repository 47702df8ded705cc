"""Fixtures of the ML backend tests: a real image server on 127.0.0.1 that behaves like Label Studio's
file serving (token auth, 404s) and apps built per test."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from ml_helpers import AUTH, LSP_CONFIG, TEST_PROJECTS, TOKEN, ImageServer, Listener, basic, png
from werkzeug.serving import make_server


class AuthClient(FlaskClient):
    """A test client that sends the test apps' HTTP Basic credentials with every request (as Label Studio
    does once the backend is connected with authentication); ``FlaskClient(app)`` sends none."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.environ_base["HTTP_AUTHORIZATION"] = basic(*AUTH)["Authorization"]


@pytest.fixture
def image_server(lspet_dir) -> Iterator[ImageServer]:
    server = ImageServer(files_root=lspet_dir.parent, special={
        "/corrupt.jpg": b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10,
        "/big.png": png(400, 300),
        "/small.png": png(64, 48),
    })
    http = make_server("127.0.0.1", 0, server.app, threaded=True)
    server.url = f"http://127.0.0.1:{http.port}"
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield server
    http.shutdown()
    thread.join(5)


@pytest.fixture(scope="session")
def served_registry(model_registry):
    """The tiny model's registry with ``tiny-v1`` current for every project id the tests and captures use."""
    for project in TEST_PROJECTS:
        model_registry.set_current("tiny-v1", project)
    return model_registry


@pytest.fixture
def make_app(tmp_path, served_registry):
    """Build an app per test: ``make_app(**overrides)`` (defaults: the tiny model, temporary storage, HTTP Basic
    auth with ``AUTH``, which ``app.test_client()`` sends)."""
    from ml_backend import create_app

    def build(**overrides):
        config = {"models_dir": served_registry.root, "image_cache_dir": tmp_path / "cache",
                  "state_dir": tmp_path / "state", "preload_model": False, "model_poll_seconds": 0,
                  "torch_threads": 1, "basic_auth_user": AUTH[0], "basic_auth_password": AUTH[1], **overrides}
        app = create_app(config)
        app.test_client_class = AuthClient
        return app

    return build


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def connected(client, image_server):
    """A client whose project 7 went through /setup with the image server's hostname and token."""
    response = client.post("/setup", json={"project": "7.1795501997", "schema": LSP_CONFIG,
                                           "hostname": image_server.url, "access_token": TOKEN,
                                           "extra_params": None})
    assert response.status_code == 200, response.json
    return client


@pytest.fixture
def listeners() -> Iterator:
    """``listeners()`` starts a :class:`Listener` on a port of its own (closed after the test)."""
    started: list[Listener] = []

    def start(trickle_s: float = 0.5) -> Listener:
        started.append(Listener(trickle_s))
        return started[-1]

    yield start
    for listener in started:
        listener.close()
