"""Replace a file's content atomically: a reader sees the old content or the new one, never a half-written file.

The one copy of "write a temporary sibling, then ``os.replace``" for the whole project: the registry's
``CURRENT`` pointers, the trainer's ``state.pt``, both services' image caches, the ML backend's project store
and the stack's ``stack.json`` use it (it lives in the method package, the lowest one that needs it, so every
layer above may import it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: Path, data: bytes | str, mode: int | None = None) -> None:
    """Write ``data`` (text is written as UTF-8) to a hidden temporary sibling of ``path``, then rename it over
    ``path``.

    Args:
        path: the file to write; its folder must exist.
        data: the new content.
        mode: permission bits the temporary file is created with, before any byte is written (``0o600`` for a
            file holding secrets: never readable by others, not even for a moment); None: the usual default
            (0o666 less the umask).

    Raises:
        OSError: the folder is missing or not writable, or the disk is full; the temporary file is removed and
            ``path`` keeps its old content.
    """
    content = data.encode("utf-8") if isinstance(data, str) else data
    write_atomic_with(path, lambda handle: handle.write(content), mode)


def write_atomic_with(path: Path, write: Callable[[BinaryIO], object], mode: int | None = None) -> None:
    """:func:`write_atomic` for content a writer streams into an open binary file (``torch.save``), so it
    need not be held in memory as bytes first. Same arguments and errors, ``write`` instead of ``data``."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
