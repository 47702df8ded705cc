"""One person's prediction in image pixels: what the Predictor, the ONNX scorer and the ML backend hand on.
Shapes: K keypoints."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PosePrediction:
    """One person's prediction, in image pixels.

    Attributes:
        image_size: (width, height).
        box: (4,) the square crop window the network saw, (x0, y0, x1, y1) image pixels.
        raw: (K, 2) arg-max pose of the network; refined: (K, 2) tree-DP pose.
        peak: (K,) each keypoint's heatmap maximum (the scale-1 crop's after a multi-scale test); confidence: (K,)
            refined keypoint confidence in [0, 1].
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
