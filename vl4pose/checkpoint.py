"""Self-describing checkpoint folders.

A checkpoint is one folder::

    weights.pt        pose and auxiliary-head state dicts from the same epoch
    config.json       resolved model config, head kinds, training config, format version
    skeleton.json     the skeleton the model predicts
    calibration.json  temperature, candidate count and the validation log-likelihoods behind the score
    metrics.json      validation figures and training history
    versions.json     library versions that wrote it

Folders are written to a temporary sibling and renamed into place, so a crash never leaves a
half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import logging
import pickle
import platform
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vl4pose import __version__
from vl4pose.errors import CheckpointError
from vl4pose.heads import build_heads
from vl4pose.models import ModelConfig, build_pose
from vl4pose.models.hourglass import StackedHourglass
from vl4pose.postprocess import Calibration  # noqa: F401  (torch-free; re-exported here)
from vl4pose.skeletons import Skeleton

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
REQUIRED = ("weights.pt", "config.json", "skeleton.json", "calibration.json")


@dataclass
class Checkpoint:
    """A loaded checkpoint: modules in eval mode plus everything needed to use them."""

    path: Path | None
    model_config: ModelConfig
    skeleton: Skeleton
    pose: StackedHourglass
    heads: nn.ModuleDict
    calibration: Calibration
    metrics: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)


def library_versions() -> dict[str, str]:
    import PIL  # deferred, like scipy: only a checkpoint being written records their versions
    import scipy

    return {"vl4pose": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "pillow": PIL.__version__, "python": platform.python_version()}


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``path`` atomically (temporary sibling + rename); replaces an existing folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        torch.save({"pose": ckpt.pose.state_dict(), "heads": {k: h.state_dict() for k, h in ckpt.heads.items()}},
                   tmp / "weights.pt")
        _write_json(tmp / "config.json", {"format": FORMAT_VERSION, "model": ckpt.model_config.to_dict(),
                                          "heads": list(ckpt.heads.keys()), "train": ckpt.train_config,
                                          "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        _write_json(tmp / "skeleton.json", ckpt.skeleton.to_dict())
        _write_json(tmp / "calibration.json", asdict(ckpt.calibration))
        _write_json(tmp / "metrics.json", ckpt.metrics)
        _write_json(tmp / "versions.json", library_versions())
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the checkpoint is damaged, re-save it") from exc


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint folder (or a training run folder, through its ``best/``).

    Raises :class:`CheckpointError` naming what is missing or wrong.
    """
    path = Path(path)
    if not (path / "weights.pt").exists() and (path / "best").is_dir():
        path = path / "best"
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} not found; pass the folder written by `vl4pose train`")
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {missing}; train again or copy the whole folder")
    config = _read_json(path / "config.json")
    if config.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {config.get('format')}, this version reads {FORMAT_VERSION}")
    try:
        model_config = ModelConfig.from_dict(config["model"])
        skeleton = Skeleton.from_dict(_read_json(path / "skeleton.json"))
        calibration = Calibration(**_read_json(path / "calibration.json"))
        pose = build_pose(model_config, skeleton.num_keypoints)
        heads = build_heads(config.get("heads", []), model_config, skeleton)
        weights = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
        pose.load_state_dict(weights["pose"])
        for kind, head in heads.items():
            head.load_state_dict(weights["heads"][kind])
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({type(exc).__name__}: {exc})") from exc
    pose.eval()
    heads.eval()
    metrics = _read_json(path / "metrics.json") if (path / "metrics.json").is_file() else {}
    versions = _read_json(path / "versions.json") if (path / "versions.json").is_file() else {}
    return Checkpoint(path, model_config, skeleton, pose, heads, calibration, metrics, config.get("train", {}), versions)
