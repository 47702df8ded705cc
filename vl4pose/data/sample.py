"""The one sample type every loader produces, and image decoding with clear errors."""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from vl4pose.errors import ImageError

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest image (width x height) decoded by default; bigger ones raise :class:`ImageError`."""

ImageSource = str | Path | bytes | np.ndarray


@dataclass
class Sample:
    """One annotated person.

    Attributes:
        sample_id: stable identifier (e.g. ``"im00042"`` or ``"coco:123:0"``).
        image: where the pixels come from: a path, encoded bytes, or an (H, W, 3) uint8 array.
        keypoints: (K, 2) float array of (x, y) in image pixels; rows of missing keypoints hold NaN.
        visibility: (K,) int array, COCO convention: 0 missing, 1 labelled but occluded, 2 visible.
        box: optional (4,) person box ``(x0, y0, x1, y1)`` in image pixels.
        head_box: optional (4,) head box for PCKh, same convention.
    """

    sample_id: str
    image: ImageSource
    keypoints: np.ndarray
    visibility: np.ndarray
    box: np.ndarray | None = None
    head_box: np.ndarray | None = None

    @property
    def labelled(self) -> np.ndarray:
        """(K,) bool: keypoints with a position."""
        return (self.visibility > 0) & np.isfinite(self.keypoints).all(axis=1)

    def load_image(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        return load_image(self.image, max_pixels=max_pixels)


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image into an (H, W, 3) uint8 RGB array.

    Args:
        source: a file path, encoded bytes, or an array (H, W), (H, W, 3) or (H, W, 4).
        max_pixels: refuse images with more pixels than this (decompression bombs, huge scans).

    Raises:
        ImageError: the file is missing, not an image, truncated, or too large; the message names it.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    name = str(source) if isinstance(source, (str, Path)) else f"<{len(source)} bytes>"
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise ImageError(f"image {name} not found; check the path or the dataset folder")
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
        with handle, _open_checked(handle, name, max_pixels) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"image {name} cannot be decoded ({exc}); the file is corrupt or not an image") from exc


def _open_checked(handle, name: str, max_pixels: int | None) -> Image.Image:
    """Open an image and check its size from the header, before any pixel is decoded.

    Pillow's own bomb check (``Image.MAX_IMAGE_PIXELS``) runs inside ``Image.open``; its warning is
    silenced in favour of ``max_pixels``, its error (over twice its limit) becomes an :class:`ImageError`.

    Raises:
        ImageError: over ``max_pixels`` or over Pillow's limit; OSError and friends for unreadable data.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(handle)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image {name} is refused as a decompression bomb ({exc}); resize it") from None
    width, height = im.size
    if max_pixels is not None and width * height > max_pixels:
        im.close()
        raise ImageError(f"image {name} is {width}x{height} = {width * height} pixels, over the limit of "
                         f"{max_pixels}; resize it or raise the limit")
    return im


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
        raise ImageError(f"image array has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and float(np.nanmax(array)) <= 1.0:
            array = array * 255.0
        array = np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array[:, :, :3])


def image_size(source: ImageSource, max_pixels: int | None = None, name: str | None = None) -> tuple[int, int]:
    """(width, height) of an image, as displayed (EXIF rotation applied), read from its header only.

    Args:
        source: a file path, encoded bytes, or an array.
        max_pixels: refuse images with more pixels than this (checked before anything else is read).
        name: how the image is named in error messages (default: the path; bytes are never shown).

    Raises:
        ImageError: not an image, unreadable, or over ``max_pixels`` / Pillow's bomb limit.
    """
    if isinstance(source, np.ndarray):
        return int(source.shape[1]), int(source.shape[0])
    shown = name or (str(source)[:200] if isinstance(source, (str, Path)) else f"<{len(source)} bytes>")
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
        with handle, _open_checked(handle, shown, max_pixels) as im:
            width, height = im.size
            if _orientation(im) in (5, 6, 7, 8):  # EXIF orientation rotates by 90 degrees
                width, height = height, width
            return width, height
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"image {shown} cannot be read ({type(exc).__name__}); it is corrupt or not an image") from exc


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag, from data already read with the header.

    ``PngImageFile.getexif()`` decodes the whole image to look for an ``eXIf`` chunk after the pixels,
    so a PNG's EXIF is only used when it came before them (``im.info["exif"]``).
    """
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        return int(im.getexif().get(0x0112, 1))
    except (OSError, ValueError, SyntaxError, TypeError):
        return 1


def box_from_keypoints(keypoints: np.ndarray, labelled: np.ndarray) -> np.ndarray | None:
    """(4,) tight box around labelled keypoints, or None when none is labelled."""
    if not labelled.any():
        return None
    pts = keypoints[labelled]
    return np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()], dtype=np.float64)
