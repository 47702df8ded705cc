"""Task images on local disk: read from Label Studio's local-files folder when we can see it, otherwise
downloaded from Label Studio with the API token and cached under ``<storage>/cache/images``."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.parse
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backend.errors import CoordinatorError, TransientError

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
    """

    def __init__(self, cache_dir: Path, files_root: str | None, connect: Callable[[], object], max_bytes: int) -> None:
        self.cache_dir = Path(cache_dir)
        self.files_root = Path(files_root).resolve() if files_root else None
        self._connect = connect
        self._client = None
        self.max_bytes = max_bytes

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
        suffix = Path(urllib.parse.urlparse(url).path).suffix.lower()
        query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
        if "d" in query:
            suffix = Path(query["d"][0]).suffix.lower()
        digest = hashlib.sha256(url.encode()).hexdigest()[:40]
        return self.cache_dir / digest[:2] / (digest + (suffix if suffix in _EXTENSIONS else ".img"))

    def cached(self, url: str) -> Path | None:
        """A local file for ``url`` without any download, or None."""
        local = self.local_file(url)
        if local is not None:
            return local
        path = self.cache_path(url)
        return path if path.is_file() else None

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
        path = self.cache_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path

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
