"""Run one :class:`~vl4pose.train.Trainer` fit in N processes under torchrun, described by a JSON spec.

What a program that trains in-process (the coordinator's train job) uses to train data-parallel instead: it writes
the samples, the settings and the calibration options into ``spec.json`` (:func:`write_spec`) and calls
:func:`run_torchrun`, which starts ``python -m torch.distributed.run --standalone --nproc_per_node N -m vl4pose.launch
spec.json`` and passes rank 0's progress (``progress.json`` beside the spec, at most once a second) to a callback.
The children rebuild the same Trainer (:func:`run_spec`); the result is the run folder, as in-process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from vl4pose.atomic import write_atomic
from vl4pose.budget import Progress
from vl4pose.checkpoint import Calibration, load_checkpoint
from vl4pose.data.sample import Sample
from vl4pose.errors import TrainingError
from vl4pose.models import ModelConfig
from vl4pose.skeletons import get_skeleton
from vl4pose.train import TrainConfig, Trainer

log = logging.getLogger(__name__)


def torchrun_command(processes: int, spec: str | Path, python: str = sys.executable) -> list[str]:
    """The command line that trains ``spec`` in ``processes`` processes on this machine."""
    return [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            "-m", "vl4pose.launch", str(spec)]


def _sample_json(sample: Sample) -> dict:
    if not isinstance(sample.image, (str, Path)):
        raise TrainingError(f"sample {sample.sample_id}: only samples with an image file can be trained in "
                            "separate processes; write the image to a file first")

    def listed(array: np.ndarray | None) -> list | None:
        return None if array is None else [None if not np.isfinite(v) else float(v) for v in np.ravel(array)]

    return {"id": sample.sample_id, "image": str(sample.image), "keypoints": listed(sample.keypoints),
            "visibility": [int(v) for v in sample.visibility], "box": listed(sample.box)}


def _sample(data: dict) -> Sample:
    keypoints = np.array([np.nan if v is None else v for v in data["keypoints"]], dtype=float).reshape(-1, 2)
    box = np.array(data["box"], dtype=float) if data.get("box") else None
    return Sample(data["id"], data["image"], keypoints, np.array(data["visibility"], dtype=np.int64), box=box)


def write_spec(path: str | Path, *, out: str | Path, model: dict, skeleton: str, train: dict,
               train_samples: list[Sample], val_samples: list[Sample], init: str | Path | None = None,
               calibration: dict | None = None, threads: int | None = None) -> Path:
    """Write a training spec.

    Args:
        out: the run folder. model: ``ModelConfig.to_dict()``. skeleton: a skeleton name. train: TrainConfig
            fields (JSON). init: a checkpoint folder to fine-tune from. calibration: ``{"previous": Calibration
            fields or None, "current_images": int or None}`` (see ``Trainer.calibration_options``).
        threads: torch CPU threads per process (None: the machine's cores / processes, at least 1).
    """
    spec = {"out": str(out), "model": model, "skeleton": skeleton, "train": train,
            "train_samples": [_sample_json(s) for s in train_samples],
            "val_samples": [_sample_json(s) for s in val_samples],
            "init": str(init) if init else None, "calibration": calibration, "threads": threads}
    path = Path(path)
    path.write_text(json.dumps(spec))
    return path


def run_spec(path: str | Path) -> int:
    """Train what ``path`` describes (every process of the torchrun group runs this)."""
    spec = json.loads(Path(path).read_text())
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # processes on this machine
    torch.set_num_threads(spec.get("threads") or max(1, (os.cpu_count() or 1) // processes))
    fields = dict(spec["train"])
    fields["heads"] = tuple(fields.get("heads", ()))
    init = load_checkpoint(spec["init"]) if spec.get("init") else None
    progress_file = Path(path).with_name("progress.json")
    last = [0.0]

    def report(progress: Progress) -> None:
        now = time.monotonic()
        if progress.validation is None and now - last[0] < 1.0:
            return
        last[0] = now
        write_atomic(progress_file, json.dumps(asdict(progress), default=str))

    trainer = Trainer(ModelConfig.from_dict(spec["model"]), get_skeleton(spec["skeleton"]), TrainConfig(**fields),
                      spec["out"], init_from=init)
    if trainer.dist.is_main:
        trainer.callbacks.append(report)
    calibration = spec.get("calibration") or {}
    previous = calibration.get("previous")
    trainer.calibration_options = {"previous": Calibration(**previous) if previous else None,
                                   "current_images": calibration.get("current_images")}
    trainer.fit([_sample(s) for s in spec["train_samples"]], [_sample(s) for s in spec["val_samples"]])
    return 0


def run_torchrun(spec: str | Path, processes: int, on_progress: Callable[[Progress], None] | None = None,
                 poll_s: float = 1.0, env: dict[str, str] | None = None) -> None:
    """Train ``spec`` in ``processes`` processes and wait; rank 0's progress goes to ``on_progress``.

    Raises:
        TrainingError: the processes failed; the message holds the end of their output (the whole of it is in
            ``train.log`` beside the spec).
    """
    spec = Path(spec)
    progress_file, log_file = spec.with_name("progress.json"), spec.with_name("train.log")
    progress_file.unlink(missing_ok=True)
    command = torchrun_command(processes, spec)
    log.info("training in %d processes: %s", processes, " ".join(command))
    seen = None
    with open(log_file, "w") as output:
        child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)
        try:
            while True:
                code = child.poll()
                if on_progress is not None and progress_file.is_file():
                    try:
                        text = progress_file.read_text()
                    except OSError:
                        text = None
                    if text and text != seen:
                        seen = text
                        on_progress(Progress(**json.loads(text)))
                if code is not None:
                    break
                time.sleep(poll_s)
        except BaseException:
            stop_group(child)
            raise
    if code != 0:
        tail = log_file.read_text(errors="replace")[-3000:]
        raise TrainingError(f"training in {processes} processes failed (exit {code}); see {log_file}:\n{tail}")


def stop_group(child: subprocess.Popen, grace_s: float = 30.0) -> None:
    """End a torchrun started with ``start_new_session``: SIGTERM (torchrun stops its workers), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: torchrun --nproc_per_node N -m vl4pose.launch SPEC.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_spec(args[0])


if __name__ == "__main__":
    sys.exit(main())
