"""What a running system is: its credentials (:class:`Secrets`), where and how it runs (:class:`StackConfig`: ports,
storage, the ``VL4POSE_*`` wiring each service gets) and the command line of each of our services.

:mod:`stack.services` starts, finds and stops the processes this describes.
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

from stack.labelstudio import LabelStudioServer

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("labelstudio", "ml", "coordinator", "worker")


class StackError(RuntimeError):
    """A service could not be started, or the system is not in the state a command needs."""


def _password() -> str:
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
