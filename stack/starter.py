"""The starter model: round 0, trained on the demo's seed labels when no model exists yet.

A short run of :class:`vl4pose.train.Trainer` (``cpu`` preset by default) on a few hundred labelled images,
with a progress line on the terminal. The run folder is resumable: an interrupted start-up continues where
it stopped, and a finished one is reused by every later start.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SHIPPED_STARTER = Path(__file__).resolve().parents[1] / "models" / "lsp14-starter"
"""The committed human-pose starter (``scripts/ship_starter.py``; data, recipe and figures in its MODEL_CARD.md)."""
SHIPPED_STARTER_EXCLUDES = 200
"""It was trained on the LSPET pool without its first 200 images: the LSPET demo's tasks."""


def shipped_starter(skeleton: str, demo_tasks: int = 0) -> Path | None:
    """The shipped starter for an ``lsp14`` project on real photographs, or None: another skeleton, no shipped
    model, or an LSPET demo with more than the 200 tasks the starter never saw (it would know their answers)."""
    if skeleton != "lsp14" or demo_tasks > SHIPPED_STARTER_EXCLUDES or not (SHIPPED_STARTER / "weights.pt").is_file():
        return None
    return SHIPPED_STARTER


@dataclass(frozen=True)
class StarterConfig:
    """How the starter model is trained (``VL4POSE_STARTER_*`` settings, see README)."""

    preset: str = "cpu"
    epochs: int = 8
    batch_size: int = 16
    steps_per_epoch: int = 0
    val_images: int = 60


def checkpoint_ready(run: Path) -> bool:
    """A finished starter run (its calibrated ``best/`` and no resume state left to continue)."""
    return (run / "best" / "config.json").is_file() and (run / "DONE").is_file()


class ProgressLine:
    """Prints ``training the starter model: epoch 2/8, step 10/18, 35 %, about 1 min left`` in place."""

    def __init__(self, stream=sys.stdout) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.last = 0.0
        self.first: float | None = None  # the fraction done when this process started (a resumed run)
        self.interactive = stream.isatty()

    def __call__(self, progress) -> None:
        now = time.monotonic()
        if now - self.last < (0.5 if self.interactive else 15.0) and progress.validation is None:
            return
        self.last = now
        fraction = progress.fraction
        if self.first is None:  # the rate is measured from the first report on
            self.first, self.started = fraction, now
        done = fraction - self.first
        left = f"about {_duration((now - self.started) * (1 - fraction) / done)} left" if done > 0 else "timing it"
        where = f"step {progress.step}/{progress.steps}" if progress.validation is None else "validated"
        text = (
            f"  training the starter model: epoch {progress.epoch + 1}/{progress.epochs}, {where}, "
            f"{100 * fraction:.0f} %, {left}"
        )
        if progress.validation is not None:
            text += f" (validation PCK@0.2 {100 * progress.validation.get('pck@0.2', 0.0):.1f} %)"
        self.stream.write(("\r" + text.ljust(110)) if self.interactive else text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.interactive:
            self.stream.write("\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def train_starter(data: Path, run: Path, first_seed: int, seed_count: int, config: StarterConfig) -> Path:
    """Train (or resume, or reuse) the starter model on LSP-format ``data``; returns its checkpoint folder.

    Args:
        data: an LSP-format folder with ``pool`` and ``val`` splits.
        run: the run folder (``run/best`` is the checkpoint).
        first_seed, seed_count: pool images ``[first_seed, first_seed + seed_count)`` train it (they are not
            among the project's tasks).
    """
    # deferred on purpose: training loads torch, which start, stop and status never need
    from vl4pose.data import load_samples
    from vl4pose.models import preset
    from vl4pose.skeletons import LSP14
    from vl4pose.train import TrainConfig, Trainer

    if checkpoint_ready(run):
        return run / "best"
    pool = load_samples("lspet", data, "pool")
    train = pool[first_seed : first_seed + seed_count]
    val = load_samples("lspet", data, "val")[: config.val_images]
    settings = TrainConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        steps_per_epoch=config.steps_per_epoch or None,
        warmup_steps=20,
        save_every_s=30.0,
    )
    steps = min(len(train) // config.batch_size or 1, config.steps_per_epoch or 10**9)
    print(
        f"  no model yet: training a starter model ({config.preset} preset) on {len(train)} labelled images, "
        f"{config.epochs} epochs of {steps} steps (round 0; a few minutes on a laptop CPU)",
        flush=True,
    )
    line = ProgressLine()
    started = time.monotonic()
    Trainer(preset(config.preset), LSP14, settings, run, callbacks=[line]).fit(train, val)
    line.done()
    (run / "DONE").write_text(f"{time.monotonic() - started:.1f}\n")
    (run / "state.pt").unlink(missing_ok=True)
    print(f"  starter model ready in {_duration(time.monotonic() - started)}: {run / 'best'}", flush=True)
    return run / "best"
