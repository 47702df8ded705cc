"""A folder of downloaded files with a size limit: the one disk cache of both services' task images (the ML
backend's :class:`ml_backend.images.ImageFetcher` and the coordinator's :class:`backend.services.images.ImageStore`).

Files live at ``<root>/<name[:2]>/<name>`` (the caller names them, e.g. by a hash of the URL) and are handed out
as paths: the model code opens them itself. A hit refreshes the file's modification time; a store that takes the
folder over ``max_bytes`` deletes the least recently used files (oldest modification time first) down to
``trim_to`` x ``max_bytes``. Several processes may share the folder: the running size is this process's estimate,
measured on its first store, and the folder is measured again whenever it trims. Files being written (hidden
temporary siblings, see :func:`vl4pose.atomic.write_atomic`) are never counted or evicted.

Not ``diskcache``: it keeps its entries in SQLite and its own file names (``.val`` blobs two folders deep, small
values inside the database), culls a few entries per store instead of trimming to a size, and hands out values
rather than stable paths with the image's extension, which both services pass on to code that opens files.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from vl4pose.atomic import write_atomic

log = logging.getLogger(__name__)


class FileCache:
    """Files named by the caller under ``root``, least recently used first out above ``max_bytes``.

    Args:
        root: the cache folder (created on the first store).
        max_bytes: size limit of the folder (0: no limit, nothing is evicted).
        trim_to: a trim leaves at most this fraction of ``max_bytes`` (0 < trim_to <= 1).
    """

    def __init__(self, root: Path, max_bytes: int = 0, trim_to: float = 0.8) -> None:
        if not 0 < trim_to <= 1:
            raise ValueError(f"trim_to must be in (0, 1], got {trim_to}")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.trim_to = trim_to
        self._size: int | None = None  # this process's running estimate; measured on the first store
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        """Where the file ``name`` is (or would be) kept."""
        return self.root / name[:2] / name

    def lookup(self, name: str) -> Path | None:
        """The cached file ``name``, marked as just used, or None."""
        path = self.path(name)
        if not path.is_file():
            return None
        if self.max_bytes:
            try:
                os.utime(path)  # recently used: evicted last
            except OSError:
                pass
        return path

    def store(self, name: str, data: bytes) -> Path:
        """Write ``data`` as the file ``name`` (atomically: readers see all of it or nothing), then trim the
        folder if it went over its limit; returns the file's path."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
        self._account(len(data))
        return path

    def forget(self, name: str) -> None:
        """Drop the file ``name`` if it is there."""
        try:
            self.path(name).unlink(missing_ok=True)
        except OSError:
            pass

    def files(self) -> list[tuple[Path, int, float]]:
        """(path, size in bytes, modification time) of every cached file."""
        out: list[tuple[Path, int, float]] = []
        if not self.root.is_dir():
            return out
        for sub in os.scandir(self.root):
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub.path):
                if entry.name.startswith("."):
                    continue  # a download being written
                try:
                    stat = entry.stat()
                except OSError:
                    continue
                out.append((Path(entry.path), stat.st_size, stat.st_mtime))
        return out

    def _account(self, added: int) -> None:
        """Count a new file; above ``max_bytes`` evict the least recently used files down to ``trim_to``."""
        if not self.max_bytes:
            return
        with self._lock:
            if self._size is None:
                self._size = sum(size for _, size, _ in self.files())
            else:
                self._size += added
            if self._size <= self.max_bytes:
                return
            files = sorted(self.files(), key=lambda f: f[2])  # oldest first; re-measured (other processes share it)
            total = sum(size for _, size, _ in files)
            target = int(self.max_bytes * self.trim_to)
            removed = 0
            for path, size, _ in files:
                if total <= target:
                    break
                try:
                    path.unlink()
                except OSError:
                    continue
                total -= size
                removed += 1
            self._size = total
            log.info("cache %s over %d MB: %d least recently used files evicted, %d MB left", self.root,
                     self.max_bytes // 2**20, removed, total // 2**20)
