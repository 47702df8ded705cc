"""Person-centred crops, augmentation and their exact inverse, as 3x3 affine matrices.

The window maths (:class:`CropWindow`, :func:`heatmap_matrix`, :func:`person_window`, ...) lives in the
torch-free :mod:`vl4pose.crop` (re-exported here); this module adds the torch crops training uses and the
augmentation. Convention: pixel centres at integer coordinates (see :mod:`vl4pose.crop`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vl4pose.crop import (CropWindow, apply_affine, heatmap_matrix, image_window, person_window,  # noqa: F401
                          prefilter)
from vl4pose.data.sample import box_from_keypoints


def sample_window(keypoints: np.ndarray, labelled: np.ndarray, box: np.ndarray | None,
                  image_size: tuple[int, int], padding: float = 1.25) -> CropWindow:
    """Window for a training sample: its person box, else the box of its labelled keypoints."""
    if box is None:
        box = box_from_keypoints(keypoints, labelled)
    return person_window(box, image_size, padding)


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> torch.Tensor:
    """Crop an (H, W, 3) uint8 image through an image->crop affine into a (3, size, size) float tensor in
    [0, 1]. Large downscales first shrink the image with a box filter to avoid aliasing."""
    image, matrix = prefilter(image, matrix)
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
