"""Helpers shared by the ML backend tests (constants, captured payloads, request bodies, an image server)."""

from __future__ import annotations

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
LSP_CONFIG = (CONFIGS / "lsp14.xml").read_text()


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
