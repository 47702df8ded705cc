"""Both entry points run as real processes on 127.0.0.1: the development server and gunicorn."""

from __future__ import annotations

import sys

import pytest
import requests
from ml_helpers import LSP_CONFIG, REPO, backend_env, start_backend, stop_backend

from stack.labelstudio import free_port

pytestmark = pytest.mark.integration


def test_development_server_serves_and_stops(tmp_path):
    port = free_port()
    env = backend_env(models_dir=tmp_path / "models", image_cache_dir=tmp_path / "cache", ml_state_dir=tmp_path / "st")
    url = f"http://127.0.0.1:{port}"
    process = start_backend([sys.executable, "-m", "ml_backend", "--port", str(port)], env, url, tmp_path / "dev.log")
    try:
        assert requests.get(f"{url}/health", timeout=5).json()["model_version"] is None
        response = requests.post(f"{url}/setup", json={"project": "1.1", "schema": LSP_CONFIG}, timeout=5)
        assert response.status_code == 200 and response.json() == {"model_version": None, "skeleton": "lsp14"}
    finally:
        stop_backend(process)


def test_gunicorn_serves_the_registry_model_with_basic_auth(tmp_path, model_registry):
    port = free_port()
    env = backend_env(models_dir=model_registry.root, image_cache_dir=tmp_path / "cache", ml_state_dir=tmp_path / "st",
                      ml_basic_auth_user="studio", ml_basic_auth_password="pw-123")
    url = f"http://127.0.0.1:{port}"
    argv = [str(REPO / ".venv" / "bin" / "gunicorn"), "-c", "python:ml_backend.gunicorn_conf",
            "--bind", f"127.0.0.1:{port}", "ml_backend:create_app()"]
    process = start_backend(argv, env, url, tmp_path / "gunicorn.log")
    try:
        assert requests.get(f"{url}/health", timeout=5).status_code == 401
        health = requests.get(f"{url}/health", timeout=5, auth=("studio", "pw-123")).json()
        assert health["model_version"] == "tiny-v1" and health["model_loaded"] is True
    finally:
        assert stop_backend(process) == 0  # a clean shutdown on SIGTERM
    log = (tmp_path / "gunicorn.log").read_text()
    assert "serving model version tiny-v1" in log and "pw-123" not in log
