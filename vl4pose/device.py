"""Where the networks run: ``--device auto|cpu|cuda``, what each device gets, and the machine it is.

On CUDA the network trunk runs in bf16 autocast with channels-last memory; everything after the
network (candidates, likelihood, refinement) works on fp32 CPU tensors, whatever the device.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from vl4pose.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """The torch device for a setting: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.

    ``None`` reads ``VL4POSE_DEVICE`` (default ``auto``). Asking for CUDA without a usable GPU is an error
    that says what to do instead of a failure deep inside torch.
    """
    if isinstance(name, torch.device):
        return name
    name = (name or os.environ.get("VL4POSE_DEVICE") or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU; "
                              "use --device cpu (or auto), or install a CUDA build of torch on a GPU machine")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist; "
                              f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
        return device
    raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)} (or cuda:N)")


def prepare_module(module: nn.Module, device: torch.device) -> nn.Module:
    """Move a network to ``device``; channels-last memory on CUDA (faster convolutions under autocast)."""
    module = module.to(device)
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    return module


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move an (N, 3, S, S) input batch to ``device`` in the memory layout its network expects."""
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else images


@contextlib.contextmanager
def trunk_autocast(device: torch.device) -> Iterator[None]:
    """bf16 autocast for the network trunk on CUDA; a no-op on the CPU (fp32 there)."""
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def machine_info() -> dict:
    """Cores, torch threads and versions of the machine running this process (recorded beside measured figures)."""
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "torch_threads": torch.get_num_threads(), "cpu": model or platform.processor(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__}
