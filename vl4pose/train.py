"""Training: pose model and auxiliary heads in one loop, validation each epoch, resumable.

A run folder holds ``best/`` (the checkpoint of the best validation epoch: pose and auxiliary
weights from that same epoch, calibrated), ``state.pt`` (everything needed to resume, :mod:`vl4pose.train_state`)
and ``history.json``. The trainer knows the models only through their forward and the heads' ``loss``.
Started by ``torchrun`` it trains data-parallel (:mod:`vl4pose.distributed`); rank 0 writes the run folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vl4pose.budget import (Progress, StepMeter, TimeBudget, budget_decision, budget_lr_factor, lr_factor,
                            progress_line)
from vl4pose.calibrate import calibrate_checkpoint, score_pass, validation_pass
from vl4pose.checkpoint import Calibration, Checkpoint, load_checkpoint, save_checkpoint
from vl4pose.data.crops import CropCache
from vl4pose.data.sample import Sample
from vl4pose.data.transforms import AugmentConfig
from vl4pose.device import prepare_module, resolve_device, training_bf16
from vl4pose.distributed import micro_batches, setup
from vl4pose.errors import TrainingError
from vl4pose.heads import build_heads
from vl4pose.models import ModelConfig, build_pose
from vl4pose.objective import training_loss
from vl4pose.skeletons import Skeleton
from vl4pose.train_state import budget_state, load_state, resumed_budget, save_state

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
    precision: str = "auto"
    """The trunk's training precision (:data:`vl4pose.device.PRECISIONS`): auto = bf16 autocast on CUDA and on a CPU
    with native bf16 (2.3x the fp32 step of the ``cpu`` preset on 2 cores), else fp32."""
    accumulate: int = 1
    """Micro-batches per step (per process): gradients of the parts are summed before one optimiser step."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["heads"] = list(self.heads)
        return out


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
        self.dist, self.device = setup(resolve_device(device))  # this process's share when started by torchrun
        if config.batch_size < self.dist.world * config.accumulate:
            raise TrainingError(f"a batch of {config.batch_size} cannot feed {self.dist.world} processes x "
                                f"{config.accumulate} micro-batches; raise --batch-size or use fewer")
        self.bf16 = training_bf16(self.device, config.precision)
        log.info("trunk precision in training: %s", "bf16 autocast" if self.bf16 else "fp32")
        self.clock = clock  # the time budget's and the progress log's clock (tests pass a fake one)
        self.lr_factor = 1.0  # the schedule's current multiplier of both learning rates
        self.pose = build_pose(model_config, skeleton.num_keypoints)
        self.heads = build_heads(list(config.heads), model_config, skeleton)
        if init_from is not None:
            self._init_from(init_from)
        self.pose, self._train_pose = self.dist.wrap(prepare_module(self.pose, self.device))
        self.heads = self.heads.to(self.device)
        self.dist.broadcast_module(self.heads)
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
    def _set_lr(self, step: int, total: int, fraction: float | None = None) -> None:
        warmup, low = self.config.warmup_steps, self.config.min_lr_ratio
        factor = (lr_factor(step, total, warmup, low) if fraction is None
                  else budget_lr_factor(step, fraction, warmup, low))
        self.lr_factor = factor
        for group, base in zip(self.optimizer.param_groups, (self.config.lr, self.config.aux_lr)):
            group["lr"] = base * factor

    def _save_state(self, epoch: int, step: int, best: float, history: list, budget: TimeBudget | None = None,
                    done: bool = False) -> None:
        if self.dist.is_main:
            save_state(self.out, {"pose": self.pose.state_dict(), "heads": self.heads.state_dict(),
                                  "optimizer": self.optimizer.state_dict(), "epoch": epoch, "step": step, "best": best,
                                  "history": history, "config": self.config.to_dict(),
                                  "model": self.model_config.to_dict(), "budget": budget_state(budget), "done": done})

    def _load_state(self) -> tuple[int, int, float, list]:
        self._resumed: dict = {}
        state = load_state(self.out, self.config.to_dict(), TrainConfig().to_dict(), self.model_config.to_dict())
        if state is None:
            return 0, 0, -1.0, []
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
        try:
            return self._fit(train, val)
        finally:
            self.dist.close()

    def _fit(self, train: list[Sample], val: list[Sample]) -> Checkpoint:
        self.out.mkdir(parents=True, exist_ok=True)
        cfg, mc = self.config, self.model_config
        epoch, start_step, best, history = self._load_state()
        budget = resumed_budget(cfg.time_budget_s, self._resumed.get("budget"), self.clock)
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
            bar = tqdm(range(start_step, steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       disable=None if self.dist.is_main else True)
            running = 0.0
            fraction = seconds_left = None
            step = start_step
            for step in bar:
                global_step = epoch * steps + step
                if budget is not None:  # rank 0 decides for all processes
                    check = meter.timed == cfg.budget_check_steps and not history and epoch == 0
                    stop, fraction, seconds_left = self.dist.from_rank0(
                        lambda: budget_decision(budget, meter, steps, step, len(val_cache), check), 3)
                    if stop:
                        stopped = True
                        break
                    self._set_lr(global_step, total, fraction)
                else:
                    self._set_lr(global_step, total)
                loss = self._step(train_cache, order[(step * cfg.batch_size) % len(order):][:cfg.batch_size],
                                  epoch, step)
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
                    log.info("%s", progress_line(epoch, step + 1, steps, running, meter, budget,
                                                 total - global_step - 1, self.lr_factor))
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
            if self.dist.is_main:
                best = self._validate(epoch, val_cache, running, best, history, partial=step if stopped else None)
            meter.validation_seconds = max(meter.validation_seconds, self.clock() - started)
            if budget is not None:
                budget.validation_seconds = meter.validation_seconds
            self._save_state(epoch + 1, 0, best, history, budget, done=stopped)
            self.dist.barrier()  # the others wait for rank 0's validation and checkpoint
            last_save = tick = self.clock()
            if stopped:
                break
        return self._finish(val_cache, history)

    def _step(self, cache: CropCache, indices: np.ndarray, epoch: int, step: int) -> float:
        """One optimiser step on the global batch ``indices`` (B,); returns its pose loss (averaged over processes).

        This process trains on its micro-batches of it (:func:`vl4pose.distributed.micro_batches`), each augmented
        with its own seeded generator (the whole batch's generator when there is one part).
        """
        cfg, world = self.config, self.dist.world
        self.optimizer.zero_grad(set_to_none=True)
        parts = micro_batches(indices, world, self.dist.rank, cfg.accumulate)
        losses = []
        for i, (part, number) in enumerate(parts):
            seed = [cfg.seed, epoch, step] if world * cfg.accumulate == 1 else [cfg.seed, epoch, step, number]
            batch = cache.batch(part, self.skeleton, self.model_config.sigma, cfg.augment, np.random.default_rng(seed))
            last = i == len(parts) - 1
            sync = self._train_pose.no_sync() if world > 1 and not last else contextlib.nullcontext()
            with sync:
                loss, pose_loss = training_loss(self._train_pose, self.heads, batch, self.device, self.bf16)
                (loss / cfg.accumulate).backward()
            losses.append(pose_loss)
        self.dist.average_grads(self.heads)
        self.optimizer.step()
        return self.dist.mean(sum(losses) / len(losses))

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
            save_checkpoint(self.out / "best", Checkpoint(None, self.model_config, self.skeleton, self.pose, self.heads,
                                                          Calibration(max_candidates=self.config.max_candidates),
                                                          {"best_epoch": record}, self.config.to_dict()))
        return best

    calibration_options: dict | None = None
    """Keyword arguments for :func:`vl4pose.calibrate.calibrate` (``previous``, ``current_images``)."""

    def _finish(self, val_cache: CropCache, history: list) -> Checkpoint:
        if not self.dist.is_main:
            self.dist.barrier()  # rank 0 calibrates and writes best/
            return load_checkpoint(self.out / "best")
        best = calibrate_checkpoint(load_checkpoint(self.out / "best"), self.device, val_cache,  # loads on the CPU
                                    self.config.max_candidates, history, **(self.calibration_options or {}))
        save_checkpoint(self.out / "best", best)
        self.dist.barrier()
        return best

    def _notify(self, progress: Progress) -> None:
        for callback in self.callbacks:
            callback(progress)

