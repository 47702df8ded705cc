"""Image limits before decode (finding 4), the download deadline (finding 5) and non-image bodies kept out of the
log (finding 7): every bad image costs its own task only, in batch and interactive calls."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest
import requests
from ml_helpers import LSP_CONFIG, TOKEN, Listener, keypoint_click, png_bomb, predict_body

from ml_backend.routes import EXTENSION
from vl4pose.data.sample import image_size
from vl4pose.errors import ImageError


def setup_on(client, listener: Listener) -> None:
    response = client.post("/setup", json={"project": "7.1", "schema": LSP_CONFIG, "hostname": listener.url,
                                           "access_token": TOKEN})
    assert response.status_code == 200


def tasks(*paths: str) -> list[dict]:
    return [{"id": i, "data": {"image": path}} for i, path in enumerate(paths, 1)]


def test_the_size_comes_from_the_header_without_decoding(monkeypatch):
    from PIL import ImageFile

    bomb = png_bomb(12000, 12000)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("the pixels were decoded"))
    assert image_size(bomb) == (12000, 12000)
    with pytest.raises(ImageError, match="12000x12000 = 144000000 pixels, over the limit"):
        image_size(bomb, max_pixels=40_000_000)
    with pytest.raises(ImageError, match="decompression bomb"):  # over twice Pillow's own limit: refused, caught
        image_size(png_bomb(20000, 10000), max_pixels=10**9)


def test_a_truncated_jpeg_alone_is_an_empty_answer_in_batch_and_interactive_calls(client, listeners, caplog):
    studio = listeners()
    setup_on(client, studio)
    with caplog.at_level(logging.WARNING):
        batch = client.post("/predict", json=predict_body(tasks("/truncated.jpg")))
        click = {"result": [keypoint_click("Neck", 50.0, 50.0, 160, 120)]}
        interactive = client.post("/predict", json=predict_body(tasks("/truncated.jpg"), click))
    assert batch.status_code == 200 and batch.json["results"] == [[]]
    assert interactive.status_code == 200 and interactive.json["results"][0]["result"] == []
    assert "task 1: no prediction" in caplog.text and "truncated" in caplog.text
    assert "task 1: no suggestion" in caplog.text


def test_a_bomb_over_pillows_limit_costs_its_task_only(make_app, listeners, caplog):
    studio = listeners()
    client = make_app(max_image_pixels=10**9).test_client()  # our limit above Pillow's: Pillow's own check acts
    setup_on(client, studio)
    from PIL import Image

    Image.MAX_IMAGE_PIXELS, saved = 50_000_000, Image.MAX_IMAGE_PIXELS  # 12000 x 12000 is over twice this
    try:
        with caplog.at_level(logging.WARNING):
            response = client.post("/predict", json=predict_body(tasks("/bomb.png", "/fine.png")))
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    assert response.status_code == 200
    assert response.json["results"][0] == [] and len(response.json["results"][1]) == 2
    assert "decompression bomb" in caplog.text


def test_a_request_decodes_at_most_about_one_limit_of_pixels_at_a_time(make_app, listeners, monkeypatch):
    studio = listeners()
    client = make_app(max_image_pixels=2 * 64 * 48).test_client()  # two of the listener's 64 x 48 images
    setup_on(client, studio)
    predictor = client.application.extensions[EXTENSION].models.get("7").predictor
    groups, original = [], predictor.predict_batch
    monkeypatch.setattr(predictor, "predict_batch", lambda images: groups.append(len(images)) or original(images))
    results = client.post("/predict", json=predict_body(tasks(*[f"/{n}.png" for n in range(5)]))).json["results"]
    assert [len(r) for r in results] == [2] * 5 and groups == [2, 2, 1]


def test_a_non_image_answer_is_refused_without_logging_its_body(client, listeners, caplog):
    studio = listeners()
    setup_on(client, studio)
    with caplog.at_level(logging.DEBUG):
        response = client.post("/predict", json=predict_body(tasks("/page.html")))
    assert response.json["results"] == [[]] and "cannot be read" in caplog.text
    assert Listener.BODY_MARKER not in caplog.text


def test_a_trickling_image_server_is_cut_at_the_deadline(make_app, listeners, caplog):
    slow = listeners(trickle_s=0.3)
    client = make_app(fetch_timeout=1.0, fetch_deadline=2.0).test_client()
    setup_on(client, slow)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        response = client.post("/predict", json=predict_body(tasks("/slow.png", "/fast.png")))
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.json["results"][0] == [] and len(response.json["results"][1]) == 2
    assert "no complete answer within 2 s" in caplog.text
    assert elapsed < 5.0, elapsed  # the deadline plus one network pass, not 3 s per byte


def _rss_kb(pid: int) -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))


def _worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0]) if children else master


@pytest.mark.integration
def test_a_png_bomb_does_not_grow_the_backend_process(tmp_path, served_registry, listeners):
    """Finding 4 measured on the ML backend's own process (the gunicorn worker), not on the test runner."""
    from stack.process import BackendProcess

    studio = listeners()
    settings = {"models_dir": served_registry.root, "image_cache_dir": tmp_path / "cache",
                "state_dir": tmp_path / "state", "torch_threads": 1}
    with BackendProcess(tmp_path / "gunicorn.log", settings) as backend:
        session = requests.Session()
        session.auth = backend.auth
        setup = {"project": "7.1", "schema": LSP_CONFIG, "hostname": studio.url, "access_token": TOKEN}
        assert session.post(f"{backend.url}/setup", json=setup, timeout=30).status_code == 200
        warm = session.post(f"{backend.url}/predict", json=predict_body(tasks("/warm.png")), timeout=120)
        assert len(warm.json()["results"][0]) == 2  # the model is loaded and has run once
        worker = _worker_pid(backend.process.pid)
        before = _rss_kb(worker)
        answer = session.post(f"{backend.url}/predict", json=predict_body(tasks("/bomb.png", "/ok.png")), timeout=120)
        after = _rss_kb(worker)
    assert answer.status_code == 200
    assert answer.json()["results"][0] == [] and len(answer.json()["results"][1]) == 2
    grown_mb = (after - before) / 1024
    print(f"ML backend worker RSS {before / 1024:.0f} MB -> {after / 1024:.0f} MB (+{grown_mb:.1f} MB) "
          f"for a {len(png_bomb(12000, 12000)) // 1024} KB 12000x12000 PNG")
    assert grown_mb < 50, f"the backend grew by {grown_mb:.0f} MB"
    assert "12000x12000" in (tmp_path / "gunicorn.log").read_text()  # the refusal is logged with its reason
