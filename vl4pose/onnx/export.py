"""The scorer's networks as one ONNX graph and its sidecar JSON.

``vl4pose export-onnx --checkpoint DIR --out model.onnx`` writes

    model.onnx   image (N, 3, S, S) float32 in [0, 1] -> heatmaps (N, K, H, H) of the last stack,
                 bone_mean (N, E), bone_logvar (N, E); N is dynamic
    model.json   what the NumPy scorer needs beside the graph: skeleton, calibration, input and heatmap
                 size, sigma, sub-pixel decoder, tensor names (see :func:`sidecar`)

Both are written to temporary siblings, checked (onnxruntime against torch on a random batch) and only then
renamed into place; an existing output is an error, never overwritten. The int8 variant: :mod:`vl4pose.onnx.quantize`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import uuid
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vl4pose.checkpoint import Checkpoint, load_checkpoint
from vl4pose.errors import CheckpointError, ConfigError
from vl4pose.postprocess import DEFAULT_DECODER

log = logging.getLogger(__name__)

SIDECAR_FORMAT = 1
INPUT = "image"
OUTPUTS = ("heatmaps", "bone_mean", "bone_logvar")
OPSET = 17


class ScorerGraph(nn.Module):
    """Pose network + bone head: (N, 3, S, S) in [0, 1] -> heatmaps (N, K, H, H), mean (N, E), logvar (N, E)."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__()
        if "bones" not in checkpoint.heads:
            raise CheckpointError(f"checkpoint {checkpoint.path} has no 'bones' head (the VL4Pose auxiliary network); "
                                  "export a checkpoint written by `vl4pose train`")
        self.pose = checkpoint.pose
        self.bones = checkpoint.heads["bones"]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        output = self.pose(image)
        mean, logvar = self.bones.params(output.features)
        return output.heatmaps[-1], mean, logvar


def sidecar_path(model: str | Path) -> Path:
    """``model.onnx`` -> ``model.json``."""
    return Path(model).with_suffix(".json")


def sidecar(checkpoint: Checkpoint) -> dict:
    """The JSON written beside the graph: everything after the network needs from the checkpoint."""
    model = checkpoint.model_config
    return {
        "format": SIDECAR_FORMAT, "skeleton": checkpoint.skeleton.to_dict(), "calibration": asdict(checkpoint.calibration),
        "input_size": model.input_size, "heatmap_size": model.heatmap_size, "sigma": model.sigma,
        "decoder": DEFAULT_DECODER, "input": INPUT, "outputs": list(OUTPUTS),
        "checkpoint": str(checkpoint.path) if checkpoint.path else None, "opset": OPSET,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def refuse_existing(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            raise ConfigError(f"{path} already exists; choose another --out or delete it first (nothing was written)")


def publish(files: dict[Path, Path]) -> None:
    """Rename temporary files to their final names (all checked before; the sidecar last)."""
    for tmp, final in files.items():
        os.replace(tmp, final)


def max_difference(graph: ScorerGraph, model: Path, batch: int = 3, seed: int = 0) -> float:
    """Largest absolute difference between onnxruntime and torch outputs on a random batch."""
    import onnxruntime as ort  # deferred: an optional dependency, only export and quantisation need it

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    side = int(shape[2])
    images = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))
    got = session.run(None, {INPUT: images.numpy()})
    with torch.no_grad():
        want = graph(images)
    return max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))


def export_onnx(checkpoint: Checkpoint | str | Path, out: str | Path, tolerance: float = 1e-3) -> tuple[Path, Path]:
    """Export a checkpoint's scorer graph to ``out`` (.onnx) and its sidecar (.json); returns both paths.

    Raises :class:`ConfigError` when an output exists or the graph does not match torch within ``tolerance``,
    :class:`CheckpointError` for an incomplete or unreadable checkpoint; nothing is left behind on failure.
    """
    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"--out {out} must end in .onnx (the sidecar goes beside it as {out.stem}.json)")
    meta_path = sidecar_path(out)
    refuse_existing(out, meta_path)
    if not out.parent.is_dir():
        raise ConfigError(f"folder {out.parent} does not exist; create it first")
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    graph = ScorerGraph(ckpt).eval()
    side = ckpt.model_config.input_size
    tag = uuid.uuid4().hex[:8]
    tmp_model, tmp_meta = out.parent / f".{out.name}.tmp-{tag}", out.parent / f".{meta_path.name}.tmp-{tag}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: no onnxscript needed
            torch.onnx.export(graph, (torch.rand(2, 3, side, side),), str(tmp_model), input_names=[INPUT],
                              output_names=list(OUTPUTS), opset_version=OPSET, dynamo=False,
                              dynamic_axes={name: {0: "batch"} for name in (INPUT, *OUTPUTS)})
        difference = max_difference(graph, tmp_model)
        if not difference <= tolerance:
            raise ConfigError(f"the exported graph differs from torch by {difference:.3g} (> {tolerance}); not written")
        meta = sidecar(ckpt) | {"torch_max_difference": difference}
        tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        refuse_existing(out, meta_path)
        publish({tmp_model: out, tmp_meta: meta_path})
    except BaseException:
        for path in (tmp_model, tmp_meta):
            path.unlink(missing_ok=True)
        raise
    log.info("wrote %s (%.1f MB) and %s; onnxruntime vs torch max difference %.2g", out,
             out.stat().st_size / 1e6, meta_path, difference)
    return out, meta_path


def export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (or a `vl4pose train` run folder)")
    p.add_argument("--out", required=True, help="the .onnx file to write (its .json sidecar goes beside it)")


def run_export(args: argparse.Namespace) -> int:
    model, meta = export_onnx(args.checkpoint, args.out)
    print(json.dumps({"model": str(model), "sidecar": str(meta), "bytes": model.stat().st_size}, indent=2))
    return 0
