"""From image files to scored, refined poses around any network: the code path the torch
:class:`~vl4pose.predictor.Predictor` and the ONNX :class:`~vl4pose.scorer.OnnxScorer` share.

Decoding, crop windows (the automatic person box: a pass on the whole image, then a crop around the pose
found), the crops themselves, the flip test, candidates, likelihood, refinement and the calibrated score
all run here in NumPy and Pillow (no torch at import). A subclass only supplies :meth:`PosePipeline.network`:
crops in, heatmaps and bone-length parameters out.
Shapes: N images, K keypoints, E edges, S input side, H heatmap side.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from vl4pose.blazepose import BlazePose, PersonHint, mirror_is_closer, with_landmarks
from vl4pose.crop import CropWindow, apply_affine, crop_batch, heatmap_matrix, image_window, person_window
from vl4pose.data.sample import ImageSource, box_from_keypoints, load_image
from vl4pose.errors import ConfigError, ImageError
from vl4pose.pipeline_config import PredictorConfig
from vl4pose.postprocess import (DEFAULT_DECODER, Calibration, expected_log_likelihood, find_candidates, flip_average,
                                 rescale_heatmaps)
from vl4pose.prediction import PosePrediction
from vl4pose.refine import refine
from vl4pose.skeletons import Skeleton

log = logging.getLogger(__name__)

Clamps = Mapping[str | int, tuple[float, float]]


@dataclass
class NetworkArrays:
    """Network outputs as float32 NumPy arrays: ``heatmaps`` (N, K, H, H) of the last stack, bone-length
    ``mean`` and ``logvar`` (N, E) in units of the heatmap side. ``single``: after a multi-scale test, the
    (N, K, H, H) heatmaps of the scale-1 crop alone, which the likelihood is computed on (as the calibration's
    reference was); the poses come from the average in ``heatmaps``."""

    heatmaps: np.ndarray
    mean: np.ndarray
    logvar: np.ndarray
    single: np.ndarray | None = None

    def rows(self, start: int, stop: int) -> "NetworkArrays":
        single = None if self.single is None else self.single[start:stop]
        return NetworkArrays(self.heatmaps[start:stop], self.mean[start:stop], self.logvar[start:stop], single)


@dataclass
class HeatmapPoses:
    """Everything scored for a batch, in heatmap pixels (NumPy).

    Attributes:
        raw: (N, K, 2) arg-max pose; peak: (N, K) each keypoint's heatmap maximum (of the scale-1 crop after a
            multi-scale test: ``calibration.min_peak`` was fitted on those).
        refined: (N, K, 2) tree-DP pose; confidence: (N, K) max-marginal share; moved: (N, K) bool.
        log_likelihood: (N,) expected log-likelihood; edge_log_likelihood: (N, E).
    """

    raw: np.ndarray
    peak: np.ndarray
    refined: np.ndarray
    confidence: np.ndarray
    moved: np.ndarray
    log_likelihood: np.ndarray
    edge_log_likelihood: np.ndarray


def analyse_heatmaps(out: NetworkArrays, skeleton: Skeleton, calibration: Calibration,
                     clamps: Sequence[Mapping[int, tuple[float, float]]] | None = None,
                     decoder: str = DEFAULT_DECODER, sigma: float = 1.0, landmarks: np.ndarray | None = None
                     ) -> HeatmapPoses:
    """Candidates, expected log-likelihood and refinement for a batch: the one post-network path.

    Args:
        out: network outputs for N images.
        clamps: per image, {keypoint index: (x, y) heatmap pixels} placed by an annotator; they become
            the only candidate of their keypoint in the refinement (not in the likelihood).
        decoder, sigma: the sub-pixel decoder of the candidates (``sigma``: the model's target sigma).
        landmarks: (N, K, 2) heatmap pixels, NaN where none: BlazePose's, one more refinement candidate per
            keypoint (:func:`vl4pose.blazepose.with_landmarks`; not in the likelihood).
    """
    size = float(out.heatmaps.shape[-1])
    candidates = find_candidates(out.heatmaps, calibration.max_candidates, decoder, sigma)
    scored = candidates  # the likelihood: on the scale-1 heatmaps (see NetworkArrays)
    if out.single is not None:
        scored = find_candidates(out.single, calibration.max_candidates, decoder, sigma)
    total, per_edge = expected_log_likelihood(scored.xy, scored.log_probs(calibration.temperature), out.mean,
                                              out.logvar, skeleton, size)
    raw = candidates.xy[:, :, 0]
    if landmarks is not None:
        candidates = with_landmarks(candidates, landmarks, size)
    if clamps and any(clamps):
        candidates = candidates.copy()
        for image, points in enumerate(clamps):
            for keypoint, xy in points.items():
                candidates.clamp(keypoint, image, xy)
    solved = refine(candidates, candidates.log_probs(calibration.temperature), out.mean, out.logvar, skeleton, size)
    for image, points in enumerate(clamps or []):
        for keypoint in points:
            solved.moved[image, keypoint] = False
    return HeatmapPoses(raw, scored.value[:, :, 0], solved.xy, solved.confidence, solved.moved, total, per_edge)


@dataclass
class Analysis:
    """Network output of one image kept for cheap re-solving with clamped keypoints; ``landmarks``: (K, 2) image
    pixels of BlazePose's hint (NaN where it places none), None without one."""

    image_size: tuple[int, int]
    window: CropWindow
    output: NetworkArrays
    landmarks: np.ndarray | None = None


class PosePipeline:
    """Images -> :class:`PosePrediction`; subclasses implement :meth:`network`. Thread-safe for inference
    when the network is."""

    def __init__(self, skeleton: Skeleton, calibration: Calibration, input_size: int, heatmap_size: int,
                 sigma: float, config: PredictorConfig | None = None, decoder: str = DEFAULT_DECODER) -> None:
        self.skeleton = skeleton
        self.calibration = calibration
        self.input_size = input_size
        self.sigma = sigma
        self.decoder = decoder
        self.config = config or PredictorConfig()
        self.to_heat = heatmap_matrix(input_size, heatmap_size)
        self.flip_permutation = skeleton.flip_permutation()
        self._blazepose = BlazePose(skeleton) if self.config.blazepose else None  # its worker starts on first use

    def network(self, crops: np.ndarray, bones_for: int) -> NetworkArrays:
        """Run (B, 3, S, S) float32 crops in [0, 1]: heatmaps of all B, bone parameters of the first ``bones_for``."""
        raise NotImplementedError

    def image_to_heat(self, window: CropWindow) -> np.ndarray:
        """(3, 3) affine from image pixels to the heatmap pixels of ``window``'s crop."""
        return self.to_heat @ window.matrix(self.input_size)

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
            if boxes[i] is not None:
                windows[i] = person_window(np.asarray(boxes[i], dtype=float), _size(arrays[i]))
            else:
                windows[i] = image_window(_size(arrays[i]))
                if self.config.auto_box:
                    first_pass.append(i)
        found = {i: self._blazepose(arrays[i]) for i in ok} if self._blazepose else {}  # type: ignore[arg-type]
        hints = {i: hint for i, hint in found.items() if hint is not None}  # BlazePose's, where it finds a person
        windows.update(self._find_people({i: arrays[i] for i in first_pass}, hints))
        output = self._final_pass([arrays[i] for i in ok], [windows[i] for i in ok])
        if hints:
            self._face_as_hinted(output, [windows[i] for i in ok], [hints.get(i) for i in ok])
        for j, i in enumerate(ok):
            landmarks = hints[i].keypoints if i in hints else None
            results[i] = Analysis(_size(arrays[i]), windows[i], output.rows(j, j + 1), landmarks)
        return results

    def resolve(self, analysis: Analysis, clamped: Clamps | None = None) -> PosePrediction:
        """Likelihood and refinement of an analysed image, with optional clamped keypoints (cheap)."""
        to_heat = self.image_to_heat(analysis.window)
        clamps = {}
        for key, xy in (clamped or {}).items():
            index = key if isinstance(key, int) else self.skeleton.index(key)
            if not 0 <= index < self.skeleton.num_keypoints or not np.isfinite(xy).all():
                raise ConfigError(f"clamped keypoint {key!r} at {xy} is not a keypoint with a finite position")
            clamps[index] = tuple(apply_affine(to_heat, np.asarray(xy, dtype=float)))
        landmarks = None if analysis.landmarks is None else apply_affine(to_heat, analysis.landmarks)[None]
        poses = analyse_heatmaps(analysis.output, self.skeleton, self.calibration, [clamps] if clamps else None,
                                 self.decoder, self.sigma, landmarks)
        prediction = self._to_prediction(poses, 0, analysis, np.linalg.inv(to_heat))
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

    def _forward(self, arrays: list[np.ndarray], windows: list[CropWindow], flip: bool) -> NetworkArrays:
        """Crops through the network in batches; with ``flip`` the mirrored crops run in the same batch and their
        heatmaps are averaged in (:func:`vl4pose.postprocess.flip_average`); bone parameters of the plain crops."""
        parts = []
        for start in range(0, len(arrays), self.config.batch_size):
            stop = start + self.config.batch_size
            crops = crop_batch(arrays[start:stop], windows[start:stop], self.input_size)
            n = crops.shape[0]
            batch = np.concatenate([crops, crops[..., ::-1]]) if flip else crops
            out = self.network(np.ascontiguousarray(batch), n)
            heatmaps = flip_average(out.heatmaps[:n], out.heatmaps[n:], self.flip_permutation) if flip else out.heatmaps
            parts.append(NetworkArrays(np.asarray(heatmaps, dtype=np.float32), out.mean[:n], out.logvar[:n]))
        return NetworkArrays(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("heatmaps", "mean", "logvar")))

    def _final_pass(self, arrays: list[np.ndarray], windows: list[CropWindow]) -> NetworkArrays:
        """The final crops at every ``config.scales`` (:class:`PredictorConfig`), heatmaps averaged in the frame of
        ``windows``; bone parameters of ``windows``."""
        output = self._forward(arrays, windows, flip=self.config.flip)
        if len(self.config.scales) > 1:
            output.single = output.heatmaps.copy()
        for scale in self.config.scales[1:]:
            scaled = [CropWindow(w.centre, w.side * scale, w.rotation, w.flip) for w in windows]
            heatmaps = self._forward(arrays, scaled, flip=self.config.flip).heatmaps
            for j, (window, other) in enumerate(zip(windows, scaled)):  # output heatmap pixel -> scaled heatmap pixel
                matrix = self.image_to_heat(other) @ np.linalg.inv(self.image_to_heat(window))
                output.heatmaps[j] += rescale_heatmaps(heatmaps[j], matrix)
        output.heatmaps /= np.float32(len(self.config.scales))
        return output

    def _face_as_hinted(self, output: NetworkArrays, windows: list[CropWindow], hints: list[PersonHint | None]
                        ) -> None:
        """Exchange the left/right heatmap channels (in place) of each image whose whole-body mirror of the pose
        lies much nearer BlazePose's landmarks (:func:`vl4pose.blazepose.mirror_is_closer`)."""
        poses = analyse_heatmaps(output, self.skeleton, self.calibration, decoder=self.decoder, sigma=self.sigma)
        for j, (window, hint) in enumerate(zip(windows, hints)):
            pose = apply_affine(np.linalg.inv(self.image_to_heat(window)), poses.refined[j].astype(np.float64))
            if hint is not None and mirror_is_closer(pose, hint.keypoints, self.flip_permutation):
                for maps in [m for m in (output.heatmaps, output.single) if m is not None]:
                    maps[j] = maps[j][self.flip_permutation]

    def _find_people(self, arrays: dict[int, np.ndarray], hints: Mapping[int, PersonHint] | None = None
                     ) -> dict[int, CropWindow]:
        """The person-finding passes (unflipped, each batched over the images still moving; see
        :class:`PredictorConfig`), from the whole image or, where ``hints`` has one, from ``find_padding`` x
        BlazePose's box: image index -> the final crop's window."""
        hints = hints or {}
        windows = {i: person_window(hints[i].box, _size(a), self.config.find_padding) if i in hints
                   else image_window(_size(a)) for i, a in arrays.items()}
        boxes: dict[int, np.ndarray] = {}
        active = list(arrays)
        for _ in range(self.config.box_passes):
            if not active:
                break
            coarse = self._forward([arrays[i] for i in active], [windows[i] for i in active], flip=False)
            poses = analyse_heatmaps(coarse, self.skeleton, self.calibration, decoder=self.decoder, sigma=self.sigma)
            moving = []
            for j, i in enumerate(active):
                to_image = np.linalg.inv(self.image_to_heat(windows[i]))
                points = apply_affine(to_image, poses.refined[j].astype(np.float64))
                placed = poses.peak[j] >= self.calibration.min_peak
                if placed.sum() < 2:  # nothing found: the last window stands (another pass would see the same)
                    continue
                boxes[i] = box_from_keypoints(points, placed)
                old, windows[i] = windows[i], person_window(boxes[i], _size(arrays[i]), self.config.find_padding)
                shift = np.hypot(*np.subtract(windows[i].centre, old.centre)) / windows[i].side
                if max(shift, abs(np.log(windows[i].side / old.side))) > self.config.box_tolerance:
                    moving.append(i)
            active = moving
        return {i: person_window(boxes[i], _size(arrays[i]), self.config.box_padding) if i in boxes else windows[i]
                for i in arrays}

    def _to_prediction(self, poses: HeatmapPoses, j: int, analysis: Analysis, to_image: np.ndarray) -> PosePrediction:
        peak = poses.peak[j].astype(np.float64)
        ll = float(poses.log_likelihood[j])
        return PosePrediction(
            image_size=analysis.image_size,
            box=analysis.window.box(),
            raw=apply_affine(to_image, poses.raw[j].astype(np.float64)),
            refined=apply_affine(to_image, poses.refined[j].astype(np.float64)),
            peak=peak,
            confidence=poses.confidence[j].astype(np.float64),
            placed=peak >= self.calibration.min_peak,
            moved=np.asarray(poses.moved[j]),
            log_likelihood=ll,
            score=float(self.calibration.score(np.array([ll]))[0]),
            keypoint_names=self.skeleton.keypoints,
        )


def _size(array: np.ndarray) -> tuple[int, int]:
    """(width, height) of an (H, W, 3) image."""
    return array.shape[1], array.shape[0]
