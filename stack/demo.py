"""The demo data set: LSPET when it is on disk, otherwise procedurally drawn figures made here.

Both come out as an LSP-format folder (``joints.mat`` in LSPET's 14 x 3 x N layout, ``images/imNNNNN.jpg``,
``split.json`` with ``pool``/``val``/``test``), so the coordinator links them with ``--dataset lspet`` and the
simulated annotator finds their ground truth the same way. Nothing is downloaded.

The generated figures are stick people on cluttered backgrounds with known keypoints: limbs of the subject's
right are drawn in warm colours and those of the left in cool ones (like ``annotation_configs/lsp14.xml``), so
left and right can be told apart from the picture alone.
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
GENERATED_VERSION = 1
"""Bumped when the drawing changes, so that an old generated set is made again."""


def shared_data_dir() -> Path:
    """``VL4POSE_SHARED_DATA`` or ``../shared/data`` next to the repository (real data, read in place)."""
    return Path(os.environ.get("VL4POSE_SHARED_DATA") or REPO.parent / "shared" / "data").resolve()


def lspet_dir() -> Path | None:
    folder = shared_data_dir() / "lspet"
    return folder if (folder / "joints.mat").is_file() and (folder / "images").is_dir() else None


@dataclass(frozen=True)
class DemoSet:
    """Where the demo comes from and how it is cut.

    Attributes:
        name: ``lspet`` or ``generated``.
        data: the LSP-format folder.
        tasks: pool images imported as tasks (the first ``tasks`` of the pool split).
        seed: labelled pool images after those that train the starter model (round 0).
        holdout: test images kept as the fixed held-out set.
    """

    name: str
    data: Path
    tasks: int
    seed: int
    holdout: int


def demo_set(storage: Path, tasks: int = 200, seed: int = 300, holdout: int = 100) -> DemoSet:
    """LSPET when present, else the generated set under ``storage/demo`` (made on first use)."""
    found = lspet_dir()
    if found is not None:
        return DemoSet("lspet", found, tasks, seed, holdout)
    folder = storage / "demo"
    ensure_generated(folder, pool=tasks + seed, val=60, test=holdout)
    return DemoSet("generated", folder, tasks, seed, holdout)


# -- drawing --------------------------------------------------------------------------------------
# LSP order: 0 r ankle, 1 r knee, 2 r hip, 3 l hip, 4 l knee, 5 l ankle, 6 r wrist, 7 r elbow,
# 8 r shoulder, 9 l shoulder, 10 l elbow, 11 l wrist, 12 neck, 13 head top
LIMBS = ((2, 1, "r"), (1, 0, "r"), (3, 4, "l"), (4, 5, "l"), (8, 7, "r"), (7, 6, "r"), (9, 10, "l"), (10, 11, "l"))


def _direction(angle: float) -> np.ndarray:
    """Unit vector of an angle measured from straight down (image y grows downwards)."""
    return np.array([math.sin(angle), math.cos(angle)])


def random_pose(rng: np.random.Generator) -> np.ndarray:
    """(14, 2) keypoints of a stick person around the origin, torso length 1, y pointing down."""
    k = np.zeros((14, 2))
    lean = rng.normal(0, 0.25)
    up = -_direction(lean)  # from pelvis to neck
    side = np.array([-up[1], up[0]])  # the subject's right when facing the camera (image left)
    pelvis = np.zeros(2)
    k[12] = pelvis + up
    k[13] = k[12] + up * rng.uniform(0.42, 0.5) + side * rng.normal(0, 0.05)
    width = rng.uniform(0.25, 0.35)
    k[8], k[9] = k[12] - side * width, k[12] + side * width
    k[2], k[3] = pelvis - side * 0.17, pelvis + side * 0.17
    for shoulder, elbow, wrist, sign in ((8, 7, 6, -1), (9, 10, 11, 1)):
        upper = lean + sign * rng.uniform(0.1, 2.6)
        k[elbow] = k[shoulder] + _direction(upper) * rng.uniform(0.5, 0.6)
        k[wrist] = k[elbow] + _direction(upper + sign * rng.uniform(-0.3, 1.8)) * rng.uniform(0.45, 0.55)
    for hip, knee, ankle, sign in ((2, 1, 0, -1), (3, 4, 5, 1)):
        thigh = lean + sign * rng.uniform(-0.2, 0.9)
        k[knee] = k[hip] + _direction(thigh) * rng.uniform(0.62, 0.72)
        k[ankle] = k[knee] + _direction(thigh - sign * rng.uniform(0.0, 1.2)) * rng.uniform(0.58, 0.68)
    return k


def _colour(rng: np.random.Generator, warm: bool) -> tuple[int, int, int]:
    hue = rng.uniform(-0.05, 0.12) % 1.0 if warm else rng.uniform(0.5, 0.7)
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def draw_figure(rng: np.random.Generator, size: tuple[int, int]) -> tuple[object, np.ndarray]:
    """One image with a stick person on a cluttered background; returns it and its (14, 2) keypoints in pixels."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    a, b = rng.uniform(60, 220, 3), rng.uniform(60, 220, 3)
    t = (xx / w * rng.uniform(-1, 1) + yy / h * rng.uniform(-1, 1))[..., None]
    background = np.clip(a + (b - a) * (t - t.min()) / (np.ptp(t) + 1e-6) + rng.normal(0, 8, (h, w, 3)), 0, 255)
    image = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(3, 9)):  # clutter
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        x1, y1 = x0 + rng.uniform(5, w / 3), y0 + rng.uniform(5, h / 3)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.uniform(30, 230, 3)))
    pose = random_pose(rng)
    span = np.ptp(pose, axis=0)
    scale = rng.uniform(0.6, 0.85) * min((w - 16) / span[0], (h - 16) / span[1])
    offset = np.array([rng.uniform(8, w - 8 - span[0] * scale), rng.uniform(8, h - 8 - span[1] * scale)])
    keypoints = (pose - pose.min(axis=0)) * scale + offset
    thick = max(3, int(scale * 0.14))
    body = _colour(rng, warm=rng.random() < 0.5)
    torso = [keypoints[i] for i in (8, 9, 3, 2)]
    draw.polygon([tuple(p) for p in torso], fill=body)
    draw.line([tuple(keypoints[12]), tuple(keypoints[13])], fill=body, width=thick)
    head = keypoints[13] * 0.6 + keypoints[12] * 0.4
    radius = 0.22 * scale
    draw.ellipse([head[0] - radius, head[1] - radius, head[0] + radius, head[1] + radius], fill=_colour(rng, False))
    sides = {"r": _colour(rng, warm=True), "l": _colour(rng, warm=False)}
    for start, end, side in LIMBS:
        draw.line([tuple(keypoints[start]), tuple(keypoints[end])], fill=sides[side], width=thick)
        x, y = keypoints[end]
        draw.ellipse([x - thick / 2, y - thick / 2, x + thick / 2, y + thick / 2], fill=sides[side])
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return image, keypoints


