"""Helpers shared by the ML backend tests (constants, captured payloads, request bodies, an image server)."""

from __future__ import annotations

import base64
import copy
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from werkzeug.wrappers import Request, Response

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "annotation_configs"
# next to the data folder: ``<shared>/docs/label-studio-captures`` (``VL4POSE_SHARED_DATA`` = ``<shared>/data``)
SHARED_DATA = Path(os.environ.get("VL4POSE_SHARED_DATA", REPO.parent / "shared" / "data"))
CAPTURES = SHARED_DATA.parent / "docs" / "label-studio-captures"
TOKEN = "test-label-studio-token-0123456789"
AUTH = ("studio", "test-basic-password-0123")
TEST_PROJECTS = ("1", "2", "3", "7", "12", "27")
"""Project ids the unit tests and the captures use: linked to ``tiny-v1`` by the ``served_registry`` fixture."""
LSP_CONFIG = (CONFIGS / "lsp14.xml").read_text()


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class ImageServer:
    """A Label Studio look-alike for images: ``/data/local-files/?d=<path under files_root>`` with
    ``Authorization: Token <TOKEN>``, plus special files. Records every request it answers."""

    files_root: Path
    special: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""

    def app(self, environ, start_response):
        request = Request(environ)
        self.requests.append((request.full_path, request.headers.get("Authorization")))
        if request.headers.get("Authorization") != f"Token {TOKEN}":
            response = Response("unauthorized", 401)
        elif request.path in self.special:
            response = Response(self.special[request.path], mimetype="application/octet-stream")
        elif request.path == "/data/local-files/":
            path = (self.files_root / request.args.get("d", "")).resolve()
            ok = path.is_file() and self.files_root.resolve() in path.parents
            response = Response(path.read_bytes(), mimetype="image/jpeg") if ok else Response("not found", 404)
        else:
            response = Response("not found", 404)
        return response(environ, start_response)

    def count(self, fragment: str) -> int:
        return sum(1 for path, _ in self.requests if fragment in path)


def lspet_task(task_id: int, number: int) -> dict:
    return {"id": task_id, "data": {"image": f"/data/local-files/?d=lspet/images/im{number:05d}.jpg"},
            "annotations": [], "predictions": [], "project": 7}


def predict_body(tasks: list[dict], context: dict | None = None, label_config: str = LSP_CONFIG) -> dict:
    return {"tasks": tasks, "project": "7.1795501997", "label_config": label_config,
            "params": {"login": None, "password": None, "context": context}}


def capture(name: str) -> dict:
    """A captured Label Studio request (``label-studio-captures/<name>*.json``), deep-copied."""
    matches = sorted(CAPTURES.glob(f"{name}*.json"))
    if not matches:
        pytest.skip(f"capture {name} not found in {CAPTURES}")
    return copy.deepcopy(json.loads(matches[0].read_text()))


def keypoint_click(label: str, x: float, y: float, width: int, height: int, **extra) -> dict:
    """A context result like Label Studio's smart keypoint click (capture 10_)."""
    return {"original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": 0.75, "keypointlabels": [label]}, "is_positive": True,
            "id": "click1", "from_name": "kp", "to_name": "image", "type": "keypointlabels", "origin": "manual",
            **extra}


def png_bomb(width: int, height: int) -> bytes:
    """A valid grey PNG of ``width`` x ``height`` zeros, compressed to a few hundred KB without ever holding the
    pixels in memory (a 12000 x 12000 one is about 140 KB: a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor, row, parts = zlib.compressobj(9), b"\0" * (width + 1), []
    for _ in range(height):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()[:800]


class Listener:
    """A plain HTTP server on 127.0.0.1 (its own port) recording every request's path, Authorization and Cookie.

    Paths: ``/redirect?to=<url>`` (302), ``/set-cookie.png`` (an image with ``Set-Cookie: sessionid=...``),
    ``/slow.png`` (one byte every ``trickle_s`` seconds), ``/page.html`` (a 200 text body with a marker),
    ``/bomb.png``, ``/truncated.jpg``, anything else: a small PNG.
    """

    BODY_MARKER = "SECRET-PROJECT-LIST-0123"

    def __init__(self, trickle_s: float = 0.5) -> None:
        import http.server
        import threading

        self.requests: list[dict] = []
        self.trickle_s = trickle_s
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's interface
                listener.requests.append({"path": self.path, "authorization": self.headers.get("Authorization"),
                                          "cookie": self.headers.get("Cookie")})
                listener.answer(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, handler) -> None:
        import time
        import urllib.parse

        path, _, query = handler.path.partition("?")
        if path == "/redirect":
            handler.send_response(302)
            handler.send_header("Location", urllib.parse.parse_qs(query)["to"][0])
            handler.end_headers()
            return
        if path == "/slow.png":
            body = png(64, 48)
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            try:
                for i in range(len(body)):
                    handler.wfile.write(body[i:i + 1])
                    handler.wfile.flush()
                    time.sleep(self.trickle_s)
            except OSError:
                pass  # the client gave up: what the deadline is for
            return
        extra = {}
        if path == "/page.html":
            body, kind = f"<html>{self.BODY_MARKER}</html>".encode(), "text/html"
        elif path == "/bomb.png":
            body, kind = png_bomb(12000, 12000), "image/png"
        elif path == "/truncated.jpg":
            body, kind = truncated_jpeg(), "image/jpeg"
        else:
            body, kind = png(64, 48), "image/png"
            if path == "/set-cookie.png":
                extra["Set-Cookie"] = "sessionid=leaked-session-id; Path=/"
        handler.send_response(200)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        for key, value in extra.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)

    def credentials(self) -> list[tuple[str | None, str | None]]:
        """(Authorization, Cookie) of every request that arrived."""
        return [(r["authorization"], r["cookie"]) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def place_every_keypoint(monkeypatch, placed: bool) -> None:
    """Make the ML backend's interactive re-solve place every keypoint (True) or none (False): which labels the
    suite's tiny model places varies from run to run."""
    import ml_backend.predictions as predictions
    from vl4pose.interactive import resolve_clicked

    def resolve(*args, **kwargs):
        prediction = resolve_clicked(*args, **kwargs)
        prediction.placed = np.full_like(prediction.placed, placed)
        return prediction

    monkeypatch.setattr(predictions, "resolve_clicked", resolve)
