"""A task's image with its predicted (refined) pose drawn on it, as PNG bytes (Pillow, server-side)."""

from __future__ import annotations

import colorsys
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from vl4pose.skeletons import Skeleton

MAX_SIDE = 320


def _colour(i: int, n: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(i / max(n, 1), 0.8, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def render_pose(
    image: Path | None,
    image_size: tuple[int, int],
    keypoints: np.ndarray,
    placed: np.ndarray,
    confidence: np.ndarray,
    skeleton: Skeleton,
    max_side: int = MAX_SIDE,
) -> bytes:
    """Draw the skeleton edges and keypoints (radius grows with confidence) over the image.

    Args:
        image: the image file, or None for a grey canvas of ``image_size``.
        image_size: (width, height) the keypoints refer to.
        keypoints: (K, 2) pixels; placed: (K,) bool; confidence: (K,) in [0, 1].
    """
    width, height = image_size
    if image is not None:
        with Image.open(image) as im:
            canvas = ImageOps.exif_transpose(im).convert("RGB")
    else:
        canvas = Image.new("RGB", (max(width, 1), max(height, 1)), (60, 60, 60))
    scale = min(1.0, max_side / max(canvas.size))
    canvas = canvas.resize((max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale))))
    sx, sy = canvas.width / max(width, 1), canvas.height / max(height, 1)
    points = [(float(x) * sx, float(y) * sy) for x, y in keypoints]
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(canvas.width / 120))
    for edge, (parent, child) in enumerate(skeleton.edges):
        if placed[parent] and placed[child]:
            draw.line([points[parent], points[child]], fill=_colour(edge, skeleton.num_edges), width=line)
    for k, (x, y) in enumerate(points):
        if not placed[k] or not np.isfinite([x, y]).all():
            continue
        radius = line + 2 * float(np.clip(confidence[k], 0, 1))
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(255, 255, 255), outline=(0, 0, 0))
    out = io.BytesIO()
    canvas.save(out, format="PNG", optimize=False)
    return out.getvalue()
