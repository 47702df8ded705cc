"""Model versions: served from the registry, switched without a restart and without dropping requests."""

from __future__ import annotations

import shutil
import threading

import pytest
from ml_helpers import LSP_CONFIG, lspet_task, predict_body
from waiting import wait_for

from ml_backend.models import LRUCache, ModelService
from ml_backend.routes import EXTENSION
from vl4pose.registry import ModelRegistry


@pytest.fixture
def registry(tmp_path, tiny_checkpoint):
    registry = ModelRegistry(tmp_path / "models")
    registry.publish(tiny_checkpoint, "round-1", make_current=True, project="7")
    return registry


def test_new_version_is_served_without_dropping_an_in_flight_request(make_app, registry, image_server, tiny_checkpoint):
    from ml_helpers import LSP_CONFIG, TOKEN

    app = make_app(models_dir=registry.root)
    client = app.test_client()
    client.post("/setup", json={"project": "7.1", "schema": LSP_CONFIG, "hostname": image_server.url,
                                "access_token": TOKEN})
    assert client.post("/predict", json=predict_body([lspet_task(1, 1)])).json["model_version"] == "round-1"

    old = app.extensions[EXTENSION].models.loaded("7")
    entered, release = threading.Event(), threading.Event()
    original = old.predictor.predict_batch

    def slow_predict_batch(*args, **kwargs):
        entered.set()
        release.wait(30)
        return original(*args, **kwargs)

    old.predictor.predict_batch = slow_predict_batch
    answers = {}
    in_flight = threading.Thread(target=lambda: answers.update(
        first=app.test_client().post("/predict", json=predict_body([lspet_task(2, 2)]))))
    in_flight.start()
    assert entered.wait(30)

    registry.publish(tiny_checkpoint, "round-2", make_current=True, project="7")
    wait_for(lambda: client.get("/health").json["projects"]["7"]["model_loaded"]
             and app.extensions[EXTENSION].models.loaded("7").version == "round-2", 60, "round-2 to be served",
             every=0.05)
    release.set()
    in_flight.join(30)
    first = answers["first"]
    assert first.status_code == 200
    assert [p["model_version"] for p in first.json["results"][0]] == ["round-1", "round-1-raw"]
    after = client.post("/predict", json=predict_body([lspet_task(2, 2)])).json
    assert after["model_version"] == "round-2"
    assert [p["model_version"] for p in after["results"][0]] == ["round-2", "round-2-raw"]
    assert client.post("/setup", json={"project": "7.1", "schema": LSP_CONFIG}).json["model_version"] == "round-2"
    assert client.get("/versions?project=7").json == {"versions": ["round-1", "round-2"], "current": "round-2"}


def test_a_version_that_cannot_load_leaves_the_old_one_serving(make_app, registry, caplog):
    app = make_app(models_dir=registry.root)
    client = app.test_client()
    models = app.extensions[EXTENSION].models
    assert models.get("7").version == "round-1"
    broken = registry.root / "round-2"
    shutil.copytree(registry.path("round-1"), broken)
    (broken / "weights.pt").write_bytes(b"not torch weights")
    registry.set_current("round-2", "7")
    # /health starts the load
    wait_for(lambda: client.get("/health").json["projects"]["7"]["model_error"] is not None, 60, "the load error",
             every=0.05)
    assert models.get("7").version == "round-1"
    health = client.get("/health").json["projects"]["7"]
    assert health["model_version"] == "round-1" and "round-2" in health["model_error"]
    assert "cannot load model version round-2" in caplog.text


def test_first_model_is_loaded_by_the_first_request_and_health_stays_cheap(make_app, registry):
    app = make_app(models_dir=registry.root)
    client = app.test_client()
    models = app.extensions[EXTENSION].models
    assert models.loaded("7") is None
    assert client.post("/setup", json={"project": "7.1", "schema": "<View/>"}).status_code == 422
    assert client.post("/setup", json={"project": "7.1", "schema": LSP_CONFIG}).status_code == 200
    assert models.loaded("7") is None  # /setup never loads weights (Label Studio gives it 3 s)
    assert models.get("7").version == "round-1" and models.loaded("7") is not None


def test_preload_starts_loading_at_start_up(make_app, registry):
    app = make_app(models_dir=registry.root, preload_model=True)
    assert app.extensions[EXTENSION].models.wait_for("7", "round-1", timeout=60).version == "round-1"


def test_registry_is_read_at_most_once_per_poll_interval(registry, monkeypatch):
    service = ModelService(registry.root, poll_seconds=3600)
    calls = []
    original = service.registry.current
    monkeypatch.setattr(service.registry, "current", lambda p=None: calls.append(p) or original(p))
    for _ in range(5):
        assert service.current_version("7") == "round-1"
        assert service.current_version("8") is None
    assert calls == ["7", "8"]


def test_lru_cache_keeps_the_most_recent_entries():
    cache = LRUCache(2)
    assert cache.get_or_compute("a", lambda: 1) == (1, False)
    assert cache.get_or_compute("b", lambda: 2) == (2, False)
    assert cache.get_or_compute("a", lambda: 9) == (1, True)
    cache.get_or_compute("c", lambda: 3)  # evicts b, the least recently used
    assert cache.get_or_compute("b", lambda: 4) == (4, False)
    assert cache.get_or_compute("a", lambda: 9) == (9, False) and len(cache) == 2
