"""The Predictor: one object that turns images into scored, refined poses for every caller.

The ML backend, the coordinator's ranking job, evaluation and the CLI all go through it, so the
pre-annotation an annotator sees and the score that ranked the task come from the same code. Everything
but the network itself is :class:`vl4pose.pipeline.PosePipeline` (NumPy), shared with the ONNX scorer
(:mod:`vl4pose.scorer`); this class runs the torch networks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from vl4pose.checkpoint import Checkpoint, load_checkpoint
from vl4pose.device import prepare_module, resolve_device
from vl4pose.inference import run_network
from vl4pose.pipeline import Analysis, Clamps, NetworkArrays, PosePipeline, PosePrediction  # noqa: F401
from vl4pose.pipeline_config import PredictorConfig  # noqa: F401

log = logging.getLogger(__name__)

__all__ = ["Analysis", "Clamps", "PosePrediction", "Predictor", "PredictorConfig"]


class Predictor(PosePipeline):
    """Scores and refines poses with one checkpoint's torch networks. Thread-safe for inference."""

    def __init__(self, checkpoint: Checkpoint | str | Path, config: PredictorConfig | None = None) -> None:
        self.checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        model = self.checkpoint.model_config
        super().__init__(self.checkpoint.skeleton, self.checkpoint.calibration, model.input_size, model.heatmap_size,
                         model.sigma, config)
        self.device = resolve_device(self.config.device)
        self.pose = prepare_module(self.checkpoint.pose, self.device).eval()
        self.bones = self.checkpoint.heads["bones"].to(self.device).eval()

    def network(self, crops: np.ndarray, bones_for: int) -> NetworkArrays:
        """The pose network (bf16 trunk on CUDA) and the bone head on (B, 3, S, S) float32 crops."""
        out = run_network(self.pose, self.bones, torch.from_numpy(crops), bones_for=bones_for)
        return NetworkArrays(out.heatmaps.numpy(), out.mean.numpy(), out.logvar.numpy())
