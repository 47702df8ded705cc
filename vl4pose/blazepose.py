"""A second opinion for the automatic box: MediaPipe's BlazePose, whose weights ship inside the ``mediapipe``
0.10.14 wheel (nothing is downloaded at run time; later wheels no longer bundle them).

BlazePose is a pretrained single-person pose model (33 landmarks, person-centric left/right like our skeletons).
With ``PredictorConfig.blazepose`` the pipeline uses it three times (docs/RESULTS.md, "A pretrained second opinion"):

- **where to look**: the box of its landmarks replaces the whole image as the first person-finding window (padded
  by ``find_padding``; the passes then run from there); an image it finds no one in starts from the whole image;
- **which way the person faces**: when the whole-body mirror of our final pose (every left/right pair exchanged)
  lies much closer to its landmarks than our pose does, the final heatmaps' left/right channels are exchanged
  before the likelihood and the refinement (a facing error the flip test does not remove);
- **one more candidate**: each landmark inside the final crop joins its keypoint's heatmap peaks in the refinement
  and the interactive re-solve (:func:`with_landmarks`), never in the likelihood, which stays VL4Pose's own.

Opt-in, not the default: about 20 ms more per image on the CPU, and one more dependency: ``mediapipe==0.10.14``
needs protobuf < 5, which the ONNX packages cannot share a virtualenv with, so it runs in a worker process under
its own interpreter (``.mpvenv``, made by ``bash scripts/setup.sh --blazepose``; :mod:`vl4pose.blazepose_worker`).
The ONNX scorer needs it too to reproduce a ranking made with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import struct
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vl4pose.errors import ConfigError
from vl4pose.postprocess import Candidates
from vl4pose.skeletons import Skeleton

log = logging.getLogger(__name__)

MEDIAPIPE_VERSION = "0.10.14"
WORKER = Path(__file__).with_name("blazepose_worker.py")
DEFAULT_PYTHON = Path(__file__).resolve().parents[1] / ".mpvenv" / "bin" / "python"
LANDMARKS = {  # BlazePose landmark index of each keypoint name our skeletons use
    "nose": 0, "left_eye": 2, "right_eye": 5, "left_ear": 7, "right_ear": 8,
    "left_shoulder": 11, "right_shoulder": 12, "left_elbow": 13, "right_elbow": 14, "left_wrist": 15,
    "right_wrist": 16, "left_hip": 23, "right_hip": 24, "left_knee": 25, "right_knee": 26, "left_ankle": 27,
    "right_ankle": 28,
}
SWAP_RATIO = 0.8
"""Mirror the pose when its mirror's mean distance to the landmarks is below this share of the pose's own (fixed
before measuring, not tuned)."""
HINT_BONUS = 0.1
"""A landmark joins its keypoint's refinement candidates valued as the keypoint's strongest heatmap peak plus this
(chosen on LSPET val, automatic box, refined PCK@0.2: -0.1 67.28 %, 0 69.19 %, 0.1 69.78 %, 1.0 69.51 %, our
heatmap's value there 67.33 %, no landmark candidate 66.96 %; docs/RESULTS.md)."""


@dataclass(frozen=True)
class PersonHint:
    """What BlazePose saw in one image: ``box`` (4,) ``(x0, y0, x1, y1)`` of all 33 landmarks and ``keypoints``
    (K, 2) image pixels in the skeleton's order, NaN where the skeleton has a keypoint BlazePose does not place."""

    box: np.ndarray
    keypoints: np.ndarray


def interpreter(python: str | Path | None = None) -> Path:
    """The worker's Python: ``python``, else ``VL4POSE_BLAZEPOSE_PYTHON``, else ``.mpvenv/bin/python`` of this checkout.

    Raises:
        ConfigError: it does not exist (the message says how to make it).
    """
    path = Path(python or os.environ.get("VL4POSE_BLAZEPOSE_PYTHON") or DEFAULT_PYTHON)
    if not path.is_file():
        raise ConfigError(f"the BlazePose second opinion runs under {path}, which does not exist: run `bash "
                          f"scripts/setup.sh --blazepose` (a virtualenv with mediapipe=={MEDIAPIPE_VERSION}, whose "
                          "wheel carries the weights) or set VL4POSE_BLAZEPOSE_PYTHON, or leave it off")
    return path


def mirror_is_closer(pose: np.ndarray, hint: np.ndarray, permutation: list[int], ratio: float = SWAP_RATIO) -> bool:
    """Whether the whole-body mirror ``pose[permutation]`` of a (K, 2) pose is nearer the (K, 2) ``hint`` (mean
    distance over the keypoints both place, at least 4) than ``ratio`` x the pose itself."""
    shared = np.isfinite(hint).all(axis=1) & np.isfinite(pose).all(axis=1) & np.isfinite(pose[permutation]).all(axis=1)
    if shared.sum() < 4:
        return False
    own = np.linalg.norm(pose[shared] - hint[shared], axis=1).mean()
    mirrored = np.linalg.norm(pose[permutation][shared] - hint[shared], axis=1).mean()
    return bool(mirrored < ratio * own)


def with_landmarks(candidates: Candidates, landmarks: np.ndarray, size: float, bonus: float = HINT_BONUS) -> Candidates:
    """``candidates`` (N, K, M) plus one slot per keypoint for BlazePose's landmark: (N, K, 2) ``landmarks`` in
    heatmap pixels, NaN where it places none; one outside the ``size`` x ``size`` heatmap stays out (invalid). The
    slot's value is the keypoint's strongest peak + ``bonus``, so the refinement takes the landmark unless the
    skeleton explains another peak clearly better (the likelihood never sees it)."""
    inside = np.isfinite(landmarks).all(axis=-1) & ((landmarks >= 0) & (landmarks <= size - 1)).all(axis=-1)
    return Candidates(np.concatenate([candidates.xy, np.where(inside[..., None], landmarks, 0.0)[:, :, None]], axis=2),
                      np.concatenate([candidates.value, np.where(inside, candidates.value[..., 0] + bonus,
                                                                 -np.inf)[:, :, None]], axis=2),
                      np.concatenate([candidates.valid, inside[:, :, None]], axis=2))


class BlazePose:
    """BlazePose (MediaPipe's legacy single-image pose solution, full model) in a worker process under the
    ``.mpvenv`` interpreter (:mod:`vl4pose.blazepose_worker`), one image at a time; thread-safe. A worker that dies
    or misses its deadline is stopped and that image gets no hint (the pipeline then starts from the whole image);
    the next image starts a new worker."""

    def __init__(self, skeleton: Skeleton, python: str | Path | None = None, timeout_s: float = 60.0) -> None:
        self.python = interpreter(python)
        self.timeout_s = timeout_s
        self._index = np.array([LANDMARKS.get(name, -1) for name in skeleton.keypoints])
        self._worker: subprocess.Popen | None = None
        self._stop_worker: weakref.finalize | None = None  # kills the worker once: on close() or when collected
        self._lock = threading.Lock()

    def __call__(self, image: np.ndarray) -> PersonHint | None:
        """The hint for an (H, W, 3) uint8 RGB image, or None when BlazePose finds no one (or its worker fails)."""
        with self._lock:
            try:
                points = self._ask(np.ascontiguousarray(image, dtype=np.uint8))
            except (OSError, ValueError, TimeoutError) as exc:
                log.warning("BlazePose worker failed on a %s image (%s); that image starts from the whole image",
                            image.shape, exc)
                self.close()
                return None
        if points is None:
            return None
        keypoints = np.where((self._index >= 0)[:, None], points[np.maximum(self._index, 0)], np.nan)
        return PersonHint(np.concatenate([points.min(axis=0), points.max(axis=0)]), keypoints)

    def close(self) -> None:
        """Stop the worker process (a later call starts a new one)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            self._stop_worker()  # type: ignore[misc]
            for stream in (worker.stdin, worker.stdout):
                with contextlib.suppress(OSError):  # a dead worker's pipe: its unsent bytes are moot
                    stream.close()  # type: ignore[union-attr]

    def _ask(self, image: np.ndarray) -> np.ndarray | None:
        if self._worker is not None and self._worker.poll() is not None:
            self.close()  # it died between images: its pipes are closed before a new one starts
        if self._worker is None:
            self._worker = subprocess.Popen([str(self.python), str(WORKER)], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            self._stop_worker = weakref.finalize(self, _stop, self._worker)
        worker = self._worker
        height, width = image.shape[:2]
        deadline = time.monotonic() + self.timeout_s
        _write(worker, struct.pack("<II", height, width) + image.tobytes(), deadline)
        size = struct.unpack("<I", _read(worker, 4, deadline))[0]
        if size > 1 << 20:
            raise ValueError(f"a {size}-byte reply (at most 1 MiB)")
        landmarks = json.loads(_read(worker, size, deadline))
        if landmarks is None:
            return None
        points = np.asarray(landmarks, dtype=np.float64)
        if points.shape != (33, 2):
            raise ValueError(f"landmarks of shape {points.shape}, not (33, 2)")
        return points


def _write(worker: subprocess.Popen, data: bytes, deadline: float) -> None:
    """All of ``data`` into the worker's stdin by ``deadline`` (a worker that stops reading cannot hang us)."""
    stream = worker.stdin
    view = memoryview(data)
    while view:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([], [stream], [], left)[1]:
            raise TimeoutError("the worker took no input within the deadline")
        view = view[os.write(stream.fileno(), view[:65536]):]  # type: ignore[union-attr]


def _read(worker: subprocess.Popen, size: int, deadline: float) -> bytes:
    """Exactly ``size`` bytes of the worker's stdout by ``deadline`` (time.monotonic)."""
    stream = worker.stdout
    data = b""
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise TimeoutError("no reply within the deadline")
        chunk = os.read(stream.fileno(), size - len(data))  # type: ignore[union-attr]
        if not chunk:
            raise OSError(f"the worker exited (code {worker.poll()})")
        data += chunk
    return data


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.kill()
        worker.wait()
