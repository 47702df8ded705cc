"""Crop-window maths and the inference crop, in NumPy and Pillow only (no torch at import).

Convention: pixel centres sit at integer coordinates, in the image, in the network input and in the
heatmaps. A crop is described by a :class:`CropWindow` (centre, side, rotation, flip); its matrix maps
image pixels to input pixels, and ``np.linalg.inv`` of it maps predictions back to image pixels.
Heatmap pixel ``j`` covers input pixels ``[j*stride, (j+1)*stride)``, so its centre is at input
coordinate ``j*stride + (stride-1)/2``.

:func:`crop_image` is the one crop both the torch :class:`~vl4pose.predictor.Predictor` and the ONNX
scorer use; it samples exactly like the training crop (:func:`vl4pose.data.transforms.warp`, torch's
``grid_sample``: bilinear, zeros outside, the same box-filter pre-shrink), to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["CropWindow", "apply_affine", "crop_batch", "crop_image", "heatmap_matrix",
           "image_window", "person_window", "prefilter"]


@dataclass(frozen=True)
class CropWindow:
    """A square window of the image: ``centre`` (x, y) pixels, ``side`` pixels, ``rotation`` degrees
    (counter-clockwise in the image), ``flip`` horizontal mirror about the centre."""

    centre: tuple[float, float]
    side: float
    rotation: float = 0.0
    flip: bool = False

    def matrix(self, size: int) -> np.ndarray:
        """(3, 3) affine mapping image pixels to the pixels of a ``size`` x ``size`` crop."""
        cx, cy = self.centre
        half = (size - 1) / 2.0
        scale = size / self.side
        theta = math.radians(self.rotation)
        cos, sin = math.cos(theta), math.sin(theta)
        flip = -1.0 if self.flip else 1.0
        # out = half + scale * R * F * (p - c)
        linear = scale * np.array([[cos, sin], [-sin, cos]]) @ np.diag([flip, 1.0])
        m = np.eye(3)
        m[:2, :2] = linear
        m[:2, 2] = np.array([half, half]) - linear @ np.array([cx, cy])
        return m

    def box(self) -> np.ndarray:
        """(4,) the unrotated window as (x0, y0, x1, y1) image pixels."""
        (cx, cy), half = self.centre, self.side / 2.0
        return np.array([cx - half, cy - half, cx + half, cy + half])


def heatmap_matrix(input_size: int, heatmap_size: int) -> np.ndarray:
    """(3, 3) affine mapping input pixels to heatmap pixels (pixel centres at integers)."""
    stride = input_size / heatmap_size
    m = np.eye(3)
    m[0, 0] = m[1, 1] = 1.0 / stride
    m[0, 2] = m[1, 2] = -(stride - 1) / (2 * stride)
    return m


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (3, 3) affine to (..., 2) points; NaN rows stay NaN."""
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def person_window(box: np.ndarray | None, image_size: tuple[int, int], padding: float = 1.25) -> CropWindow:
    """Square window around a person box (x0, y0, x1, y1), padded; the whole image when no box."""
    if box is None or not np.isfinite(box).all():
        return image_window(image_size)
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0, 8.0) * padding
    return CropWindow(((x0 + x1) / 2.0, (y0 + y1) / 2.0), float(side))


def image_window(image_size: tuple[int, int]) -> CropWindow:
    """Square window holding the whole image, centred."""
    width, height = image_size
    return CropWindow(((width - 1) / 2.0, (height - 1) / 2.0), float(max(width, height)))


def prefilter(image: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shrink the image with a box filter before a large downscale (no aliasing); returns the image and
    the image->crop matrix adjusted to it. Scales of at least 1/4 leave both unchanged."""
    scale = math.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    factor = int(1.0 / scale / 2.0) if scale < 0.5 else 1
    if factor <= 1:
        return image, matrix
    reduced = np.asarray(Image.fromarray(image).reduce(factor))
    # reduced pixel i covers original pixels [i*f, (i+1)*f): centre at i*f + (f-1)/2
    up = np.array([[factor, 0, (factor - 1) / 2.0], [0, factor, (factor - 1) / 2.0], [0, 0, 1.0]])
    return reduced, matrix @ up


def crop_image(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Crop an (H, W, 3) uint8 image through an image->crop affine into a (3, size, size) float32 array in
    [0, 1]: bilinear sampling at the crop pixel centres, zeros outside the image (torch's ``grid_sample``
    with ``align_corners=False`` and zero padding, which training uses)."""
    image, matrix = prefilter(image, matrix)
    height, width = image.shape[:2]
    inverse = np.linalg.inv(matrix)  # crop pixel -> image pixel
    cols = np.arange(size, dtype=np.float64)
    x = inverse[0, 0] * cols[None, :] + inverse[0, 1] * cols[:, None] + inverse[0, 2]
    y = inverse[1, 0] * cols[None, :] + inverse[1, 1] * cols[:, None] + inverse[1, 2]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    out = np.zeros((size, size, image.shape[2]), dtype=np.float32)
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xx, yy = x0 + dx, y0 + dy
        inside = (xx >= 0) & (xx < width) & (yy >= 0) & (yy < height)
        pixels = image[np.clip(yy, 0, height - 1), np.clip(xx, 0, width - 1)]  # (size, size, C) uint8
        out += pixels * (weight * inside)[..., None]
    return np.ascontiguousarray(out.transpose(2, 0, 1)) * np.float32(1.0 / 255.0)


def crop_batch(images: Sequence[np.ndarray], windows: Sequence[CropWindow], size: int) -> np.ndarray:
    """(N, 3, size, size) float32 crops of N images through their windows."""
    return np.stack([crop_image(image, window.matrix(size), size) for image, window in zip(images, windows)])
