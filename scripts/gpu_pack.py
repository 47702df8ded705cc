"""Build the LSPET pack that travels to a GPU machine with the checkout (``../shared`` does not travel).

The pack is an LSPET-format folder (``joints.mat`` 14x3x10000, ``split.json``, ``images/``) that the
project's own loader reads unchanged:

- ``pool`` and ``val`` images become person-centred canvases (the training crop window enlarged by
  ``--margin``, what :class:`vl4pose.data.crops.CropCache` keeps anyway) of ``--canvas`` pixels, re-encoded
  as JPEG at ``--quality``; their keypoints are moved into canvas pixels.
- ``test`` images are kept whole (the automatic-box evaluation needs the whole picture), downscaled to at
  most ``--test-side`` pixels, re-encoded at the same quality.

Usage: ``.venv/bin/python scripts/gpu_pack.py --data ../shared/data/lspet --out build/gpu-pack/lspet``
Prints the pack's size and image counts as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vl4pose.data import load_samples  # noqa: E402
from vl4pose.data.sample import Sample  # noqa: E402
from vl4pose.data.transforms import CropWindow, apply_affine, sample_window, warp  # noqa: E402

log = logging.getLogger("gpu_pack")


def _jpeg(array: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def canvas_of(sample: Sample, canvas: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(canvas, canvas, 3) uint8 person-centred canvas and the (3, 3) image -> canvas affine."""
    image = sample.load_image()
    window = sample_window(sample.keypoints, sample.labelled, sample.box, (image.shape[1], image.shape[0]))
    matrix = CropWindow(window.centre, window.side * margin).matrix(canvas)
    pixels = (warp(image, matrix, canvas) * 255.0).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    return pixels, matrix


def whole_of(sample: Sample, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole image, downscaled so its longer side is at most ``side``, and the image -> stored affine."""
    image = sample.load_image()
    scale = min(1.0, side / max(image.shape[:2]))
    if scale >= 1.0:
        return image, np.eye(3)
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    resized = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    sx, sy = size[0] / image.shape[1], size[1] / image.shape[0]
    # pixel centres at integers: x' = (x + 0.5) * s - 0.5
    matrix = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    return resized, matrix


def build(data: Path, out: Path, limits: dict[str, int], canvas: int, margin: float, quality: int,
          test_side: int) -> dict:
    """Write the pack to ``out`` (replaced atomically) and return its summary.

    ``limits``: at most this many images of each split (0: all).
    """
    splits = {name: load_samples("lspet", data, name) for name in ("pool", "val", "test")}
    splits = {name: samples[:limits.get(name) or len(samples)] for name, samples in splits.items()}
    count = 10000
    joints = np.zeros((14, 3, count))
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    split_numbers: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}
    for name, samples in splits.items():
        numbers, total = [], 0
        for sample in samples:
            number = int(sample.sample_id[2:])
            pixels, matrix = whole_of(sample, test_side) if name == "test" else canvas_of(sample, canvas, margin)
            encoded = _jpeg(pixels, quality)
            (tmp / "images" / f"{sample.sample_id}.jpg").write_bytes(encoded)
            total += len(encoded)
            points = apply_affine(matrix, np.nan_to_num(sample.keypoints))
            joints[:, :2, number - 1] = np.where(sample.labelled[:, None], points, -1.0)
            joints[:, 2, number - 1] = sample.labelled.astype(float)
            numbers.append(number)
        split_numbers[name] = numbers
        sizes[name] = total
    scipy.io.savemat(str(tmp / "joints.mat"), {"joints": joints}, do_compression=True)
    (tmp / "split.json").write_text(json.dumps(split_numbers))
    (tmp / "PACK.json").write_text(json.dumps({"canvas": canvas, "margin": margin, "quality": quality,
                                               "test_side": test_side, "source": str(data)}, indent=2))
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"pack": str(out), "bytes": total, "mb": round(total / 2**20, 2),
            "images": {k: len(v) for k, v in split_numbers.items()},
            "mean_kb": {k: round(sizes[k] / max(len(split_numbers[k]), 1) / 1024, 1) for k in sizes},
            "canvas": canvas, "quality": quality, "test_side": test_side}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/lspet"))
    parser.add_argument("--out", type=Path, default=Path("build/gpu-pack/lspet"))
    parser.add_argument("--pool", type=int, default=0, help="pack only the first N pool images (0: all 8,500)")
    parser.add_argument("--val", type=int, default=0, help="pack only the first N val images (0: all 500)")
    parser.add_argument("--test", type=int, default=0, help="pack only the first N test images (0: all 1,000)")
    parser.add_argument("--canvas", type=int, default=160, help="canvas side in pixels (default 160)")
    parser.add_argument("--margin", type=float, default=1.5, help="canvas = margin x the training window")
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality (default 75)")
    parser.add_argument("--test-side", type=int, default=256, help="longest side of packed test images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    limits = {"pool": args.pool, "val": args.val, "test": args.test}
    summary = build(args.data, args.out, limits, args.canvas, args.margin, args.quality, args.test_side)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
