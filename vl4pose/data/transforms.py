"""Person-centred crops, augmentation and their exact inverse, as 3x3 affine matrices.

Convention: pixel centres sit at integer coordinates, in the image, in the network input and in the
heatmaps. A crop is described by a :class:`CropWindow` (centre, side, rotation, flip); its matrix maps
image pixels to input pixels, and ``np.linalg.inv`` of it maps predictions back to image pixels.
Heatmap pixel ``j`` covers input pixels ``[j*stride, (j+1)*stride)``, so its centre is at input
coordinate ``j*stride + (stride-1)/2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vl4pose.data.sample import box_from_keypoints


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
    width, height = image_size
    if box is None or not np.isfinite(box).all():
        return image_window(image_size)
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0, 8.0) * padding
    return CropWindow(((x0 + x1) / 2.0, (y0 + y1) / 2.0), float(side))


def image_window(image_size: tuple[int, int]) -> CropWindow:
    """Square window holding the whole image, centred."""
    width, height = image_size
    return CropWindow(((width - 1) / 2.0, (height - 1) / 2.0), float(max(width, height)))


def sample_window(keypoints: np.ndarray, labelled: np.ndarray, box: np.ndarray | None,
                  image_size: tuple[int, int], padding: float = 1.25) -> CropWindow:
    """Window for a training sample: its person box, else the box of its labelled keypoints."""
    if box is None:
        box = box_from_keypoints(keypoints, labelled)
    return person_window(box, image_size, padding)


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> torch.Tensor:
    """Crop an (H, W, 3) uint8 image through an image->crop affine into a (3, size, size) float tensor in
    [0, 1]. Large downscales first shrink the image with a box filter to avoid aliasing."""
    scale = math.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    factor = int(1.0 / scale / 2.0) if scale < 0.5 else 1
    if factor > 1:
        height, width = image.shape[:2]
        image = np.asarray(Image.fromarray(image).reduce(factor))
        # reduced pixel i covers original pixels [i*f, (i+1)*f): centre at i*f + (f-1)/2
        up = np.array([[factor, 0, (factor - 1) / 2.0], [0, factor, (factor - 1) / 2.0], [0, 0, 1.0]])
        matrix = matrix @ up
    tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float().div_(255.0)
    return warp_tensor(tensor[None], matrix[None], size)[0]


def warp_tensor(images: torch.Tensor, matrices: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """Batched crop: (B, C, H, W) images through (B, 3, 3) source->crop affines -> (B, C, size, size).

    Pixels outside the source are zero.
    """
    _, _, height, width = images.shape
    m = torch.as_tensor(np.asarray(matrices), dtype=torch.float64)
    inverse = torch.linalg.inv(m)  # crop pixel -> source pixel
    # normalised crop coords u in [-1, 1] (align_corners=False): pixel = ((u + 1) * size - 1) / 2
    to_pixel = torch.tensor([[size / 2.0, 0, (size - 1) / 2.0], [0, size / 2.0, (size - 1) / 2.0], [0, 0, 1.0]],
                            dtype=torch.float64)
    to_norm = torch.tensor([[2.0 / width, 0, 1.0 / width - 1], [0, 2.0 / height, 1.0 / height - 1], [0, 0, 1.0]],
                           dtype=torch.float64)
    theta = (to_norm @ inverse @ to_pixel)[:, :2].to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation of the crop window (all ranges symmetric)."""

    scale: float = 0.25
    """Window side multiplied by a factor in [1 - scale, 1 + scale]."""
    rotation: float = 30.0
    """Degrees, uniform in [-rotation, rotation], applied with probability ``rotation_prob``."""
    rotation_prob: float = 0.5
    flip_prob: float = 0.5
    shift: float = 0.08
    """Centre shift as a fraction of the side."""
    whole_image_prob: float = 0.1
    """Probability of training on the whole-image window instead of the person window (what the
    predictor's first pass sees when no person box is given)."""


def augment_window(window: CropWindow, config: AugmentConfig, rng: np.random.Generator) -> CropWindow:
    """A randomly scaled, shifted, rotated and possibly flipped copy of ``window``."""
    side = window.side * rng.uniform(1 - config.scale, 1 + config.scale)
    shift = rng.uniform(-config.shift, config.shift, size=2) * window.side
    rotation = rng.uniform(-config.rotation, config.rotation) if rng.random() < config.rotation_prob else 0.0
    return CropWindow((window.centre[0] + shift[0], window.centre[1] + shift[1]), float(side),
                      float(rotation), bool(rng.random() < config.flip_prob))
