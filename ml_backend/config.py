"""Settings of the ML backend, read once from ``VL4POSE_*`` environment variables in the app factory.

Every field is documented in ``docs/ML_BACKEND.md`` (keep the two in step).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.settings import EnvReader
from vl4pose.blazepose import interpreter
from vl4pose.errors import ConfigError
from vl4pose.fetch import parse_networks
from vl4pose.pipeline_config import PredictorConfig

DEFAULT_FORWARD_ACTIONS = (
    "START_TRAINING", "ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED",
    "TASKS_CREATED", "TASKS_DELETED",
)


@dataclass(frozen=True)
class MLBackendConfig:
    """All settings of one ML backend process (environment variable = ``VL4POSE_`` + upper-case name,
    except where ``ENV_NAMES`` says otherwise)."""

    models_dir: Path = Path("storage/models")
    image_cache_dir: Path = Path("storage/image_cache")
    image_cache_max_mb: int = 1024
    state_dir: Path = Path("storage/ml_backend")
    auth: str = "basic"
    basic_auth_user: str | None = None
    basic_auth_password: str | None = field(default=None, repr=False)
    coordinator_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_timeout: float = 5.0
    webhook_actions: tuple[str, ...] = DEFAULT_FORWARD_ACTIONS
    label_studio_url: str | None = None
    label_studio_token: str | None = field(default=None, repr=False)
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_request_bytes: int = 32 * 1024 * 1024
    fetch_timeout: float = 10.0
    fetch_deadline: float = 30.0
    fetch_workers: int = 4
    fetch_allow_hosts: tuple[str, ...] = ()
    fetch_allow_networks: tuple[str, ...] = ()
    predict_chunk: int = 64
    model_poll_seconds: float = 1.0
    interactive_cache_size: int = 32
    click_memory_seconds: float = 900.0
    """How long a task's interactive clicks are kept after its last click (:mod:`ml_backend.clickmemory`); 0: not
    kept (a later click's re-solve then clamps only that click)."""
    torch_threads: int = 0
    preload_model: bool = True
    box_passes: int = PredictorConfig.box_passes
    box_tolerance: float = PredictorConfig.box_tolerance
    blazepose: bool = PredictorConfig.blazepose
    """Person finding of the automatic box and the opt-in BlazePose second opinion
    (:class:`vl4pose.pipeline_config.PredictorConfig`); the coordinator reads the same variables, so the ranked and
    the served poses agree."""

    @property
    def auth_enabled(self) -> bool:
        return self.auth == "basic"

    @property
    def forwarding_enabled(self) -> bool:
        return bool(self.coordinator_url)


ENV_NAMES = {
    "basic_auth_user": "ML_BASIC_AUTH_USER",
    "basic_auth_password": "ML_BASIC_AUTH_PASSWORD",
    "state_dir": "ML_STATE_DIR",
    "auth": "ML_AUTH",
}
# a blank variable leaves the default (a blank override means None); list items are compared case-insensitively
READER = EnvReader(error=ConfigError, what="ML backend setting", docs="docs/ML_BACKEND.md", renames=ENV_NAMES,
                   empty_is_unset=True, convert_overrides=True,
                   list_case={"webhook_actions": "upper", "fetch_allow_hosts": "lower",
                              "fetch_allow_networks": "lower"})


def env_name(field_name: str) -> str:
    """The environment variable of a config field, e.g. ``models_dir`` -> ``VL4POSE_MODELS_DIR``."""
    return READER.env_name(field_name)


def load_config(environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> MLBackendConfig:
    """Build the config from ``environ`` (``VL4POSE_*`` variables), then apply ``overrides`` by field name.

    Raises:
        ConfigError: a value cannot be converted, a number is out of range, or an override names no field.
    """
    config = READER.load(MLBackendConfig, environ, overrides)
    _check(config)
    return config


def _check(config: MLBackendConfig) -> None:
    positive = ("image_cache_max_mb", "max_image_bytes", "max_image_pixels", "max_request_bytes", "fetch_timeout",
                "fetch_deadline", "fetch_workers", "predict_chunk", "interactive_cache_size", "webhook_timeout")
    for name in positive:
        if getattr(config, name) is None or getattr(config, name) <= 0:
            raise ConfigError(f"{env_name(name)} must be a positive number, got {getattr(config, name)!r}")
    for name in ("model_poll_seconds", "torch_threads", "click_memory_seconds"):
        if getattr(config, name) < 0:
            raise ConfigError(f"{env_name(name)} must be >= 0, got {getattr(config, name)!r}")
    if config.box_passes < 1 or config.box_tolerance < 0:
        raise ConfigError(f"{env_name('box_passes')} must be at least 1 and {env_name('box_tolerance')} at least 0, "
                          f"got {config.box_passes!r} and {config.box_tolerance!r} (e.g. 6 and 0.05; unset: 2 and 0)")
    if config.blazepose:
        interpreter()  # fail at start-up, with the fix, not at the first request
    _check_auth(config)
    try:
        parse_networks(config.fetch_allow_networks)
    except ValueError as exc:
        raise ConfigError(f"{env_name('fetch_allow_networks')}: {exc}") from None
    for name in ("coordinator_url", "label_studio_url"):
        url = getattr(config, name)
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"{env_name(name)} must start with http:// or https://, got {url!r}")
    if config.coordinator_url and not config.webhook_secret:
        raise ConfigError(f"{env_name('coordinator_url')} is set: also set {env_name('webhook_secret')} "
                          "(the shared secret the coordinator checks)")


def _check_auth(config: MLBackendConfig) -> None:
    user, password = env_name("basic_auth_user"), env_name("basic_auth_password")
    if config.auth not in ("basic", "none"):
        raise ConfigError(f"{env_name('auth')} must be 'basic' (the default) or 'none', got {config.auth!r}")
    if config.auth == "none":
        if config.basic_auth_user or config.basic_auth_password:
            raise ConfigError(f"{env_name('auth')}=none but {user}/{password} are set; remove one or the other")
        return
    if not config.basic_auth_user or not config.basic_auth_password:
        raise ConfigError(f"the ML backend requires HTTP Basic auth: set {user} and {password} (bash "
                          "scripts/start.sh generates them) and connect the backend in Label Studio with "
                          f"authentication on; or set {env_name('auth')}=none to run it without auth on a "
                          "network where nobody else can reach it")
