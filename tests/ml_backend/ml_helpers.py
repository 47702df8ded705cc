"""Helpers shared by the ML backend tests (constants, captured payloads, request bodies, an image server)."""

from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from werkzeug.wrappers import Request, Response

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "annotation_configs"
CAPTURES = REPO.parent / "shared" / "docs" / "label-studio-captures"
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


def backend_env(**settings: object) -> dict[str, str]:
    """The environment of a backend subprocess: ours without VL4POSE_* variables, plus ``settings``
    (``models_dir="..."`` -> ``VL4POSE_MODELS_DIR``), one torch thread (the machine is shared)."""
    import os

    from ml_backend.config import env_name

    env = {k: v for k, v in os.environ.items() if not k.startswith("VL4POSE_")}
    env.update({"OMP_NUM_THREADS": "1", "VL4POSE_TORCH_THREADS": "1", "PYTHONPATH": str(REPO)})
    env.update({env_name(k): str(v) for k, v in settings.items()})
    return env


def start_backend(argv: list[str], env: dict[str, str], url: str, log_path: Path, timeout: float = 120.0):
    """Start a backend process and wait until ``{url}/health`` reports a loaded model (or any 200
    when the registry is empty). Returns the ``Popen``; stop it with :func:`stop_backend`."""
    import subprocess
    import time

    import requests

    log = open(log_path, "ab")
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.monotonic() + timeout
    auth = (env.get("VL4POSE_ML_BASIC_AUTH_USER"), env.get("VL4POSE_ML_BASIC_AUTH_PASSWORD"))
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited with {process.returncode}; see {log_path}:\n{log_path.read_text()}")
        try:
            health = requests.get(f"{url}/health", timeout=2, auth=auth if auth[0] else None)
            if health.status_code == 200 and (health.json()["model_loaded"] or health.json()["model_version"] is None):
                return process
        except requests.RequestException:
            pass
        time.sleep(0.3)
    stop_backend(process)
    raise RuntimeError(f"the backend did not get ready on {url} within {timeout} s; see {log_path}")


def stop_backend(process) -> int | None:
    """SIGTERM the process group (the server and its workers), then SIGKILL if needed; the exit code."""
    import os
    import signal
    import subprocess

    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(10)
    return process.returncode
