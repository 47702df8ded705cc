"""A training run folder's resume point, ``state.pt``: written atomically, read back only by the same run.

The state holds the networks', the optimiser's and the time budget's progress, the epoch and step to resume
at, the best validation figure and the history (see :meth:`vl4pose.train.Trainer.fit`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from vl4pose.atomic import write_atomic_with
from vl4pose.budget import TimeBudget
from vl4pose.errors import TrainingError

STATE = "state.pt"


def budget_state(budget: TimeBudget | None) -> dict | None:
    """What of a time budget a resumed run needs (seconds spent, per step, per validation); None without one."""
    if budget is None:
        return None
    return {"spent": budget.elapsed(), "step_seconds": budget.step_seconds,
            "validation_seconds": budget.validation_seconds}


def resumed_budget(seconds: float | None, saved: dict | None, clock: Callable[[], float]) -> TimeBudget | None:
    """A run's time budget of ``seconds`` (None: none), continuing from :func:`budget_state`'s ``saved``."""
    if not seconds:
        return None
    saved = saved or {}
    return TimeBudget(seconds, spent=saved.get("spent", 0.0), step_seconds=saved.get("step_seconds", 0.0),
                      validation_seconds=saved.get("validation_seconds", 0.0), clock=clock)


def save_state(out: Path, state: dict) -> None:
    """Write ``state`` to ``out/state.pt`` (a temporary sibling, then renamed: never half-written)."""
    write_atomic_with(out / STATE, lambda handle: torch.save(state, handle))


def load_state(out: Path, config: dict, defaults: dict, model: dict) -> dict | None:
    """The state in ``out`` (None when there is none), checked against the run about to resume it.

    Args:
        config: the run's ``TrainConfig.to_dict()``; defaults: ``TrainConfig().to_dict()`` (settings added
            since the state was written count at their defaults); model: ``ModelConfig.to_dict()``. How the
            batch is split (processes x ``accumulate``) may change between runs.

    Raises:
        TrainingError: the folder holds a run with other settings.
    """
    path = out / STATE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = {**defaults, **state["config"], "accumulate": 0}
    if saved != {**config, "accumulate": 0} or state["model"] != model:
        raise TrainingError(f"{out} holds a run with other settings; use another --out or delete {path}")
    return state
