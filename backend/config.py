"""Coordinator settings: read once from ``VL4POSE_*`` environment variables in each process's factory.

Every field of :class:`Settings` is one environment variable: the field name upper-cased with the
``VL4POSE_`` prefix (``database_url`` -> ``VL4POSE_DATABASE_URL``). ``docs/COORDINATOR.md`` lists them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.settings import PREFIX, EnvReader
from vl4pose.blazepose import interpreter
from vl4pose.errors import ConfigError
from vl4pose.pipeline_config import PredictorConfig

REQUIRED = ("webhook_secret", "api_token")
SECRETS = ("webhook_secret", "api_token", "label_studio_token", "secret_key", "ml_basic_auth_password")
MIN_SECRET_LENGTH = 16
ACQUISITION_STRATEGIES = ("vl4pose", "random", "vl4pose_mix")
"""Queue orders a project may use (``random``: a fixed pseudo-random control; ``vl4pose_mix``: joint, rank as score)."""


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


# an empty variable is read as the empty value (``""`` for a string, refused for a number)
READER = EnvReader(error=SettingsError, docs="docs/COORDINATOR.md")


@dataclass(frozen=True)
class Settings:
    """All coordinator settings (see docs/COORDINATOR.md for the meaning of each)."""

    # storage
    database_url: str = "sqlite:///storage/coordinator.sqlite"
    storage_dir: str = "storage"
    models_dir: str = "storage/models"
    auto_migrate: bool = True
    # Label Studio and the other services
    label_studio_url: str = "http://127.0.0.1:8080"
    label_studio_token: str = ""
    label_studio_files_root: str = ""
    label_studio_timeout_s: float = 30.0
    ml_backend_url: str = ""
    ml_basic_auth_user: str = ""
    ml_basic_auth_password: str = ""
    public_url: str = "http://127.0.0.1:8200"
    image_import: str = "auto"
    # security
    webhook_secret: str = ""
    api_token: str = ""
    secret_key: str = ""
    max_request_bytes: int = 4 * 1024 * 1024
    # queue and worker
    queue: str = "sqlite"
    worker_threads: int = 2
    reconcile_minutes: int = 2
    inbox_keep_days: int = 30
    job_retries: int = 5
    job_retry_delay_s: float = 30.0
    job_stale_s: float = 600.0
    torch_threads: int = 0
    # rounds and training
    round_budget: int = 100
    holdout_fraction: float = 0.1
    acquisition_strategy: str = "vl4pose_mix"
    """The queue order of newly linked projects (a link request may choose another): one of
    ``ACQUISITION_STRATEGIES``; a joint one (``vl4pose_mix``) reaches Label Studio as rank-as-score. The default
    is ``vl4pose_mix``: on the issue-12 protocol (docs/RESULTS.md) it was above plain ``vl4pose`` in every seed on
    validation (+0.93 points) and level with ``random``."""
    train_preset: str = "cpu"
    train_epochs: int = 4
    train_time_budget_minutes: float = 0.0
    """> 0: each round's training ends on time after this many minutes (the schedule follows the budget and
    train_epochs no longer applies); 0: train_epochs epochs."""
    train_batch_size: int = 16
    train_steps_per_epoch: int = 0
    train_lr: float = 1e-3
    train_aux_lr: float = 1e-3
    train_warmup_steps: int = 50
    train_save_every_s: float = 120.0
    train_val_fraction: float = 0.1
    train_processes: int = 1
    """> 1: each round trains data-parallel in this many processes on the worker's machine (torchrun; one GPU
    each on CUDA); 1: in the worker's own process."""
    eval_box: str = "auto"
    box_passes: int = PredictorConfig.box_passes
    box_tolerance: float = PredictorConfig.box_tolerance
    blazepose: bool = PredictorConfig.blazepose
    """Person finding of the automatic box and the opt-in BlazePose second opinion in ranking and held-out
    evaluation (:class:`vl4pose.pipeline_config.PredictorConfig`); the ML backend reads the same variables, so the
    ranked and the served poses agree."""
    rank_batch_size: int = 32
    rank_shard_size: int = 1000
    rank_poll_s: float = 2.0
    import_chunk: int = 500
    prune_timeout_s: float = 1800.0
    """Deadline of one Label Studio request that deletes a superseded version's predictions (pruning): Label
    Studio deletes them in one transaction that takes minutes at 100,000 tasks, and goes on if we stop waiting."""
    reconcile_page_size: int = 200
    reconcile_full_hours: float = 24.0
    reconcile_overlap_s: float = 30.0
    image_max_bytes: int = 50 * 1024 * 1024
    image_cache_mb: int = 2048
    log_level: str = "INFO"

    # -- derived ------------------------------------------------------------------------------------
    @property
    def storage_path(self) -> Path:
        return Path(self.storage_dir)

    @property
    def session_secret(self) -> str:
        """Signs the dashboard's session cookie: ``secret_key`` or a key derived from the API token."""
        return self.secret_key or hashlib.sha256(b"vl4pose-session:" + self.api_token.encode()).hexdigest()

    @property
    def queue_file(self) -> Path:
        return self.storage_path / "queue.sqlite"

    def predictor_config(self) -> PredictorConfig:
        """The Predictor settings of ranking and held-out evaluation: batch size and person finding (the ML backend
        reads the same ``VL4POSE_BOX_*`` and ``VL4POSE_BLAZEPOSE`` variables, so the ranked and the served poses
        agree)."""
        return PredictorConfig(batch_size=self.rank_batch_size, box_passes=self.box_passes,
                               box_tolerance=self.box_tolerance, blazepose=self.blazepose)

    def redacted(self) -> dict[str, Any]:
        """The settings with secrets replaced, safe to log or show."""
        out = dataclasses.asdict(self)
        for name in SECRETS:
            out[name] = "***" if out[name] else ""
        return out

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        require_secrets: bool = True,
    ) -> "Settings":
        """Settings from ``VL4POSE_*`` variables, then ``overrides`` (field names, e.g. a test config)."""
        environ = os.environ if environ is None else environ
        settings = READER.load(cls, environ, overrides)
        settings.validate(require_secrets)
        return settings

    def validate(self, require_secrets: bool = True) -> None:
        if require_secrets:
            for name in REQUIRED:
                value = getattr(self, name)
                if len(value) < MIN_SECRET_LENGTH:
                    raise SettingsError(
                        f"{PREFIX}{name.upper()} must be set to a random string of at least {MIN_SECRET_LENGTH} "
                        f"characters (got {len(value)}); e.g. "
                        "`python -c 'import secrets; print(secrets.token_urlsafe())'`"
                    )
        if self.image_import not in ("auto", "local-files", "upload"):
            raise SettingsError(f"{PREFIX}IMAGE_IMPORT must be auto, local-files or upload, not {self.image_import!r}")
        if self.acquisition_strategy not in ACQUISITION_STRATEGIES:
            raise SettingsError(f"{PREFIX}ACQUISITION_STRATEGY must be one of {list(ACQUISITION_STRATEGIES)}, not "
                                f"{self.acquisition_strategy!r} (vl4pose_kcentre, vl4pose_strata, stratified and "
                                "coreset need an embedding the Predictor does not return)")
        if self.eval_box not in ("auto", "gt"):
            raise SettingsError(f"{PREFIX}EVAL_BOX must be auto or gt, not {self.eval_box!r}")
        if not (self.queue in ("sqlite", "memory", "immediate") or self.queue.startswith(("redis://", "rediss://"))):
            raise SettingsError(
                f"{PREFIX}QUEUE must be sqlite, immediate, memory or a redis:// URL, not {self.queue!r}"
            )
        if not self.prune_timeout_s > 0:
            raise SettingsError(f"{PREFIX}PRUNE_TIMEOUT_S must be a number of seconds > 0, not {self.prune_timeout_s}")
        if self.image_cache_mb < 0:
            raise SettingsError(f"{PREFIX}IMAGE_CACHE_MB must be 0 (no limit) or a size in MB, not {self.image_cache_mb}")
        if not 1 <= self.reconcile_minutes <= 59:
            raise SettingsError(f"{PREFIX}RECONCILE_MINUTES must be between 1 and 59, not {self.reconcile_minutes}")
        if self.box_tolerance < 0:
            raise SettingsError(f"{PREFIX}BOX_TOLERANCE must be >= 0 (0 = every person-finding pass), "
                                f"not {self.box_tolerance}")
        if self.train_time_budget_minutes < 0:
            raise SettingsError(f"{PREFIX}TRAIN_TIME_BUDGET_MINUTES must be >= 0 (0 = train_epochs epochs), "
                                f"not {self.train_time_budget_minutes}")
        for name in ("holdout_fraction", "train_val_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise SettingsError(f"{PREFIX}{name.upper()} must be in [0, 1), not {getattr(self, name)}")
        for name in (
            "round_budget",
            "train_epochs",
            "train_batch_size",
            "train_processes",
            "rank_batch_size",
            "rank_shard_size",
            "import_chunk",
            "reconcile_page_size",
            "worker_threads",
            "box_passes",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{PREFIX}{name.upper()} must be at least 1, not {getattr(self, name)}")
        if self.blazepose:
            try:
                interpreter()  # fail at start-up, with the fix, not in the first ranking job
            except ConfigError as exc:
                raise SettingsError(f"{PREFIX}BLAZEPOSE: {exc}") from None
