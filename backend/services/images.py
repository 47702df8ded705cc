"""Task images on local disk: read from Label Studio's local-files folder when we can see it, otherwise
downloaded from Label Studio with the API token and cached under ``<storage>/cache/images``.

The cache (a :class:`common.filecache.FileCache`) has a size limit (``VL4POSE_IMAGE_CACHE_MB``): a download that
takes it over the limit evicts the least recently used files (modification time, refreshed on every cache hit) down
to 80 % of it. Ranking a 100,000-task project whose images are not local files reads each image once a round; the
cache keeps the recent ones.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backend.errors import CoordinatorError, TransientError
from common.filecache import FileCache

log = logging.getLogger(__name__)

LOCAL_FILES_PREFIX = "/data/local-files/"
_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


class ImageStore:
    """Resolves a task's image URL to a readable local file.

    Args:
        cache_dir: where downloads are kept (file name = hash of the URL).
        files_root: Label Studio's ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` as this machine sees it, or None.
        connect: returns a :class:`~backend.services.labelstudio.LabelStudio` (opened only when needed).
        max_bytes: refuse larger downloads.
        max_cache_bytes: evict least recently used downloads above this size (0: no limit).
    """

    def __init__(
        self,
        cache_dir: Path,
        files_root: str | None,
        connect: Callable[[], object],
        max_bytes: int,
        max_cache_bytes: int = 0,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.files_root = Path(files_root).resolve() if files_root else None
        self._connect = connect
        self._client = None
        self.max_bytes = max_bytes
        self.max_cache_bytes = max_cache_bytes
        self._cache = FileCache(self.cache_dir, max_cache_bytes, trim_to=0.8)

    def local_file(self, url: str) -> Path | None:
        """The file behind a ``/data/local-files/?d=<relative path>`` URL when it is visible here."""
        if self.files_root is None or not url.startswith(LOCAL_FILES_PREFIX):
            return None
        query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
        if "d" not in query:
            return None
        path = (self.files_root / query["d"][0]).resolve()
        if not path.is_relative_to(self.files_root) or not path.is_file():
            return None
        return path

    def cache_path(self, url: str) -> Path:
        """Where the download of ``url`` is (or would be) cached."""
        return self._cache.path(_cache_name(url))

    def cached(self, url: str) -> Path | None:
        """A local file for ``url`` without any download, or None."""
        local = self.local_file(url)
        if local is not None:
            return local
        return self._cache.lookup(_cache_name(url))

    def get(self, url: str) -> Path:
        """A local file for ``url``, downloading it once if needed.

        Raises:
            TransientError: Label Studio is unreachable (retry later).
            CoordinatorError: the image is missing, refused or too large (skip this task).
        """
        found = self.cached(url)
        if found is not None:
            return found
        if self._client is None:
            self._client = self._connect()
        data = self._client.fetch(url, self.max_bytes)  # type: ignore[attr-defined]
        return self._cache.store(_cache_name(url), data)

    def get_many(self, urls: list[str], workers: int = 4) -> list[Path | CoordinatorError]:
        """Files for many URLs, in order; a permanent failure stays in its slot, a transient one raises."""

        def one(url: str) -> Path | CoordinatorError:
            try:
                return self.get(url)
            except TransientError:
                raise
            except CoordinatorError as exc:
                log.warning("image %s skipped: %s", url[:200], exc)
                return exc

        if self._client is None and any(self.cached(u) is None for u in urls):
            self._client = self._connect()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, urls))


def _cache_name(url: str) -> str:
    """The cache file of a URL: 40 hex digits of its SHA-256 and the image's extension (``.img`` when unknown)."""
    parsed = urllib.parse.urlparse(url)
    suffix = Path(parsed.path).suffix.lower()
    query = urllib.parse.parse_qs(parsed.query)
    if "d" in query:
        suffix = Path(query["d"][0]).suffix.lower()
    digest = hashlib.sha256(url.encode()).hexdigest()[:40]
    return digest + (suffix if suffix in _EXTENSIONS else ".img")
