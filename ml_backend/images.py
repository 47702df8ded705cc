"""Fetch task images from Label Studio (or any http(s) URL), bounded in bytes, pixels and time, cached on disk.

Relative URLs (``/data/local-files/?d=...``, ``/data/upload/...``) are prefixed with the hostname
Label Studio sent to ``/setup`` and fetched with ``Authorization: Token <access_token>``. The token
is only ever sent to that hostname's origin, never to another host.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

from vl4pose.data.sample import image_size
from vl4pose.errors import ImageError

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


@dataclass(frozen=True)
class ProjectAccess:
    """Where a project's relative image URLs live and the token that reads them."""

    hostname: str | None = None
    access_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class FetchLimits:
    """max_bytes: largest download. max_pixels: largest width x height. timeout: seconds to connect, per
    read, and (x3) for the whole download. cache_max_bytes: disk cache size before old files go."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    timeout: float = 10.0
    cache_max_bytes: int = 1024 * 1024 * 1024


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def short(url: str, limit: int = 120) -> str:
    """A URL cut to ``limit`` characters, for log lines and messages."""
    return url if len(url) <= limit else url[:limit] + "..."


class ImageFetcher:
    """Downloads images into ``cache_dir`` (one file per URL, named by its SHA-256) and returns their paths."""

    def __init__(self, cache_dir: Path, limits: FetchLimits | None = None, workers: int = 4) -> None:
        self.cache_dir = Path(cache_dir)
        self.limits = limits or FetchLimits()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch")
        self._local = threading.local()
        self._cache_lock = threading.Lock()
        self._cache_bytes: int | None = None

    def absolute_url(self, url: str, access: ProjectAccess) -> str:
        """The URL to download; raises :class:`ImageError` for unsupported or unresolvable URLs."""
        if not isinstance(url, str) or not url.strip():
            raise ImageError("the task's image field is empty; import tasks with an image URL")
        url = url.strip()
        if url.startswith(("http://", "https://")):
            return url
        if url.startswith("/"):
            if not access.hostname:
                raise ImageError(f"image {short(url)} is relative but no Label Studio hostname is known; reconnect "
                                 "the ML backend in the project settings (that sends /setup) or set VL4POSE_LABEL_STUDIO_URL")
            return access.hostname.rstrip("/") + url
        scheme = url.split(":", 1)[0] if ":" in url else "a bare path"
        raise ImageError(f"image {short(url)} uses {scheme}, which this backend cannot fetch; serve images through "
                         "Label Studio (local files or uploads) or over http(s)")

    def fetch_many(self, urls: Sequence[str], access: ProjectAccess) -> list[Path | ImageError]:
        """Fetch several images in parallel; a failure is returned as an :class:`ImageError` in its slot."""
        return list(self._pool.map(lambda url: self._try_fetch(url, access), urls))

    def fetch(self, url: str, access: ProjectAccess) -> Path:
        """The cached file of ``url``, downloading it first when needed. Raises :class:`ImageError`."""
        absolute = self.absolute_url(url, access)
        path = self._cache_path(absolute)
        if path.is_file():
            try:
                os.utime(path)
            except OSError:
                pass
            return path
        data = self._download(absolute, access)
        width, height = image_size(data)
        if width * height > self.limits.max_pixels:
            raise ImageError(f"image {short(url)} is {width}x{height} pixels, over VL4POSE_MAX_IMAGE_PIXELS="
                             f"{self.limits.max_pixels}; resize it or raise the limit")
        self._store(path, data)
        return path

    def forget(self, url: str, access: ProjectAccess) -> None:
        """Drop a cached file (for example one that turned out not to decode)."""
        try:
            self._cache_path(self.absolute_url(url, access)).unlink(missing_ok=True)
        except (ImageError, OSError):
            pass

    # -- internals ----------------------------------------------------------------------------------
    def _try_fetch(self, url: str, access: ProjectAccess) -> Path | ImageError:
        try:
            return self.fetch(url, access)
        except ImageError as exc:
            return exc

    def _cache_path(self, absolute: str) -> Path:
        digest = hashlib.sha256(absolute.encode("utf-8")).hexdigest()
        return self.cache_dir / digest[:2] / digest

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _download(self, absolute: str, access: ProjectAccess) -> bytes:
        headers = {}
        if access.access_token and access.hostname and _origin(absolute) == _origin(access.hostname):
            headers["Authorization"] = f"Token {access.access_token}"
        timeout = self.limits.timeout
        shown = short(absolute)
        try:
            with self._session().get(absolute, headers=headers, stream=True, timeout=(timeout, timeout)) as response:
                if response.status_code in (401, 403):
                    raise ImageError(f"image {shown}: access refused (HTTP {response.status_code}); for Label Studio "
                                     "images, reconnect the ML backend so /setup sends a valid token")
                if response.status_code == 404:
                    raise ImageError(f"image {shown} not found (HTTP 404); check the task's image URL and the "
                                     "project's storage")
                if response.status_code >= 400:
                    raise ImageError(f"image {shown}: HTTP {response.status_code} from the image server")
                declared = int(response.headers.get("Content-Length") or 0)
                if declared > self.limits.max_bytes:
                    raise self._too_large(shown, declared)
                return self._read(response, shown, time.monotonic() + 3 * timeout)
        except requests.Timeout:
            raise ImageError(f"image {shown}: no answer within VL4POSE_FETCH_TIMEOUT={timeout} s") from None
        except requests.RequestException as exc:
            raise ImageError(f"image {shown} cannot be fetched ({type(exc).__name__})") from None

    def _read(self, response: requests.Response, shown: str, deadline: float) -> bytes:
        chunks, total = [], 0
        for chunk in response.iter_content(CHUNK):
            total += len(chunk)
            if total > self.limits.max_bytes:
                raise self._too_large(shown, total)
            if time.monotonic() > deadline:
                raise ImageError(f"image {shown}: download took longer than 3 x VL4POSE_FETCH_TIMEOUT")
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, shown: str, size: int) -> ImageError:
        return ImageError(f"image {shown} is over {size} bytes, more than VL4POSE_MAX_IMAGE_BYTES="
                          f"{self.limits.max_bytes}; resize it or raise the limit")

    def _store(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}"
        tmp.write_bytes(data)
        os.replace(tmp, path)
        with self._cache_lock:
            if self._cache_bytes is None:
                self._cache_bytes = sum(f.stat().st_size for f in self.cache_dir.glob("*/*") if f.is_file())
            else:
                self._cache_bytes += len(data)
            if self._cache_bytes > self.limits.cache_max_bytes:
                self._evict()

    def _evict(self) -> None:
        """Delete least recently used files until the cache is under 90 % of its size limit."""
        files = []
        for f in self.cache_dir.glob("*/*"):
            try:
                stat = f.stat()
            except OSError:
                continue
            files.append((stat.st_mtime, stat.st_size, f))
        total = sum(size for _, size, _ in files)
        for _, size, f in sorted(files):
            if total <= 0.9 * self.limits.cache_max_bytes:
                break
            f.unlink(missing_ok=True)
            total -= size
        log.info("image cache %s trimmed to %d bytes", self.cache_dir, total)
        self._cache_bytes = total
