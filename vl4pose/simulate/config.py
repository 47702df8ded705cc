"""Settings and bookkeeping helpers of the active-learning simulation (see :mod:`vl4pose.simulate.protocol`)."""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from vl4pose.atomic import write_atomic
from vl4pose.checkpoint import Checkpoint
from vl4pose.data.sample import Sample
from vl4pose.errors import ConfigError
from vl4pose.models import preset
from vl4pose.skeletons import Skeleton
from vl4pose.strategies import get_strategies
from vl4pose.train import TrainConfig

ALL_STRATEGIES = ("random", "multipeak_entropy", "learning_loss", "coreset", "aleatoric", "vl4pose")
PROTOCOL_STRATEGIES = ("random", "multipeak_entropy", "vl4pose")
"""The arms of the CPU protocol (issue 12); the VL4Pose variants run as ablations into the same folder."""
VARIANTS = ("vl4pose_kcentre", "vl4pose_mix", "vl4pose_edges", "vl4pose_entropy")


@dataclass(frozen=True)
class SimulationConfig:
    """The protocol (defaults: the CPU protocol of docs/SIMULATION.md, 1,000 + 3 x 500, 3 seeds).

    ``epochs`` per fine-tuning round, ``initial_epochs`` for the round-0 model trained from scratch (0 or
    None = ``epochs``). ``time_budget_min`` / ``initial_time_budget_min``: wall-clock minutes per
    fine-tuning / round-0 training run (decoding, steps, validations, calibration; the learning-rate
    schedule follows the share used and the epochs only cap it); None = a fixed number of epochs.
    ``pool_subset`` > 0 scores only that many random unlabelled images per round (0 = the whole pool).
    ``strategies`` may grow between runs of one folder: a new arm reuses the cached round-0 models and
    runs only its own rounds (an ablation)."""

    strategies: tuple[str, ...] = PROTOCOL_STRATEGIES
    initial: int = 1000
    budget: int = 500
    rounds: int = 3
    seeds: tuple[int, ...] = (0, 1, 2)
    preset: str = "cpu"
    epochs: int = 30
    initial_epochs: int | None = 100
    time_budget_min: float | None = 3.0
    initial_time_budget_min: float | None = 11.0
    steps_per_epoch: int | None = None
    batch_size: int = 16
    lr: float | None = None
    warmup_steps: int | None = None
    pool_subset: int = 0
    inference_batch: int = 32
    analysis: bool = True

    RESUMABLE_CHANGES = ("seeds", "rounds", "analysis", "inference_batch", "strategies")

    def validate(self) -> "SimulationConfig":
        get_strategies(self.strategies)
        preset(self.preset)
        if self.initial < 1 or self.budget < 1 or self.rounds < 0 or not self.seeds:
            raise ConfigError("need --initial >= 1, --budget >= 1, --rounds >= 0 and at least one seed")
        for name in ("time_budget_min", "initial_time_budget_min"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be positive minutes or None (got {value}); "
                                  "pass --no-time-budget for fixed epochs")
        return self

    def time_budget_s(self, round_index: int) -> float | None:
        """Wall-clock seconds of one training run of that round (None: fixed epochs)."""
        minutes = self.initial_time_budget_min if round_index == 0 else self.time_budget_min
        return None if minutes is None else 60.0 * minutes

    def train_config(self, seed: int, round_index: int, heads: tuple[str, ...]) -> TrainConfig:
        epochs = self.initial_epochs if round_index == 0 and self.initial_epochs else self.epochs
        extra = {k: v for k, v in {"lr": self.lr, "warmup_steps": self.warmup_steps}.items() if v is not None}
        return replace(TrainConfig(), epochs=epochs, batch_size=self.batch_size, steps_per_epoch=self.steps_per_epoch,
                       seed=seed, heads=heads, time_budget_s=self.time_budget_s(round_index), **extra)

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


@dataclass
class SimulationData:
    """The splits and where they came from (recorded in the results)."""

    skeleton: Skeleton
    pool: list[Sample]
    val: list[Sample]
    test: list[Sample]
    source: dict


def json_safe(value: object) -> object:
    """JSON-safe copy: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(path: Path, data: object) -> None:
    """Write JSON atomically (:func:`vl4pose.atomic.write_atomic`)."""
    write_atomic(path, json.dumps(json_safe(data), indent=2) + "\n")


def rng_stream(seed: int, round_index: int, name: str) -> np.random.Generator:
    """A random stream of its own per seed, round and strategy (stable across runs and processes)."""
    return np.random.default_rng([seed, round_index, zlib.crc32(name.encode())])


def decode_workers() -> int:
    """Image-decoding threads for the pool and test caches: half the cores, at least 2, at most 8."""
    return max(2, min(8, (os.cpu_count() or 2) // 2))


def validation_metrics(ckpt: Checkpoint | None) -> dict:
    """The selected epoch's validation figures of a freshly trained checkpoint (choose settings on these):
    ``val_pck@0.2``, ``val_failure_auroc``, ``best_epoch`` and ``epochs_run`` (validations, partial included)."""
    metrics = ckpt.metrics if ckpt is not None else {}
    best = metrics.get("best_epoch") or {}
    return {"val_pck@0.2": best.get("pck@0.2"), "val_failure_auroc": best.get("failure_auroc"),
            "best_epoch": best.get("epoch"), "epochs_run": len(metrics.get("history") or [])}


def check_protocol(out: Path, config: SimulationConfig, source: dict, heads: tuple[str, ...]) -> tuple[str, ...]:
    """Check ``config`` against the protocol stored in ``out/config.json`` (if any), then store the merged one.

    A folder holds one protocol: the same data and settings, except :attr:`SimulationConfig.RESUMABLE_CHANGES`;
    new strategies join the stored ones (an ablation). Returns the auxiliary heads every arm trains: the
    folder's first run's (they must include ``heads``, the ones this run's strategies need).

    Raises:
        ConfigError: the folder holds a simulation of other data or settings, or its round-0 models lack a head.
    """
    path = out / "config.json"
    current = {"simulation": config.to_dict(), "data": source, "heads": list(heads)}
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("data") != current["data"]:
            raise ConfigError(f"{out} holds a simulation of other data ({stored.get('data')}); use another --out")
        missing = [h for h in heads if h not in stored.get("heads", [])]
        if missing:
            raise ConfigError(f"the round-0 models in {out} have no heads {missing} (trained with "
                              f"{stored.get('heads')}); run strategies needing them in another --out")
        heads = tuple(stored.get("heads", []))  # every arm trains the same heads (same cost)
        current["heads"] = list(heads)
        known = stored["simulation"].get("strategies", [])
        current["simulation"]["strategies"] = list(dict.fromkeys([*known, *config.strategies]))
        for name, value in current["simulation"].items():
            if name not in SimulationConfig.RESUMABLE_CHANGES and stored["simulation"].get(name) != value:
                raise ConfigError(f"{out} holds a simulation with {name}={stored['simulation'].get(name)!r} "
                                  f"(now {value!r}); use another --out or the same settings to resume")
    write_json(path, current)
    return heads
