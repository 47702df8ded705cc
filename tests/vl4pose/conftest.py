"""Fixtures of the ``vl4pose`` tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The 2-core machine is shared: more threads than free cores makes these tests ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def gpu_pack(tmp_path_factory, lspet_dir) -> Path:
    """A small LSPET pack built by ``scripts/gpu_pack.py`` (48 pool, 16 val, 24 test images), what the GPU scripts
    read on a device; their dry runs use it here."""
    out = tmp_path_factory.mktemp("pack") / "lspet"
    done = subprocess.run([sys.executable, "scripts/gpu_pack.py", "--data", str(lspet_dir), "--out", str(out),
                           "--pool", "48", "--val", "16", "--test", "24"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return out
