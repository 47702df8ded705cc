"""Process supervision of the stack: free ports on 127.0.0.1, stopping a process group, and the ML backend as a
subprocess (gunicorn or the development server).

:class:`BackendProcess` is used by the integration tests and ``scripts/bench_ml_backend.py``; the stack's own
services (:mod:`stack.services`) and Label Studio (:mod:`stack.labelstudio`) use the port and stop helpers.
Settings go in as :class:`~ml_backend.config.MLBackendConfig` field names and become ``VL4POSE_*``
variables of the child; the parent's own ``VL4POSE_*`` variables are not inherited. The ML backend itself
never imports this module (it knows nothing of how it is run).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from ml_backend.config import env_name

REPO = Path(__file__).resolve().parents[1]


class BackendProcessError(RuntimeError):
    """The backend process exited or did not become ready."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """No server listens on the port (connections of a stopped server in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def stop_process_group(process: subprocess.Popen, timeout: float, kill_wait: float = 10.0) -> None:
    """SIGTERM the process group led by ``process`` (started with ``start_new_session``), SIGKILL it after
    ``timeout`` seconds; a process that already exited is left alone."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(kill_wait)


@dataclass
class BackendProcess:
    """A backend process. ``server`` is ``"gunicorn"`` (production settings) or ``"dev"``.

    Attributes:
        settings: config field name -> value, e.g. ``{"models_dir": path, "torch_threads": 1}``.
        log_file: where the child's stdout and stderr go.
        auth: (user, password) of HTTP Basic auth; generated when neither this nor the settings give one
            (unless ``settings["auth"] == "none"``), and used by the readiness check.
    """

    log_file: Path
    settings: dict[str, object] = field(default_factory=dict)
    server: str = "gunicorn"
    port: int = field(default_factory=free_port)
    auth: tuple[str, str] | None = None
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        if self.settings.get("auth") == "none":
            return
        if self.auth is None and self.settings.get("basic_auth_user"):
            self.auth = (str(self.settings["basic_auth_user"]), str(self.settings["basic_auth_password"]))
        if self.auth is None:
            self.auth = ("vl4pose", secrets.token_urlsafe(18))
        self.settings = {**self.settings, "basic_auth_user": self.auth[0], "basic_auth_password": self.auth[1]}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        if self.server == "gunicorn":
            gunicorn = Path(sys.executable).with_name("gunicorn")
            return [str(gunicorn), "-c", "python:ml_backend.gunicorn_conf", "--bind", f"127.0.0.1:{self.port}",
                    "ml_backend:create_app()"]
        if self.server == "dev":
            return [sys.executable, "-m", "ml_backend", "--port", str(self.port)]
        raise ValueError(f"server must be 'gunicorn' or 'dev', got {self.server!r}")

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VL4POSE_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        threads = self.settings.get("torch_threads")
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        env.update({env_name(name): str(value) for name, value in self.settings.items() if value is not None})
        return env

    def start(self, timeout: float = 120.0) -> "BackendProcess":
        """Start the process and wait until ``/health`` answers with every linked project's current model loaded
        (or failed to load)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(self.argv(), cwd=REPO, env=self.environment(), stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BackendProcessError(f"the backend exited with code {self.process.returncode}; "
                                          f"see {self.log_file}")
            try:
                health = requests.get(f"{self.url}/health", timeout=2, auth=self.auth)
                body = health.json() if health.status_code == 200 else {}
                projects = body.get("projects", {}).values()
                if body and all(p["model_loaded"] or not p["model_version"] or p["model_error"] for p in projects):
                    return self
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.3)
        self.stop()
        raise BackendProcessError(f"the backend did not get ready on {self.url} within {timeout:.0f} s; "
                                  f"see {self.log_file}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the process group (server and workers), SIGKILL after ``timeout``; the exit code."""
        if self.process is None:
            return None
        stop_process_group(self.process, timeout)
        return self.process.returncode

    def __enter__(self) -> "BackendProcess":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
