"""Fixtures of the ML backend tests: a real image server on 127.0.0.1 that behaves like Label Studio's
file serving (token auth, 404s) and apps built per test."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from ml_helpers import LSP_CONFIG, TOKEN, ImageServer, png
from werkzeug.serving import make_server


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


@pytest.fixture
def make_app(tmp_path, model_registry):
    """Build an app per test: ``make_app(**overrides)`` (defaults: the tiny model, temporary storage)."""
    from ml_backend import create_app

    def build(**overrides):
        config = {"models_dir": model_registry.root, "image_cache_dir": tmp_path / "cache",
                  "state_dir": tmp_path / "state", "preload_model": False, "model_poll_seconds": 0,
                  "torch_threads": 1, **overrides}
        return create_app(config)

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
