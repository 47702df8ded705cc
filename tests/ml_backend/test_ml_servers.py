"""Both entry points run as real processes on 127.0.0.1: the development server and gunicorn."""

from __future__ import annotations

import pytest
import requests
from ml_helpers import LSP_CONFIG

from stack.process import BackendProcess

pytestmark = pytest.mark.integration


def test_development_server_serves_and_stops(tmp_path):
    from vl4pose.registry import ModelRegistry

    ModelRegistry(tmp_path / "models").link_project("1")  # linked, nothing published yet
    settings = {"models_dir": tmp_path / "models", "image_cache_dir": tmp_path / "cache",
                "state_dir": tmp_path / "state", "torch_threads": 1}
    with BackendProcess(tmp_path / "dev.log", settings, server="dev") as backend:  # generated Basic credentials
        assert requests.get(f"{backend.url}/health", timeout=5).json() == {"status": "UP", "model_class": "VL4Pose"}
        assert requests.post(f"{backend.url}/setup", json={"project": "1.1", "schema": LSP_CONFIG},
                             timeout=5).status_code == 401
        response = requests.post(f"{backend.url}/setup", json={"project": "1.1", "schema": LSP_CONFIG}, timeout=5,
                                 auth=backend.auth)
        assert response.status_code == 200 and response.json() == {"model_version": None, "skeleton": "lsp14"}
    assert backend.process.poll() is not None


def test_gunicorn_serves_the_registry_model_with_basic_auth(tmp_path, served_registry):
    settings = {"models_dir": served_registry.root, "image_cache_dir": tmp_path / "cache",
                "state_dir": tmp_path / "state", "torch_threads": 1,
                "basic_auth_user": "studio", "basic_auth_password": "pw-123"}
    backend = BackendProcess(tmp_path / "gunicorn.log", settings, auth=("studio", "pw-123")).start()
    try:
        assert requests.get(f"{backend.url}/health", timeout=5).json() == {"status": "UP", "model_class": "VL4Pose"}
        assert requests.get(f"{backend.url}/versions", timeout=5).status_code == 401
        health = requests.get(f"{backend.url}/health", timeout=5, auth=("studio", "pw-123")).json()["projects"]["7"]
        assert health["model_version"] == "tiny-v1" and health["model_loaded"] is True
    finally:
        assert backend.stop() == 0  # a clean shutdown on SIGTERM
    log = (tmp_path / "gunicorn.log").read_text()
    assert "loaded model version tiny-v1" in log and "pw-123" not in log
