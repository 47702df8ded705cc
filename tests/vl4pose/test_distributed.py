"""Data-parallel training: ``vl4pose train`` under torchrun (2 CPU processes, gloo) against one process that
accumulates gradients over the same micro-batches, a resume under torchrun, and the batch split itself.

Why the two runs can match at all: every process draws the same global batch and takes its half, augmented with
the half's own seeded generator, exactly as the one process does for its two micro-batches; BatchNorm normalises
each half with its own statistics in both (per-process BatchNorm on the CPU). DDP averages the two halves'
gradients (each divided by the world size, then summed by all-reduce; the heads: summed, then divided); the
reference sums the gradients of loss/2 of each half. Per micro-batch the float32 computations are the same ones
(same data, one thread each), so the runs differ only in how the halves are combined: x/2 + y/2 against
(x + y)/2, which for 2 processes is exact in binary floating point (halving only moves the exponent) and for other
counts differs by an ulp or two (relative ~1e-7) per gradient. Adam's update m / (sqrt(v) + eps) passes a relative
gradient error on at the same relative size, and lr x steps bounds the whole move, so after 4 steps the weights
may differ by ~1e-7 relative, far under the tolerance used (1e-5 relative and absolute, on weights the test first
checks moved by more than 1e-3, and on the losses); a wrong split, a missing all-reduce, a different augmentation
or an extra step moves them by the size of a step instead.

Not compared: the BatchNorm running statistics (DDP keeps rank 0's, the reference updates them once per
micro-batch); they are buffers, not weights, and only validation reads them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vl4pose.checkpoint import Calibration, Checkpoint, save_checkpoint
from vl4pose.data import load_samples
from vl4pose.distributed import launch_env, micro_batches
from vl4pose.heads import build_heads
from vl4pose.launch import stop_group
from vl4pose.models import build_pose, preset
from vl4pose.skeletons import LSP14
from vl4pose.train import TrainConfig, Trainer

REPO = Path(__file__).resolve().parents[2]
LR = 0.05
CONFIG = TrainConfig(epochs=2, batch_size=4, steps_per_epoch=2, lr=LR, accumulate=2)
"""The reference: what ``vl4pose train --epochs 2 --batch-size 4 --steps-per-epoch 2 --lr 0.05`` sets, in one
process that splits each batch of 4 into 2 micro-batches."""


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory, lspet_dir):
    """The initial checkpoint both runs start from, the samples `--limit 8` gives, and the reference run."""
    root = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(0)
    model = preset("tiny")
    save_checkpoint(root / "init", Checkpoint(None, model, LSP14, build_pose(model, 14),
                                              build_heads([], model, LSP14), Calibration()))
    from vl4pose.checkpoint import load_checkpoint

    init = load_checkpoint(root / "init")
    train, val = load_samples("lspet", lspet_dir, "pool")[:8], load_samples("lspet", lspet_dir, "val")[:8]
    Trainer(model, LSP14, CONFIG, root / "reference", init_from=init).fit(train, val)

    def stop(progress):
        if progress.epoch == 1 and progress.step == 1:
            raise Interrupt

    with pytest.raises(Interrupt):  # the same run, stopped in its second epoch (state.pt holds epoch 1)
        Trainer(model, LSP14, CONFIG, root / "resumed", init_from=init, callbacks=[stop]).fit(train, val)
    return root, lspet_dir


def torchrun(root: Path, lspet_dir: Path, out: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "vl4pose", "--threads", "1", "train", "--dataset", "lspet", "--data", str(lspet_dir),
               "--limit", "8", "--epochs", "2", "--batch-size", "4", "--steps-per-epoch", "2", "--lr", str(LR),
               "--device", "cpu", "--init", str(root / "init"), "--out", str(root / out)]
    child = subprocess.Popen(command, cwd=REPO, env={**env, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        stop_group(child)  # the launcher and both workers
        raise
    assert child.returncode == 0, stderr[-4000:]
    return subprocess.CompletedProcess(command, child.returncode, stdout, stderr)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    pose = {f"pose.{k}": v for k, v in state["pose"].items() if "running_" not in k and "num_batches" not in k}
    heads = {f"heads.{k}": v for k, v in state["heads"].items() if "running_" not in k and "num_batches" not in k}
    return {**pose, **heads}


def test_two_processes_match_one_process_accumulating_the_same_micro_batches(runs):
    root, lspet_dir = runs
    done = torchrun(root, lspet_dir, "ddp")
    summary = json.loads(done.stdout)  # rank 0 alone prints the summary
    assert summary["checkpoint"] == str(root / "ddp" / "best")
    assert "distributed training: 2 processes (gloo)" in done.stderr
    reference, ddp, start = weights(root / "reference"), weights(root / "ddp"), weights_of_init(root)
    moved = max(float((reference[k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-3, "the reference did not train; the comparison would prove nothing"
    for key, value in reference.items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-5, atol=1e-5, msg=key)
    ref_history = json.loads((root / "reference" / "history.json").read_text())
    ddp_history = json.loads((root / "ddp" / "history.json").read_text())
    assert [h["epoch"] for h in ddp_history] == [1, 2]
    for ours, theirs in zip(ddp_history, ref_history):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
    assert sorted(p.name for p in (root / "ddp").iterdir()) == ["best", "history.json", "state.pt"]


def test_a_run_resumes_under_torchrun_where_one_process_stopped(runs):
    root, lspet_dir = runs
    assert len(json.loads((root / "resumed" / "history.json").read_text())) == 1
    torchrun(root, lspet_dir, "resumed")
    history = json.loads((root / "resumed" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    reference, resumed = weights(root / "reference"), weights(root / "resumed")
    for key, value in reference.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-5, msg=key)


def weights_of_init(root: Path) -> dict[str, torch.Tensor]:
    saved = torch.load(root / "init" / "weights.pt", map_location="cpu", weights_only=True)
    pose = {f"pose.{k}": v for k, v in saved["pose"].items() if "running_" not in k and "num_batches" not in k}
    heads = {f"heads.{name}.{k}": v for name, head in saved["heads"].items() for k, v in head.items()
             if "running_" not in k and "num_batches" not in k}
    return {**pose, **heads}


def test_micro_batches_cut_the_global_batch_into_consecutive_parts():
    batch = np.arange(7)
    assert [p.tolist() for p, _ in micro_batches(batch, 1, 0, 1)] == [list(range(7))]
    two = [micro_batches(batch, 2, rank, 1) for rank in (0, 1)]
    assert [p.tolist() for p, _ in two[0]] == [[0, 1, 2, 3]] and [p.tolist() for p, _ in two[1]] == [[4, 5, 6]]
    # 2 processes x 2 micro-batches = 1 process x 4 micro-batches, part for part
    assert [(p.tolist(), n) for r in (0, 1) for p, n in micro_batches(batch, 2, r, 2)] == \
        [(p.tolist(), n) for p, n in micro_batches(batch, 1, 0, 4)]
    assert all(len(p) == 1 for p, _ in micro_batches(np.arange(2), 2, 1, 2))  # short batch: repeated, none empty


def test_launch_env_reads_torchrun_variables():
    assert launch_env({}) is None
    assert launch_env({"RANK": "0", "WORLD_SIZE": "1"}) is None  # one process: plain training
    assert launch_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (1, 2, 1)
