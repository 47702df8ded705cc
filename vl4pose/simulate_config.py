"""Settings and bookkeeping helpers of the active-learning simulation (see :mod:`vl4pose.simulate_protocol`)."""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from vl4pose.data.sample import Sample
from vl4pose.errors import ConfigError
from vl4pose.models import preset
from vl4pose.skeletons import Skeleton
from vl4pose.strategies import get_strategies
from vl4pose.train import TrainConfig

ALL_STRATEGIES = ("random", "multipeak_entropy", "learning_loss", "coreset", "aleatoric", "vl4pose")


@dataclass(frozen=True)
class SimulationConfig:
    """The protocol. ``epochs`` per fine-tuning round, ``initial_epochs`` for the round-0 model trained from
    scratch (0 or None = ``epochs``);
    ``pool_subset`` > 0 scores only that many random unlabelled images per round (0 = the whole pool)."""

    strategies: tuple[str, ...] = ALL_STRATEGIES
    initial: int = 500
    budget: int = 500
    rounds: int = 4
    seeds: tuple[int, ...] = (0, 1, 2)
    preset: str = "cpu"
    epochs: int = 4
    initial_epochs: int | None = 40
    steps_per_epoch: int | None = None
    batch_size: int = 16
    lr: float | None = None
    warmup_steps: int | None = None
    pool_subset: int = 0
    inference_batch: int = 32
    analysis: bool = True

    RESUMABLE_CHANGES = ("seeds", "rounds", "analysis", "inference_batch")

    def validate(self) -> "SimulationConfig":
        get_strategies(self.strategies)
        preset(self.preset)
        if self.initial < 1 or self.budget < 1 or self.rounds < 0 or not self.seeds:
            raise ConfigError("need --initial >= 1, --budget >= 1, --rounds >= 0 and at least one seed")
        return self

    def train_config(self, seed: int, round_index: int, heads: tuple[str, ...]) -> TrainConfig:
        epochs = self.initial_epochs if round_index == 0 and self.initial_epochs else self.epochs
        extra = {k: v for k, v in {"lr": self.lr, "warmup_steps": self.warmup_steps}.items() if v is not None}
        return replace(TrainConfig(), epochs=epochs, batch_size=self.batch_size, steps_per_epoch=self.steps_per_epoch,
                       seed=seed, heads=heads, **extra)

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
    """Write JSON atomically (temporary sibling + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2) + "\n")
    os.replace(tmp, path)


def rng_stream(seed: int, round_index: int, name: str) -> np.random.Generator:
    """A random stream of its own per seed, round and strategy (stable across runs and processes)."""
    return np.random.default_rng([seed, round_index, zlib.crc32(name.encode())])
