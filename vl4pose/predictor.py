"""The Predictor: one object that turns images into scored, refined poses for every caller.

The ML backend, the coordinator's ranking job, evaluation and the CLI all go through it, so the
pre-annotation an annotator sees and the score that ranked the task come from the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vl4pose.checkpoint import Checkpoint, load_checkpoint
from vl4pose.data.sample import DEFAULT_MAX_PIXELS, ImageSource, box_from_keypoints, load_image
from vl4pose.device import prepare_module, resolve_device
from vl4pose.data.transforms import CropWindow, apply_affine, heatmap_matrix, image_window, person_window, warp
from vl4pose.errors import ConfigError, ImageError
from vl4pose.inference import HeatmapPoses, NetworkOutput, analyse, run_network

log = logging.getLogger(__name__)

Clamps = Mapping[str | int, tuple[float, float]]


@dataclass(frozen=True)
class PredictorConfig:
    """How images become poses.

    auto_box: without a person box, find the person first (a pass on the whole image, then ``box_passes - 1``
    passes around the previous estimate), then crop around it for the final pass.
    flip: flip test on the final pass (mirrored crop averaged in; the person-finding passes are not flipped).
    box_padding: person window side = padding x the longer side of the found keypoints' box.
    batch_size: crops per forward pass. workers: image-decoding threads. max_pixels: largest image.
    device: ``auto``, ``cpu`` or ``cuda`` (None: ``VL4POSE_DEVICE``, default auto).
    """

    auto_box: bool = True
    box_passes: int = 1
    box_padding: float = 1.25
    flip: bool = True
    batch_size: int = 16
    workers: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    device: str | None = None


@dataclass
class PosePrediction:
    """One person's prediction, in image pixels.

    Attributes:
        image_size: (width, height).
        box: (4,) the square crop window the network saw, (x0, y0, x1, y1) image pixels.
        raw: (K, 2) arg-max pose of the network; refined: (K, 2) tree-DP pose.
        peak: (K,) heatmap value at the raw keypoints; confidence: (K,) refined keypoint confidence in [0, 1].
        placed: (K,) bool, the keypoint is confidently visible (peak >= calibration.min_peak).
        moved: (K,) bool, the refinement chose another peak than the global maximum.
        log_likelihood: expected log-likelihood of the pose (low = unusual = label first).
        score: calibrated likelihood in (0, 1), order-preserving (fraction of validation images lower).
    """

    image_size: tuple[int, int]
    box: np.ndarray
    raw: np.ndarray
    refined: np.ndarray
    peak: np.ndarray
    confidence: np.ndarray
    placed: np.ndarray
    moved: np.ndarray
    log_likelihood: float
    score: float
    keypoint_names: tuple[str, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict:
        def points(xy: np.ndarray) -> dict:
            return {name: [round(float(x), 2), round(float(y), 2)] for name, (x, y) in zip(self.keypoint_names, xy)}

        return {
            "image_size": list(self.image_size), "box": [round(float(v), 2) for v in self.box],
            "raw": points(self.raw), "refined": points(self.refined),
            "confidence": {n: round(float(c), 4) for n, c in zip(self.keypoint_names, self.confidence)},
            "placed": [n for n, p in zip(self.keypoint_names, self.placed) if p],
            "moved": [n for n, m in zip(self.keypoint_names, self.moved) if m],
            "log_likelihood": round(self.log_likelihood, 4), "score": round(self.score, 6),
        }


@dataclass
class Analysis:
    """Network output of one image kept for cheap re-solving with clamped keypoints."""

    image_size: tuple[int, int]
    window: CropWindow
    output: NetworkOutput


class Predictor:
    """Scores and refines poses with one checkpoint. Thread-safe for inference."""

    def __init__(self, checkpoint: Checkpoint | str | Path, config: PredictorConfig | None = None) -> None:
        self.checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        self.config = config or PredictorConfig()
        self.skeleton = self.checkpoint.skeleton
        self.calibration = self.checkpoint.calibration
        self.input_size = self.checkpoint.model_config.input_size
        self.to_heat = heatmap_matrix(self.input_size, self.checkpoint.model_config.heatmap_size)
        self.device = resolve_device(self.config.device)
        self.pose = prepare_module(self.checkpoint.pose, self.device).eval()
        self.bones = self.checkpoint.heads["bones"].to(self.device).eval()
        self.flip_permutation = self.skeleton.flip_permutation()

    # -- public API ---------------------------------------------------------------------------------
    def predict(self, image: ImageSource, box: np.ndarray | None = None, clamped: Clamps | None = None) -> PosePrediction:
        """Predict one image; ``clamped`` maps keypoint names or indices to fixed (x, y) image pixels."""
        return self.resolve(self.analyse(image, box), clamped)

    def predict_batch(self, images: Sequence[ImageSource], boxes: Sequence[np.ndarray | None] | None = None
                      ) -> list[PosePrediction | ImageError]:
        """Predict many images; an image that cannot be read yields its :class:`ImageError` in its slot."""
        return [a if isinstance(a, ImageError) else self.resolve(a) for a in self.analyse_batch(images, boxes)]

    def analyse(self, image: ImageSource, box: np.ndarray | None = None) -> Analysis:
        result = self.analyse_batch([image], [box])[0]
        if isinstance(result, ImageError):
            raise result
        return result

    def analyse_batch(self, images: Sequence[ImageSource], boxes: Sequence[np.ndarray | None] | None = None
                      ) -> list[Analysis | ImageError]:
        """Decode, crop and run the network for many images (the expensive part), batched."""
        boxes = list(boxes) if boxes is not None else [None] * len(images)
        if len(boxes) != len(images):
            raise ConfigError(f"{len(images)} images but {len(boxes)} boxes")
        with ThreadPoolExecutor(max_workers=self.config.workers) as pool:
            arrays = list(pool.map(self._load, images))
        results: list[Analysis | ImageError] = list(arrays)  # errors stay in place
        ok = [i for i, a in enumerate(arrays) if not isinstance(a, ImageError)]
        if not ok:  # nothing decodable: every slot holds its error (no empty forward pass)
            return results
        windows: dict[int, CropWindow] = {}
        first_pass = []
        for i in ok:
            size = (arrays[i].shape[1], arrays[i].shape[0])
            if boxes[i] is not None:
                windows[i] = person_window(np.asarray(boxes[i], dtype=float), size)
            elif self.config.auto_box:
                first_pass.append(i)
                windows[i] = image_window(size)
            else:
                windows[i] = image_window(size)
        for _ in range(self.config.box_passes if first_pass else 0):
            coarse = self._forward([arrays[i] for i in first_pass], [windows[i] for i in first_pass], flip=False)
            poses = analyse(coarse, self.skeleton, self.calibration)
            for j, i in enumerate(first_pass):
                windows[i] = self._person_window(poses, j, windows[i], arrays[i])
        output = self._forward([arrays[i] for i in ok], [windows[i] for i in ok], flip=self.config.flip)
        for j, i in enumerate(ok):
            single = NetworkOutput(output.heatmaps[j:j + 1], output.mean[j:j + 1], output.logvar[j:j + 1],
                                   [f[j:j + 1] for f in output.features])
            results[i] = Analysis((arrays[i].shape[1], arrays[i].shape[0]), windows[i], single)
        return results

    def resolve(self, analysis: Analysis, clamped: Clamps | None = None) -> PosePrediction:
        """Likelihood and refinement of an analysed image, with optional clamped keypoints (cheap)."""
        to_image = np.linalg.inv(self.to_heat @ analysis.window.matrix(self.input_size))
        clamps = {}
        for key, xy in (clamped or {}).items():
            index = key if isinstance(key, int) else self.skeleton.index(key)
            if not 0 <= index < self.skeleton.num_keypoints or not np.isfinite(xy).all():
                raise ConfigError(f"clamped keypoint {key!r} at {xy} is not a keypoint with a finite position")
            clamps[index] = tuple(apply_affine(np.linalg.inv(to_image), np.asarray(xy, dtype=float)))
        poses = analyse(analysis.output, self.skeleton, self.calibration, [clamps] if clamps else None)
        prediction = self._to_prediction(poses, 0, analysis, to_image)
        for index in clamps:
            prediction.placed[index] = True
        return prediction

    # -- internals ----------------------------------------------------------------------------------
    def _load(self, image: ImageSource) -> np.ndarray | ImageError:
        try:
            return load_image(image, max_pixels=self.config.max_pixels)
        except ImageError as exc:
            log.warning("%s", exc)
            return exc

    def _forward(self, arrays: list[np.ndarray], windows: list[CropWindow], flip: bool) -> NetworkOutput:
        outputs = []
        permutation = self.flip_permutation if flip else None
        for start in range(0, len(arrays), self.config.batch_size):
            crops = torch.stack([warp(a, w.matrix(self.input_size), self.input_size)
                                 for a, w in zip(arrays[start:start + self.config.batch_size],
                                                 windows[start:start + self.config.batch_size])])
            outputs.append(run_network(self.pose, self.bones, crops, permutation))
        return NetworkOutput(torch.cat([o.heatmaps for o in outputs]), torch.cat([o.mean for o in outputs]),
                             torch.cat([o.logvar for o in outputs]),
                             [torch.cat(level) for level in zip(*[o.features for o in outputs])])

    def _person_window(self, poses: HeatmapPoses, j: int, window: CropWindow, array: np.ndarray) -> CropWindow:
        to_image = np.linalg.inv(self.to_heat @ window.matrix(self.input_size))
        points = apply_affine(to_image, poses.refined[j].numpy().astype(np.float64))
        placed = poses.peak[j].numpy() >= self.calibration.min_peak
        if placed.sum() < 2:
            return window
        box = box_from_keypoints(points, placed)
        return person_window(box, (array.shape[1], array.shape[0]), self.config.box_padding)

    def _to_prediction(self, poses: HeatmapPoses, j: int, analysis: Analysis, to_image: np.ndarray) -> PosePrediction:
        peak = poses.peak[j].numpy().astype(np.float64)
        ll = float(poses.log_likelihood[j])
        (cx, cy), half = analysis.window.centre, analysis.window.side / 2.0
        return PosePrediction(
            image_size=analysis.image_size,
            box=np.array([cx - half, cy - half, cx + half, cy + half]),
            raw=apply_affine(to_image, poses.raw[j].numpy().astype(np.float64)),
            refined=apply_affine(to_image, poses.refined[j].numpy().astype(np.float64)),
            peak=peak,
            confidence=poses.confidence[j].numpy().astype(np.float64),
            placed=peak >= self.calibration.min_peak,
            moved=poses.moved[j].numpy(),
            log_likelihood=ll,
            score=float(self.calibration.score(np.array([ll]))[0]),
            keypoint_names=self.skeleton.keypoints,
        )
