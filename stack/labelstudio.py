"""Start and stop a real Label Studio 1.23.2 from its own virtualenv (``.lsvenv``), bound to 127.0.0.1.

Used by the product's start script and by the integration tests. Label Studio runs as a subprocess
and only talks HTTP: our code never imports it.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from ml_backend.process import stop_process_group

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VENV = REPO / ".lsvenv"


class LabelStudioError(RuntimeError):
    """Label Studio could not be started or did not become ready."""


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


@dataclass
class LabelStudioServer:
    """A Label Studio process with a known admin and legacy API token.

    Attributes:
        data_dir: its ``LABEL_STUDIO_BASE_DATA_DIR`` (SQLite database, uploads, secret key).
        port: the port on 127.0.0.1 (must be free: Label Studio silently moves to another one otherwise).
        username, password, token: admin account created on the first start of ``data_dir``.
        files_root: folder served as local files (``/data/local-files/?d=<path under it>``), or None.
    """

    data_dir: Path
    port: int = field(default_factory=free_port)
    username: str = "admin@example.com"
    password: str = "vl4pose-admin"
    token: str = "vl4pose-label-studio-token-0001"
    files_root: Path | None = None
    venv: Path = DEFAULT_VENV
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_"))}
        env.update({
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "LABEL_STUDIO_USERNAME": self.username,
            "LABEL_STUDIO_PASSWORD": self.password,
            "LABEL_STUDIO_USER_TOKEN": self.token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
            "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
            "LABEL_STUDIO_SENTRY_DSN": "",
            "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "",
            "SENTRY_DSN": "",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        })
        if self.files_root is not None:
            env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "true"
            # links resolved, like every storage path we give it (Label Studio compares resolved paths)
            env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(Path(self.files_root).resolve())
        env.pop("VIRTUAL_ENV", None)
        return env

    def start(self, timeout: float = 180.0, log_file: Path | None = None) -> "LabelStudioServer":
        """Start the server and wait until the API answers with the token."""
        executable = self.venv / "bin" / "label-studio"
        if not executable.exists():
            raise LabelStudioError(f"{executable} not found; run `bash scripts/setup.sh` to install Label Studio")
        if not port_is_free(self.port):
            raise LabelStudioError(f"port {self.port} on 127.0.0.1 is busy; choose another port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = open(log_file or self.data_dir / "label-studio.log", "ab")
        self.process = subprocess.Popen(
            [str(executable), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
             "--host", self.url],
            env=self.environment(), stdout=out, stderr=subprocess.STDOUT, cwd=self.data_dir, start_new_session=True,
        )
        out.close()
        self.wait_ready(timeout)
        log.info("Label Studio ready at %s (pid %d)", self.url, self.process.pid)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise LabelStudioError(f"Label Studio exited with code {self.process.returncode}; "
                                       f"see {self.data_dir / 'label-studio.log'}")
            try:
                response = requests.get(f"{self.url}/api/current-user/whoami", headers=self.headers, timeout=2)
                if response.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(1.0)
        self.stop()
        raise LabelStudioError(f"Label Studio did not answer on {self.url} within {timeout:.0f} s; "
                               f"see {self.data_dir / 'label-studio.log'}")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and every process it started."""
        if self.process is not None:
            stop_process_group(self.process, timeout, kill_wait=5.0)

    def __enter__(self) -> "LabelStudioServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
