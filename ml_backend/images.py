"""Fetch task images from Label Studio (or any http(s) URL), bounded in bytes, pixels and time, cached on disk.

Relative URLs (``/data/local-files/?d=...``, ``/data/upload/...``) are prefixed with the project's Label
Studio hostname (from ``/setup``, else ``VL4POSE_LABEL_STUDIO_URL``). Downloads go through
:func:`vl4pose.fetch.download`: a token only ever goes to the origin it belongs to (the ``/setup`` token to the
``/setup`` hostname, ``VL4POSE_LABEL_STUDIO_TOKEN`` to ``VL4POSE_LABEL_STUDIO_URL``), never after a redirect to
another origin, no cookies are kept, internal addresses are refused except Label Studio's own origin and the
allow-list, and every download has a wall-clock deadline.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from common.filecache import FileCache
from vl4pose.data.sample import image_size
from vl4pose.errors import ImageError
from vl4pose.fetch import AddressPolicy, Credential, DownloadLimits, FetchError, download, origin, short

log = logging.getLogger(__name__)

__all__ = ["FetchLimits", "ImageFetcher", "ProjectAccess", "short"]


@dataclass(frozen=True)
class ProjectAccess:
    """How one project's images are read.

    Attributes:
        hostname: Label Studio's base URL, for relative image URLs.
        credentials: tokens, each bound to its own origin.
        trusted: URLs whose origin is Label Studio's own (its internal address may be reached).
    """

    hostname: str | None = None
    credentials: tuple[Credential, ...] = field(default=(), repr=False)
    trusted: tuple[str, ...] = ()

    def credential_for(self, url: str) -> Credential | None:
        """The credential of ``url``'s origin, if any."""
        try:
            where = origin(url)
        except FetchError:
            return None
        return next((c for c in self.credentials if c.origin == where), None)


@dataclass(frozen=True)
class FetchLimits:
    """max_bytes: largest download. max_pixels: largest width x height. timeout: seconds to connect and per
    read. deadline: seconds for a whole download. cache_max_bytes: disk cache size before the least recently used
    files go (down to :data:`CACHE_TRIM_TO` of it)."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    timeout: float = 10.0
    cache_max_bytes: int = 1024 * 1024 * 1024
    deadline: float = 30.0


CACHE_TRIM_TO = 0.9
"""A cache over its size limit is trimmed to this fraction of it."""

_ADVICE = {
    "refused": "for Label Studio images, reconnect the ML backend so /setup sends a valid token",
    "not_found": "check the task's image URL and the project's storage",
    "timeout": "the image server is too slow (VL4POSE_FETCH_TIMEOUT / VL4POSE_FETCH_DEADLINE)",
    "too_large": "resize it or raise VL4POSE_MAX_IMAGE_BYTES={max_bytes}",
}


class ImageFetcher:
    """Downloads images into ``cache_dir`` (one file per URL, named by its SHA-256; a
    :class:`common.filecache.FileCache`) and returns their paths."""

    def __init__(self, cache_dir: Path, limits: FetchLimits | None = None, workers: int = 4,
                 policy: AddressPolicy | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.limits = limits or FetchLimits()
        self.policy = policy or AddressPolicy()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch")
        self._cache = FileCache(self.cache_dir, self.limits.cache_max_bytes, trim_to=CACHE_TRIM_TO)

    def absolute_url(self, url: str, access: ProjectAccess) -> str:
        """The URL to download; raises :class:`ImageError` for unsupported or unresolvable URLs."""
        if not isinstance(url, str) or not url.strip():
            raise ImageError("the task's image field is empty; import tasks with an image URL")
        url = url.strip()
        if url.startswith(("http://", "https://")):
            return url
        if url.startswith("/") and not url.startswith("//"):
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
        name = _cache_name(absolute)
        cached = self._cache.lookup(name)
        if cached is not None:
            return cached
        data = self._download(absolute, access)
        # the header only: a bomb or a non-image is refused before any pixel is decoded (never naming the bytes)
        width, height = image_size(data, name=short(url))
        if width * height > self.limits.max_pixels:
            raise ImageError(f"image {short(url)} is {width}x{height} pixels, over VL4POSE_MAX_IMAGE_PIXELS="
                             f"{self.limits.max_pixels}; resize it or raise the limit")
        return self._cache.store(name, data)

    def forget(self, url: str, access: ProjectAccess) -> None:
        """Drop a cached file (for example one that turned out not to decode)."""
        try:
            self._cache.forget(_cache_name(self.absolute_url(url, access)))
        except ImageError:
            pass

    # -- internals ----------------------------------------------------------------------------------
    def _try_fetch(self, url: str, access: ProjectAccess) -> Path | ImageError:
        try:
            return self.fetch(url, access)
        except ImageError as exc:
            return exc

    def _download(self, absolute: str, access: ProjectAccess) -> bytes:
        limits = DownloadLimits(self.limits.max_bytes, self.limits.timeout, self.limits.deadline)
        try:
            return download(absolute, limits, access.credential_for(absolute), self.policy.with_trusted(*access.trusted))
        except FetchError as exc:
            advice = _ADVICE.get(exc.kind, "").format(max_bytes=self.limits.max_bytes)
            raise ImageError(f"image {exc}" + (f"; {advice}" if advice else "")) from None


def _cache_name(absolute: str) -> str:
    """The cache file of a URL: its SHA-256 in hex."""
    return hashlib.sha256(absolute.encode("utf-8")).hexdigest()