def generate(folder: Path, count: int, split: dict[str, list[int]], seed: int = 0) -> None:
    """Write ``count`` figures as an LSPET-layout folder (atomically: a half-written folder is never used)."""
    import scipy.io  # deferred on purpose: only generating the demo set needs it (not start, stop or status)

    tmp = folder.with_name(folder.name + ".tmp")
    (tmp / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    joints = np.zeros((14, 3, count))
    for n in range(count):
        size = (int(rng.integers(160, 241)), int(rng.integers(160, 241)))
        image, keypoints = draw_figure(rng, size)
        image.save(tmp / "images" / f"im{n + 1:05d}.jpg", quality=92)
        joints[:, :2, n] = keypoints
        joints[:, 2, n] = 1.0
    scipy.io.savemat(tmp / "joints.mat", {"joints": joints})
    (tmp / "split.json").write_text(json.dumps(split))
    (tmp / "GENERATED").write_text(json.dumps({"version": GENERATED_VERSION, "count": count, "seed": seed}))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def ensure_generated(folder: Path, pool: int, val: int, test: int) -> Path:
    """The generated demo set in ``folder``, made (a few seconds) unless an identical one is there."""
    count = pool + val + test
    marker = folder / "GENERATED"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("version") == GENERATED_VERSION and info.get("count") == count:
            return folder
    log.info("drawing %d demo figures into %s", count, folder)
    numbers = list(range(1, count + 1))
    split = {"pool": numbers[:pool], "val": numbers[pool : pool + val], "test": numbers[pool + val :]}
    generate(folder, count, split)
    return folder
