"""Training: pose model and auxiliary heads in one loop, validation each epoch, resumable.

A run folder holds ``best/`` (the checkpoint of the best validation epoch: pose and auxiliary
weights from that same epoch, calibrated), ``state.pt`` (everything needed to resume) and
``history.json``. The trainer knows the models only through their forward and the heads' ``loss``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vl4pose.budget import StepMeter, TimeBudget, minutes_text
from vl4pose.calibrate import calibrate, score_pass, validation_pass
from vl4pose.checkpoint import Calibration, Checkpoint, load_checkpoint, save_checkpoint
from vl4pose.data.crops import CropCache
from vl4pose.data.sample import Sample
from vl4pose.data.transforms import AugmentConfig
from vl4pose.device import prepare_module, resolve_device, to_input, trunk_autocast
from vl4pose.errors import TrainingError
from vl4pose.heads import build_heads
from vl4pose.models import ModelConfig, PoseOutput, build_pose
from vl4pose.skeletons import Skeleton

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Both learning rates follow the same warm-up + cosine schedule."""

    epochs: int = 18
    batch_size: int = 16
    lr: float = 5e-3
    aux_lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 200
    min_lr_ratio: float = 0.02
    seed: int = 0
    max_candidates: int = 5
    heads: tuple[str, ...] = ()
    steps_per_epoch: int | None = None
    """Cap on steps per epoch (smoke tests); None = one pass over the data."""
    save_every_s: float = 300.0
    """Also save the resume state mid-epoch this often."""
    time_budget_s: float | None = None
    """Wall-clock budget of the whole run: the schedule follows the share of it used and the run ends on time
    (``epochs`` then only caps it). None: a fixed number of epochs."""
    log_every_s: float = 60.0
    """Log a progress line (step, images/s, time left) at least this often."""
    budget_check_steps: int = 10
    """Steps timed before a time budget is checked against one epoch."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["heads"] = list(self.heads)
        return out


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


class Trainer:
    """Fits a pose model and its heads on samples; writes a run folder.

    Args:
        model_config, skeleton, config: what to train and how.
        out: the run folder.
        init_from: a checkpoint to fine-tune from (same skeleton and model config).
        callbacks: called with :class:`Progress` after every step and every validation.
        device: ``auto``, ``cpu``, ``cuda`` (None: ``VL4POSE_DEVICE``, default auto). On CUDA the crop canvases
            stay on the GPU, batches are warped and encoded there, and the trunk runs in bf16 autocast.
        clock: monotonic seconds for the time budget and the progress log.
    """

    def __init__(self, model_config: ModelConfig, skeleton: Skeleton, config: TrainConfig, out: str | Path,
                 init_from: Checkpoint | None = None, callbacks: list[Callable[[Progress], None]] | None = None,
                 device: str | torch.device | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.model_config = model_config.validate()
        self.skeleton = skeleton
        self.config = config
        self.out = Path(out)
        self.callbacks = callbacks or []
        self.device = resolve_device(device)
        self.clock = clock  # the time budget's and the progress log's clock (tests pass a fake one)
        self.lr_factor = 1.0  # the schedule's current multiplier of both learning rates
        self.pose = build_pose(model_config, skeleton.num_keypoints)
        self.heads = build_heads(list(config.heads), model_config, skeleton)
        if init_from is not None:
            self._init_from(init_from)
        self.pose = prepare_module(self.pose, self.device)
        self.heads = self.heads.to(self.device)
        groups = [{"params": self.pose.parameters(), "lr": config.lr},
                  {"params": self.heads.parameters(), "lr": config.aux_lr}]
        self.optimizer = torch.optim.Adam(groups, weight_decay=config.weight_decay)

    def _init_from(self, ckpt: Checkpoint) -> None:
        if ckpt.skeleton.keypoints != self.skeleton.keypoints or ckpt.model_config != self.model_config:
            raise TrainingError(f"cannot fine-tune from {ckpt.path}: its skeleton or model config differs")
        self.pose.load_state_dict(ckpt.pose.state_dict())
        for kind, head in self.heads.items():
            if kind in ckpt.heads:
                head.load_state_dict(ckpt.heads[kind].state_dict())

    # -- schedule and state -------------------------------------------------------------------------
    def _lr_factor(self, step: int, total: int) -> float:
        if step < self.config.warmup_steps:
            return (step + 1) / self.config.warmup_steps
        progress = (step - self.config.warmup_steps) / max(total - self.config.warmup_steps, 1)
        low = self.config.min_lr_ratio
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def _budget_lr_factor(self, step: int, fraction: float) -> float:
        """Warm-up by steps, then cosine over the share of the time budget used."""
        low = self.config.min_lr_ratio
        warm = min(1.0, (step + 1) / max(self.config.warmup_steps, 1))
        return warm * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0))))

    def _set_lr(self, step: int, total: int, fraction: float | None = None) -> None:
        factor = self._lr_factor(step, total) if fraction is None else self._budget_lr_factor(step, fraction)
        self.lr_factor = factor
        for group, base in zip(self.optimizer.param_groups, (self.config.lr, self.config.aux_lr)):
            group["lr"] = base * factor

    def _save_state(self, epoch: int, step: int, best: float, history: list, budget: TimeBudget | None = None,
                    done: bool = False) -> None:
        state = {"pose": self.pose.state_dict(), "heads": self.heads.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "epoch": epoch, "step": step, "best": best,
                 "history": history, "config": self.config.to_dict(), "model": self.model_config.to_dict(),
                 "budget": {"spent": budget.elapsed(), "step_seconds": budget.step_seconds,
                            "validation_seconds": budget.validation_seconds} if budget else None,
                 "done": done}
        tmp = self.out / "state.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.out / "state.pt")

    def _load_state(self) -> tuple[int, int, float, list]:
        path = self.out / "state.pt"
        self._resumed: dict = {}
        if not path.is_file():
            return 0, 0, -1.0, []
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["config"] != self.config.to_dict() or state["model"] != self.model_config.to_dict():
            raise TrainingError(f"{self.out} holds a run with other settings; use another --out or delete {path}")
        self.pose.load_state_dict(state["pose"])
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._resumed = {"budget": state.get("budget"), "done": state.get("done", False)}
        log.info("resuming %s at epoch %d step %d", self.out, state["epoch"] + 1, state["step"])
        return state["epoch"], state["step"], state["best"], state["history"]

    # -- the loop -----------------------------------------------------------------------------------
    def fit(self, train: list[Sample], val: list[Sample]) -> Checkpoint:
        """Train, validating each epoch; returns the calibrated best checkpoint (also in ``out/best``).

        With ``time_budget_s`` the run ends on time: the learning rate follows the share of the budget used,
        and a last validation of the partial epoch closes it.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        cfg, mc = self.config, self.model_config
        epoch, start_step, best, history = self._load_state()
        resumed_budget = self._resumed.get("budget") or {}
        budget = (TimeBudget(cfg.time_budget_s, spent=resumed_budget.get("spent", 0.0),
                             step_seconds=resumed_budget.get("step_seconds", 0.0),
                             validation_seconds=resumed_budget.get("validation_seconds", 0.0), clock=self.clock)
                  if cfg.time_budget_s else None)
        train_cache = CropCache(train, mc.input_size, whole_image=cfg.augment.whole_image_prob > 0, device=self.device)
        val_cache = CropCache(val, mc.input_size, device=self.device)
        if len(train_cache) == 0 or not train_cache.labelled.any():
            raise TrainingError(f"no usable keypoints in {len(train)} training samples "
                                f"({len(train_cache.skipped)} unreadable images); label some keypoints first")
        if len(val_cache) == 0:
            raise TrainingError("no readable validation images; pass a validation split with labelled keypoints")
        steps = len(train_cache) // cfg.batch_size or 1
        steps = min(steps, cfg.steps_per_epoch or steps)
        total = steps * cfg.epochs
        self.seconds = history[-1]["train_seconds"] if history else 0.0
        if self._resumed.get("done"):
            return self._finish(val_cache, history)
        meter = StepMeter(cfg.batch_size)
        last_save = last_log = tick = self.clock()
        stopped = False
        for epoch in range(epoch, cfg.epochs):
            order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_cache))
            self.pose.train()
            self.heads.train()
            bar = tqdm(range(start_step, steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=None)
            running = 0.0
            fraction = seconds_left = None
            step = start_step
            for step in bar:
                global_step = epoch * steps + step
                if budget is not None:
                    val_estimate = meter.validation_estimate(len(val_cache))
                    if meter.timed == cfg.budget_check_steps and not history and epoch == 0:
                        budget.check_fits_one_epoch(steps, meter.per_step, val_estimate)
                    left = budget.step_time_left(steps, step, meter.per_step, val_estimate)
                    if left <= 0 and budget.step_seconds > 0:
                        stopped = True
                        break
                    fraction, seconds_left = budget.fraction(left), budget.left()
                    self._set_lr(global_step, total, fraction)
                else:
                    self._set_lr(global_step, total)
                rng = np.random.default_rng([cfg.seed, epoch, step])
                indices = order[(step * cfg.batch_size) % len(order):][:cfg.batch_size]
                batch = train_cache.batch(indices, self.skeleton, mc.sigma, cfg.augment, rng)
                loss = self._step(batch)
                running = loss if step == start_step else 0.95 * running + 0.05 * loss
                now = self.clock()
                meter.add(now - tick)
                self.seconds += now - tick
                if budget is not None:
                    budget.step_seconds += now - tick
                tick = now
                bar.set_postfix(loss=f"{running:.4g}")
                self._notify(Progress(epoch, cfg.epochs, step + 1, steps, running, None, fraction, seconds_left))
                if now - last_log >= cfg.log_every_s:
                    self._log_progress(epoch, step + 1, steps, running, meter, budget, total - global_step - 1)
                    last_log = now
                if now - last_save > cfg.save_every_s:
                    self._save_state(epoch, step + 1, best, history, budget)
                    last_save = self.clock()
            else:
                step = steps
            start_step = 0
            if step == 0 and stopped:
                break  # the budget ran out exactly at an epoch end: that epoch is validated already
            started = self.clock()
            best = self._validate(epoch, val_cache, running, best, history, partial=step if stopped else None)
            meter.validation_seconds = max(meter.validation_seconds, self.clock() - started)
            if budget is not None:
                budget.validation_seconds = meter.validation_seconds
            self._save_state(epoch + 1, 0, best, history, budget, done=stopped)
            last_save = tick = self.clock()
            if stopped:
                break
        return self._finish(val_cache, history)

    def _log_progress(self, epoch: int, step: int, steps: int, loss: float, meter: "StepMeter",
                      budget: TimeBudget | None, steps_left: int) -> None:
        """One line a log file can follow: where the run is, how fast it goes, how long it has left."""
        left = budget.left() if budget is not None else steps_left * meter.per_step
        log.info("epoch %d step %d/%d: loss %.5f, %.1f images/s, lr x%.3f, %s left%s", epoch + 1, step, steps, loss,
                 meter.images_per_second, self.lr_factor, minutes_text(left),
                 f" of a {minutes_text(budget.seconds)} budget" if budget is not None else "")

    def _step(self, batch: dict[str, torch.Tensor]) -> float:
        with trunk_autocast(self.device):
            output = self.pose(to_input(batch["image"], self.device))
        output = PoseOutput([h.float() for h in output.heatmaps], [f.float() for f in output.features])
        weights = batch["weights"][..., None, None]
        # squared error summed over pixels, averaged over keypoints: a per-pixel mean makes the gradients
        # of sparse Gaussian targets so small that Adam's epsilon swamps them and training stalls
        errors = [((h - batch["heatmaps"]) ** 2 * weights).sum(dim=(2, 3)) for h in output.heatmaps]  # (N, K) each
        per_image = sum(e.mean(dim=1) for e in errors)
        batch["keypoint_error"] = errors[-1].detach()
        features = [f.detach() for f in output.features]
        aux = sum(head.loss(features, batch, per_image.detach()) for head in self.heads.values())
        loss = per_image.mean() + aux
        if not torch.isfinite(loss):
            raise TrainingError("training diverged (loss is not finite); lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(per_image.mean().detach())

    def _validate(self, epoch: int, val_cache: CropCache, loss: float, best: float, history: list,
                  partial: int | None = None) -> float:
        val = validation_pass(self.pose, self.heads["bones"], val_cache, self.skeleton, self.model_config.sigma)
        scores = score_pass(val, self.skeleton, Calibration(max_candidates=self.config.max_candidates))
        scores.pop("log_likelihood")
        record = {"epoch": epoch + 1, "train_loss": loss, "train_seconds": round(self.seconds, 1), **scores}
        if partial is not None:
            record["partial_steps"] = partial  # the time budget ended this epoch early
        history.append(record)
        (self.out / "history.json").write_text(json.dumps(history, indent=2))
        log.info("epoch %d: loss %.5f val PCK@0.2 %.4f (refined %.4f)", epoch + 1, loss, scores["pck@0.2"],
                 scores["pck@0.2_refined"])
        self._notify(Progress(epoch, self.config.epochs, 1, 1, loss, record))
        value = scores["pck@0.2"] if np.isfinite(scores["pck@0.2"]) else 0.0
        if value > best or not (self.out / "best").is_dir():
            best = value
            self._write_best(Calibration(max_candidates=self.config.max_candidates), {"best_epoch": record})
        return best

    def _write_best(self, calibration: Calibration, metrics: dict) -> None:
        ckpt = Checkpoint(None, self.model_config, self.skeleton, self.pose, self.heads, calibration, metrics,
                          self.config.to_dict())
        save_checkpoint(self.out / "best", ckpt)

    calibration_options: dict | None = None
    """Keyword arguments for :func:`vl4pose.calibrate.calibrate` (``previous``, ``current_images``)."""

    def _finish(self, val_cache: CropCache, history: list) -> Checkpoint:
        best = load_checkpoint(self.out / "best")  # loads on the CPU; calibrate where the run trained
        best.pose, best.heads = prepare_module(best.pose, self.device), best.heads.to(self.device)
        val = validation_pass(best.pose, best.heads["bones"], val_cache, self.skeleton, self.model_config.sigma)
        calibration, report = calibrate(val, self.skeleton, self.config.max_candidates, self.model_config.sigma,
                                        **(self.calibration_options or {}))
        best.calibration = calibration
        best.metrics = {**best.metrics, "calibration": report, "history": history}
        save_checkpoint(self.out / "best", best)
        return best

    def _notify(self, progress: Progress) -> None:
        for callback in self.callbacks:
            callback(progress)

