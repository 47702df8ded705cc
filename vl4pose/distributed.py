"""Data-parallel training across processes started by ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N -m vl4pose train ...`` starts N copies of the same command with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`setup` finds them and joins the process group (``gloo`` on the CPU,
``nccl`` on CUDA, one GPU per process: ``cuda:LOCAL_RANK``). Without those variables everything here is a no-op
and training is the single-process one, unchanged.

How the work is split: every process draws the same shuffled order and the same global batch of
``batch_size`` images each step and trains on its own slice (:func:`micro_batches`), so N processes x slice = the
single-process batch. The pose network is wrapped in DDP (gradients averaged across processes during the backward
pass; rank 0's BatchNorm buffers are broadcast before each forward). On CUDA its BatchNorm layers become
SyncBatchNorm (statistics over the global batch); on the CPU, where SyncBatchNorm does not run, each process
normalises with its own slice's statistics, exactly like gradient accumulation over the same micro-batches in one
process (``TrainConfig.accumulate``). The auxiliary heads, trained on detached features, have their gradients
averaged with one all-reduce per step (:meth:`Group.average_grads`).

Decisions that must agree (the time budget's stop and schedule share) are taken on rank 0 and broadcast
(:meth:`Group.from_rank0`); validation, checkpoints, ``history.json`` and info logs happen on rank 0 only while the
others wait at a barrier.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from vl4pose.errors import ConfigError, TrainingError

log = logging.getLogger(__name__)

TIMEOUT = datetime.timedelta(hours=2)
"""How long a process waits at a collective (e.g. while rank 0 validates a large set) before giving up."""


def launch_env(environ: Mapping[str, str] = os.environ) -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when started by torchrun with more than one process, else None."""
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return None
    try:
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local = int(environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise ConfigError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers, not {environ['RANK']!r} / "
                          f"{environ['WORLD_SIZE']!r} / {environ.get('LOCAL_RANK')!r}; start with torchrun") from None
    return (rank, world, local) if world > 1 else None


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def micro_batches(indices: np.ndarray, world: int, rank: int, accumulate: int) -> list[tuple[np.ndarray, int]]:
    """This process's micro-batches of a global batch, as (sample indices, global micro-batch number).

    The global batch (B,) is cut into ``world * accumulate`` nearly equal consecutive parts (sizes differ by at
    most one); process ``rank`` takes parts ``rank * accumulate ...``. A batch shorter than the number of parts is
    first repeated cyclically so no part is empty. With one part the batch is returned unchanged.
    """
    parts = world * accumulate
    if parts == 1:
        return [(indices, 0)]
    if len(indices) < parts:
        indices = np.resize(indices, parts)
    pieces = np.array_split(indices, parts)
    return [(pieces[j], j) for j in range(rank * accumulate, (rank + 1) * accumulate)]


class Group:
    """The training processes; a single process (``world == 1``) makes every method a no-op.

    Args:
        rank, world, local_rank: as torchrun sets them.
        device: this process's device (collectives run there under nccl, on the CPU under gloo).
        owned: this object started the process group and :meth:`close` ends it.
    """

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0, device: torch.device | None = None,
                 owned: bool = False) -> None:
        self.rank, self.world, self.local_rank, self.owned = rank, world, local_rank, owned
        self.device = device or torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def wrap(self, module: nn.Module) -> tuple[nn.Module, nn.Module]:
        """(the module to save and validate, the one to call in training steps): DDP when distributed.

        On CUDA the BatchNorm layers are converted to SyncBatchNorm first (same parameters and state-dict keys).
        """
        if self.world == 1:
            return module, module
        if self.device.type == "cuda":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
            ids = [self.device.index if self.device.index is not None else self.local_rank]
            return module, nn.parallel.DistributedDataParallel(module, device_ids=ids)
        return module, nn.parallel.DistributedDataParallel(module)

    def broadcast_module(self, module: nn.Module) -> None:
        """Give every process rank 0's parameters and buffers (modules not wrapped in DDP)."""
        if self.world == 1:
            return
        with torch.no_grad():
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def average_grads(self, module: nn.Module) -> None:
        """Average the gradients of ``module`` across processes (one all-reduce; a missing gradient counts as 0)."""
        if self.world == 1:
            return
        params = list(module.parameters())
        if not params:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()

    def mean(self, value: float) -> float:
        """The average of a number over the processes."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world

    def from_rank0(self, decide: Callable[[], Sequence[float]], size: int) -> list[float]:
        """Rank 0's ``decide()`` (``size`` numbers) on every process; an error raised there stops all of them."""
        if self.world == 1:
            return list(decide())
        tensor = torch.zeros(size + 1, dtype=torch.float64, device=self._comm_device)
        if self.is_main:
            try:
                tensor[:size] = torch.tensor([float(v) for v in decide()], dtype=torch.float64)
            except Exception:
                tensor[size] = 1.0
                dist.broadcast(tensor, src=0)
                raise
        dist.broadcast(tensor, src=0)
        if tensor[size].item():
            raise TrainingError("rank 0 stopped the run; its log says why")
        return tensor[:size].tolist()

    def barrier(self) -> None:
        if self.world == 1:
            return
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group if this object started it."""
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
            self.owned = False


def setup(device: torch.device) -> tuple[Group, torch.device]:
    """Join the torchrun process group when started by torchrun (else a single-process :class:`Group`).

    Returns the group and this process's device (``cuda:LOCAL_RANK`` on CUDA). Processes other than rank 0 log
    warnings and errors only.
    """
    env = launch_env()
    if env is None:
        return Group(device=device), device
    rank, world, local = env
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"process {local} of this machine needs GPU {local}, but only "
                              f"{torch.cuda.device_count()} are visible; start at most that many with --nproc_per_node")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend_for(device), timeout=TIMEOUT)
    if rank != 0:
        logging.getLogger("vl4pose").setLevel(logging.WARNING)
    log.info("distributed training: %d processes (%s), batch norm %s", world, backend_for(device),
             "synchronised" if device.type == "cuda" else "per process")
    return Group(rank, world, local, device, owned), device
