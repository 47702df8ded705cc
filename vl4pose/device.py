"""Where the networks run: ``--device auto|cpu|cuda``, what each device gets, and the machine it is.

The networks keep channels-last memory on every device (on 2 CPU cores: 2.2x faster batched inference and
1.3x faster fp32 training steps of the ``cpu`` preset than NCHW, the same maths). The trunk runs in bf16 autocast on
CUDA, and for training on a CPU with native bf16 (AVX512-BF16 or AMX; ``--precision``); inference on a CPU stays
fp32 (the likelihood is sensitive to the trunk's precision: docs/RESULTS.md, the fp16 starter). Everything after the
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
PRECISIONS = ("auto", "fp32", "bf16")
"""Training precision of the trunk: auto (bf16 on CUDA and on a CPU with native bf16, else fp32), fp32, bf16."""


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
    """Move a network to ``device`` in channels-last memory (faster convolutions on CPU and CUDA)."""
    return module.to(device).to(memory_format=torch.channels_last)


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move an (N, 3, S, S) input batch to ``device`` in the memory layout its network expects (channels-last)."""
    return images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


def cpu_bf16_supported() -> bool:
    """Whether this CPU does bf16 matrix maths natively (AVX512-BF16 or AMX through oneDNN)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def training_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether training runs the trunk in bf16 autocast on ``device`` for a ``precision`` (:data:`PRECISIONS`).

    ``bf16`` on a CPU without native bf16 is refused: autocast would emulate it, slower than fp32.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    native = device.type == "cuda" or cpu_bf16_supported()
    if precision == "bf16" and not native:
        raise ConfigError("precision bf16 asked for, but this CPU has no native bf16 (AVX512-BF16 or AMX): "
                          "use --precision fp32 (or auto, which picks fp32 here)")
    return precision == "bf16" or (precision == "auto" and native)


@contextlib.contextmanager
def trunk_autocast(device: torch.device, bf16: bool | None = None) -> Iterator[None]:
    """bf16 autocast for the network trunk; ``bf16=None``: on CUDA only (inference on a CPU stays fp32)."""
    if bf16 is None:
        bf16 = device.type == "cuda"
    if bf16:
        with torch.autocast(device.type, dtype=torch.bfloat16):
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
