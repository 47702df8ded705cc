"""A wall-clock training budget that the learning-rate schedule follows.

The schedule's progress is the share of the *step time* already used out of the step time the budget
still allows, re-estimated at every step from the measured step and validation times. A run whose
throughput drops midway therefore reaches the end of its schedule (and stops) on time instead of
running over; no epoch count is fixed in advance.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vl4pose.errors import TrainingError


@dataclass
class TimeBudget:
    """Tracks one training run against ``seconds`` of wall-clock time.

    Args:
        seconds: the whole budget (decoding, steps, validations, final calibration).
        spent: seconds already used by earlier attempts of the same run (resume).
        clock: a monotonic clock (tests may pass a fake one).
    """

    seconds: float
    spent: float = 0.0
    clock: Callable[[], float] = time.monotonic
    step_seconds: float = 0.0
    """Time spent in training steps so far (all attempts)."""
    validation_seconds: float = 0.0
    """Longest validation pass measured (0 until the first one)."""
    _started: float = field(default=0.0, init=False)
    _fraction: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise TrainingError(f"time budget must be positive (got {self.seconds} s); pass --time-budget MINUTES > 0")
        self._started = self.clock() - self.spent

    def elapsed(self) -> float:
        return self.clock() - self._started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def step_time_left(self, steps_per_epoch: int, step_in_epoch: int, per_step: float, val_estimate: float) -> float:
        """Seconds still available for training steps after reserving the validations they imply.

        Reserved: one validation per epoch end still reachable, one final validation and one calibration pass
        (about one more validation).
        """
        left = self.left()
        validation = max(self.validation_seconds, val_estimate)
        epoch_seconds = steps_per_epoch * per_step + validation
        epoch_ends = math.floor((left - 2 * validation + step_in_epoch * per_step) / epoch_seconds) \
            if epoch_seconds > 0 else 0
        return left - validation * (max(epoch_ends, 0) + 2)

    def fraction(self, step_time_left: float) -> float:
        """Schedule progress in [0, 1], never moving backwards."""
        total = self.step_seconds + max(step_time_left, 0.0)
        value = self.step_seconds / total if total > 0 else 1.0
        self._fraction = min(1.0, max(self._fraction, value))
        return self._fraction

    def check_fits_one_epoch(self, steps_per_epoch: int, per_step: float, val_estimate: float) -> None:
        """Refuse a budget that cannot hold one pass over the training data (a model that never saw its data)."""
        needed = steps_per_epoch * per_step + 3 * val_estimate
        if self.elapsed() + needed > self.seconds:
            minutes = math.ceil((self.elapsed() + needed) / 60.0)
            raise TrainingError(
                f"a time budget of {self.seconds / 60:.1f} min cannot hold one epoch here: {steps_per_epoch} steps at "
                f"the measured {per_step:.2f} s/step plus validation need about {needed / 60:.1f} min after "
                f"{self.elapsed() / 60:.1f} min of set-up; give --time-budget {minutes} or more, train on fewer "
                "images, or use a smaller preset")


class StepMeter:
    """Measured training step time (an average that follows changes; the first, slow step is left out)."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.per_step = 0.0
        self.timed = 0
        self.validation_seconds = 0.0
        self._first = True

    def add(self, seconds: float) -> None:
        if self._first:
            self._first = False
            self.per_step = seconds
            return
        self.per_step = seconds if self.timed == 0 else 0.9 * self.per_step + 0.1 * seconds
        self.timed += 1

    @property
    def images_per_second(self) -> float:
        return self.batch_size / self.per_step if self.per_step > 0 else 0.0

    def validation_estimate(self, images: int) -> float:
        """Seconds for a validation pass: measured once there was one, else about half a training step per image."""
        if self.validation_seconds > 0:
            return self.validation_seconds
        return images * self.per_step / max(self.batch_size, 1) / 2.0


def minutes_text(seconds: float) -> str:
    return f"{max(seconds, 0.0) / 60.0:.1f} min"


@dataclass
class Progress:
    """What callbacks receive: epoch (0-based), step within the epoch, steps per epoch, running loss."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    validation: dict | None = None
    budget_fraction: float | None = None
    """Share of the time budget's schedule done (time-budget runs only)."""
    seconds_left: float | None = None
    """Time left in the budget (time-budget runs only)."""

    @property
    def fraction(self) -> float:
        if self.budget_fraction is not None:
            return self.budget_fraction
        return (self.epoch + self.step / max(self.steps, 1)) / max(self.epochs, 1)


def lr_factor(step: int, total: int, warmup: int, low: float) -> float:
    """Learning-rate multiplier of a fixed-length run: linear warm-up over ``warmup`` steps, then cosine to ``low``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def budget_lr_factor(step: int, fraction: float, warmup: int, low: float) -> float:
    """Warm-up by steps, then cosine over the share of the time budget used."""
    warm = min(1.0, (step + 1) / max(warmup, 1))
    return warm * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0))))


def budget_decision(budget: TimeBudget, meter: StepMeter, steps: int, step: int, val_images: int,
                    check: bool) -> tuple[float, float, float]:
    """(stop 1/0, schedule share, seconds left) before step ``step`` of a time-budget run.

    ``check``: refuse a budget that cannot hold one epoch (:meth:`TimeBudget.check_fits_one_epoch`) first.
    """
    val_estimate = meter.validation_estimate(val_images)
    if check:
        budget.check_fits_one_epoch(steps, meter.per_step, val_estimate)
    left = budget.step_time_left(steps, step, meter.per_step, val_estimate)
    if left <= 0 and budget.step_seconds > 0:
        return 1.0, 0.0, 0.0
    return 0.0, budget.fraction(left), budget.left()


def progress_line(epoch: int, step: int, steps: int, loss: float, meter: StepMeter, budget: TimeBudget | None,
                  steps_left: int, lr_factor: float) -> str:
    """One line a log file can follow: where the run is, how fast it goes, how long it has left."""
    left = budget.left() if budget is not None else steps_left * meter.per_step
    return (f"epoch {epoch + 1} step {step}/{steps}: loss {loss:.5f}, {meter.images_per_second:.1f} images/s, "
            f"lr x{lr_factor:.3f}, {minutes_text(left)} left"
            + (f" of a {minutes_text(budget.seconds)} budget" if budget is not None else ""))
