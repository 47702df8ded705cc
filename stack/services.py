"""The four processes of a running system, started as daemons on 127.0.0.1 and found again by pid file.

``labelstudio`` (Label Studio 1.23.2 from ``.lsvenv``, SQLite), ``ml`` (the ML backend under gunicorn),
``coordinator`` (the coordinator's web app under gunicorn) and ``worker`` (``python -m backend worker``).
Each runs in its own session (process group) so that stopping it stops its children too; its pid, port
and command line are kept in ``<storage>/run/<name>.json`` and its output in ``<storage>/logs/<name>.log``.
A later command (``stop``, ``status``, a second ``start``) finds it there; a pid is only trusted while
that process still runs the recorded command, so a reused pid is never signalled.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from stack.labelstudio import LabelStudioServer, answers, connect
from stack.process import port_is_free

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("labelstudio", "ml", "coordinator", "worker")


class StackError(RuntimeError):
    """A service could not be started, or the system is not in the state a command needs."""


def _password() -> str:
    import secrets

    return secrets.token_urlsafe(18)


@dataclass
class Secrets:
    """Credentials made once per storage folder (kept in ``<storage>/stack.json``, mode 0600).

    ``ml_user`` / ``ml_password``: the ML backend's HTTP Basic credentials (registered with Label Studio).
    """

    ls_username: str
    ls_password: str
    ls_token: str
    api_token: str
    webhook_secret: str
    ml_user: str = "vl4pose"
    ml_password: str = field(default_factory=_password)

    @classmethod
    def generate(cls) -> "Secrets":
        import secrets

        return cls(
            "admin@example.com",
            secrets.token_urlsafe(12),
            secrets.token_hex(20),
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(24),
        )


ML_ONLY_NOT = ("VL4POSE_API_TOKEN", "VL4POSE_WEBHOOK_SECRET", "VL4POSE_SECRET_KEY", "VL4POSE_DATABASE_URL",
               "VL4POSE_COORDINATOR_URL")
"""Coordinator settings the ML backend never receives (its forwarding to the coordinator stays off)."""


@dataclass
class StackConfig:
    """Where and how the system runs.

    Attributes:
        storage: runtime state (absolute): Label Studio data, coordinator database, queue, models, caches, logs.
        ports: service name -> port on ``host``.
        files_root: Label Studio's local-files document root (images under it are served in place).
        settings: extra ``VL4POSE_*`` settings by field name for the ML backend, coordinator and worker
            (e.g. ``{"train_epochs": 1}``); they win over the caller's environment.
        torch_threads: ``torch.set_num_threads`` of the ML backend and worker (0: torch's default).
    """

    storage: Path
    secrets: Secrets
    files_root: Path
    ports: dict[str, int] = field(default_factory=lambda: {"labelstudio": 8080, "ml": 9090, "coordinator": 8200})
    host: str = "127.0.0.1"
    settings: dict[str, object] = field(default_factory=dict)
    torch_threads: int = 0
    worker_threads: int = 2
    web_workers: int = 2

    def __post_init__(self) -> None:
        self.files_root = Path(self.files_root).resolve()  # Label Studio compares resolved paths

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.ports[name]}"

    @property
    def ml_auth(self) -> tuple[str, str]:
        """The ML backend's HTTP Basic credentials."""
        return self.secrets.ml_user, self.secrets.ml_password

    @property
    def run_dir(self) -> Path:
        return self.storage / "run"

    @property
    def log_dir(self) -> Path:
        return self.storage / "logs"

    def wiring(self, service: str | None = None) -> dict[str, str]:
        """The settings that connect the services (they win over everything else); ``service="ml"`` gets only
        what the ML backend needs (no coordinator API token, webhook secret or database)."""
        s = self.storage
        ml = {
            "VL4POSE_MODELS_DIR": str(s / "models"),
            "VL4POSE_IMAGE_CACHE_DIR": str(s / "image_cache"),
            "VL4POSE_ML_STATE_DIR": str(s / "ml_backend"),
            "VL4POSE_LABEL_STUDIO_URL": self.url("labelstudio"),
            "VL4POSE_LABEL_STUDIO_TOKEN": self.secrets.ls_token,
            "VL4POSE_ML_BASIC_AUTH_USER": self.secrets.ml_user,
            "VL4POSE_ML_BASIC_AUTH_PASSWORD": self.secrets.ml_password,
        }
        if service == "ml":
            return ml
        return {
            **ml,
            "VL4POSE_DATABASE_URL": f"sqlite:///{s / 'coordinator.sqlite'}",
            "VL4POSE_STORAGE_DIR": str(s),
            "VL4POSE_LABEL_STUDIO_FILES_ROOT": str(self.files_root),
            "VL4POSE_ML_BACKEND_URL": self.url("ml"),
            "VL4POSE_PUBLIC_URL": self.url("coordinator"),
            "VL4POSE_WEBHOOK_SECRET": self.secrets.webhook_secret,
            "VL4POSE_API_TOKEN": self.secrets.api_token,
        }

    def environment(self, service: str | None = None) -> dict[str, str]:
        """The environment of one of our Python services (default: the coordinator's, as the ``link`` command
        and the worker get it): the caller's, then ``settings``, then the wiring."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_"))}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        if self.torch_threads:
            env["OMP_NUM_THREADS"] = str(self.torch_threads)
            env["VL4POSE_TORCH_THREADS"] = str(self.torch_threads)
        env.update({"VL4POSE_" + k.upper(): str(v) for k, v in self.settings.items() if v is not None})
        if service == "ml":
            for name in ML_ONLY_NOT:
                env.pop(name, None)
        env.update(self.wiring(service))
        return env

    def labelstudio(self) -> LabelStudioServer:
        return LabelStudioServer(
            self.storage / "label-studio",
            port=self.ports["labelstudio"],
            username=self.secrets.ls_username,
            password=self.secrets.ls_password,
            token=self.secrets.ls_token,
            files_root=self.files_root,
        )


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def command(config: StackConfig, name: str) -> list[str]:
    """The command line of one of our Python services."""
    if name == "ml":
        return [_bin("gunicorn"), "-c", "python:ml_backend.gunicorn_conf", "--bind",
                f"{config.host}:{config.ports['ml']}", "ml_backend:create_app()"]
    if name == "coordinator":
        return [_bin("gunicorn"), "--workers", str(config.web_workers), "--worker-class", "gthread", "--threads", "4",
                "--bind", f"{config.host}:{config.ports['coordinator']}", "--timeout", "120",
                "--access-logfile", "-", "backend:create_app()"]
    if name == "worker":
        return [sys.executable, "-m", "backend", "worker", "--threads", str(config.worker_threads)]
    raise StackError(f"unknown service {name!r}; services: {SERVICES}")


HEALTH = {"ml": "/health", "coordinator": "/api/health"}


# -- pid records ---------------------------------------------------------------------------------
def _record_path(config: StackConfig, name: str) -> Path:
    return config.run_dir / f"{name}.json"


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def running_pid(config: StackConfig, name: str) -> int | None:
    """The pid of the service when its recorded process is still alive and runs the recorded command."""
    try:
        record = json.loads(_record_path(config, name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    pid, argv = int(record["pid"]), record["argv"]
    line = _cmdline(pid)
    if not line:
        return None
    # a script started through its interpreter shows as [python, script, args...]
    if not set(argv[1:]) <= set(line) or not any(Path(a).name == Path(argv[0]).name for a in line):
        return None
    return pid


def _write_record(config: StackConfig, name: str, pid: int, argv: list[str]) -> None:
    config.run_dir.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "argv": argv, "port": config.ports.get(name), "started": time.time()}
    _record_path(config, name).write_text(json.dumps(record))


def _spawn(config: StackConfig, name: str) -> subprocess.Popen:
    argv = command(config, name)
    config.log_dir.mkdir(parents=True, exist_ok=True)
    with open(config.log_dir / f"{name}.log", "ab") as out:
        process = subprocess.Popen(argv, cwd=REPO, env=config.environment(name), stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    _write_record(config, name, process.pid, argv)
    return process


def wait_http(url: str, process: subprocess.Popen | None, timeout: float, what: str, log_file: Path) -> None:
    """Wait until ``url`` answers 200; fail early when the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StackError(f"{what} exited with code {process.returncode}; see {log_file}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise StackError(f"{what} did not answer on {url} within {timeout:.0f} s; see {log_file}")


def check_port(config: StackConfig, name: str, wait: float = 10.0) -> None:
    """Fail with a message naming the setting when the port stays busy for ``wait`` seconds."""
    port = config.ports[name]
    deadline = time.monotonic() + wait
    while not port_is_free(port) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not port_is_free(port):
        variable = {"labelstudio": "VL4POSE_LS_PORT", "ml": "VL4POSE_ML_PORT",
                    "coordinator": "VL4POSE_COORDINATOR_PORT"}[name]
        raise StackError(f"port {port} on {config.host} is busy (needed by {name}); stop what uses it, or choose "
                         f"another port with {variable}=<port> bash scripts/start.sh")


def start_service(config: StackConfig, name: str, timeout: float = 240.0) -> int:
    """Start one service unless it already runs; returns its pid."""
    pid = running_pid(config, name)
    if pid is not None:
        return pid
    if name in config.ports:
        check_port(config, name)
    if name == "labelstudio":
        server = config.labelstudio()
        config.log_dir.mkdir(parents=True, exist_ok=True)
        server.start(timeout=timeout, log_file=config.log_dir / "labelstudio.log")
        _write_record(config, name, server.process.pid, _cmdline(server.process.pid))
        return server.process.pid
    process = _spawn(config, name)
    log_file = config.log_dir / f"{name}.log"
    if name in HEALTH:
        wait_http(config.url(name) + HEALTH[name], process, timeout, name, log_file)
    else:
        time.sleep(2.0)
        if process.poll() is not None:
            raise StackError(f"{name} exited with code {process.returncode}; see {log_file}")
    return process.pid


def stop_service(config: StackConfig, name: str, timeout: float = 20.0, kill: bool = False) -> bool:
    """Stop a service and its process group (SIGTERM, then SIGKILL; ``kill`` = SIGKILL at once, as a crash)."""
    pid = running_pid(config, name)
    if pid is None:
        _record_path(config, name).unlink(missing_ok=True)
        return False
    try:
        os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.2)
    if _group_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while _group_alive(pid) and time.monotonic() < deadline + 10:
            time.sleep(0.2)
    _record_path(config, name).unlink(missing_ok=True)
    return True


def _group_alive(pgid: int) -> bool:
    """Some process of the group still runs (zombies do not count)."""
    _reap(pgid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _reap(pid: int) -> None:
    """Collect a child that has exited (when this process started it)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def status(config: StackConfig) -> dict[str, dict]:
    """Per service: pid (or None), port and whether it answers."""
    out = {}
    for name in SERVICES:
        pid = running_pid(config, name)
        answering = None
        if pid is not None and name == "labelstudio":
            client = connect(config.url(name), config.secrets.ls_token, timeout=3.0)
            answering = answers(client)
            client.close()
        elif pid is not None and name in config.ports:
            try:
                answering = requests.get(config.url(name) + HEALTH[name], timeout=3).status_code == 200
            except requests.RequestException:
                answering = False
        out[name] = {"pid": pid, "port": config.ports.get(name), "answering": answering}
    return out


def start_all(config: StackConfig, names: tuple[str, ...] = SERVICES) -> dict[str, int]:
    return {name: start_service(config, name) for name in names}


def stop_all(config: StackConfig) -> list[str]:
    """Stop every service (worker first, Label Studio last); returns those that were running."""
    return [name for name in reversed(SERVICES) if stop_service(config, name)]
