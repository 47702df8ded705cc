"""Training batches: decode each image once into a cached canvas, then augment whole batches at once.

Every sample keeps one canvas per view: ``person`` (its person window enlarged by ``margin``) and,
when whole-image training is on, ``image`` (the whole image). A batch draws an augmented window per
sample and warps the canvases through ``window_matrix @ inverse(canvas_matrix)`` with one
``grid_sample`` call per view.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from vl4pose.codec import encode
from vl4pose.data.sample import Sample
from vl4pose.data.transforms import (AugmentConfig, CropWindow, apply_affine, augment_window, heatmap_matrix,
                                     image_window, sample_window, warp, warp_tensor)
from vl4pose.errors import ImageError
from vl4pose.skeletons import Skeleton

log = logging.getLogger(__name__)


@dataclass
class _View:
    canvases: torch.Tensor  # (N, 3, C, C) uint8
    matrices: np.ndarray  # (N, 3, 3) image -> canvas
    windows: list[CropWindow]


class CropCache:
    """Decoded, person-centred canvases of a list of samples.

    Args:
        samples: the samples; undecodable images are dropped with a warning (see ``skipped``).
        input_size: network input side S.
        margin: canvas side = margin x window side, at ``margin * S`` pixels.
        whole_image: also cache the whole-image view.
        workers: decoding threads.
        device: where the canvases live and batches are warped and encoded (a GPU keeps the whole data path
            on the device: only the small affine matrices are made on the CPU).
    """

    def __init__(self, samples: list[Sample], input_size: int, margin: float = 1.5, whole_image: bool = False,
                 workers: int = 2, device: torch.device | str = "cpu") -> None:
        self.input_size = input_size
        self.device = torch.device(device)
        self.canvas_size = int(round(input_size * margin))
        self.margin = margin
        with ThreadPoolExecutor(max_workers=workers) as pool:
            decoded = list(pool.map(lambda s: self._decode(s, whole_image), samples))
        self.skipped = [s.sample_id for s, d in zip(samples, decoded) if d is None]
        if self.skipped:
            log.warning("skipped %d samples whose image could not be read: %s", len(self.skipped), self.skipped[:10])
        kept = [(s, d) for s, d in zip(samples, decoded) if d is not None]
        self.samples = [s for s, _ in kept]
        self.keypoints = np.stack([s.keypoints for s in self.samples]) if kept else np.zeros((0, 0, 2))
        self.labelled = np.stack([s.labelled for s in self.samples]) if kept else np.zeros((0, 0), bool)
        self.views: dict[str, _View] = {}
        for name in ("person", "image") if whole_image else ("person",):
            parts = [d[name] for _, d in kept]
            self.views[name] = _View(
                torch.stack([p[0] for p in parts]).to(self.device) if parts else torch.zeros(0, 3, self.canvas_size, self.canvas_size,
                                                                             dtype=torch.uint8),
                np.stack([p[1] for p in parts]) if parts else np.zeros((0, 3, 3)),
                [p[2] for p in parts],
            )

    def __len__(self) -> int:
        return len(self.samples)

    def _decode(self, sample: Sample, whole_image: bool) -> dict | None:
        try:
            image = sample.load_image()
        except ImageError as exc:
            log.warning("%s", exc)
            return None
        size = (image.shape[1], image.shape[0])
        out = {}
        windows = {"person": sample_window(sample.keypoints, sample.labelled, sample.box, size)}
        if whole_image:
            windows["image"] = image_window(size)
        for name, window in windows.items():
            canvas_window = CropWindow(window.centre, window.side * self.margin)
            matrix = canvas_window.matrix(self.canvas_size)
            canvas = (warp(image, matrix, self.canvas_size) * 255.0).round().to(torch.uint8)
            out[name] = (canvas, matrix, window)
        return out

    def batch(self, indices: np.ndarray, skeleton: Skeleton, sigma: float, augment: AugmentConfig | None,
              rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """An input batch.

        Returns (``matrix`` and ``index`` on the CPU, the rest on the cache's device):
            ``image`` (B, 3, S, S) float in [0, 1]; ``heatmaps`` (B, K, H, H); ``weights`` (B, K);
            ``keypoints`` (B, K, 2) heatmap pixels (NaN where missing); ``labelled`` (B, K) float;
            ``matrix`` (B, 3, 3) image -> input pixels; ``index`` (B,) sample indices.
        """
        size = self.input_size
        heat_size = size // 4
        to_heat = heatmap_matrix(size, heat_size)
        perm = skeleton.flip_permutation()
        views = [
            "image" if augment and "image" in self.views and rng.random() < augment.whole_image_prob else "person"
            for _ in indices
        ]
        images = torch.zeros(len(indices), 3, size, size, device=self.device)
        matrices = np.zeros((len(indices), 3, 3))
        keypoints = np.zeros((len(indices), skeleton.num_keypoints, 2))
        labelled = np.zeros((len(indices), skeleton.num_keypoints))
        for name in set(views):
            view = self.views[name]
            rows = [i for i, v in enumerate(views) if v == name]
            crop_from_canvas = []
            for row in rows:
                index = indices[row]
                window = view.windows[index]
                if augment is not None:
                    window = augment_window(window, augment, rng)
                matrices[row] = window.matrix(size)
                crop_from_canvas.append(matrices[row] @ np.linalg.inv(view.matrices[index]))
                points = apply_affine(matrices[row], self.keypoints[index])
                mask = self.labelled[index].astype(float)
                if window.flip:
                    points, mask = points[perm], mask[perm]
                keypoints[row] = apply_affine(to_heat, points)
                labelled[row] = mask
            canvases = view.canvases[torch.as_tensor(indices[rows], device=self.device)].float().div_(255.0)
            images[rows] = warp_tensor(canvases, np.stack(crop_from_canvas), size)
        kp = torch.from_numpy(keypoints).float().to(self.device)
        lab = torch.from_numpy(labelled).float().to(self.device)
        heatmaps, weights = encode(kp, lab, heat_size, sigma)
        return {"image": images, "heatmaps": heatmaps, "weights": weights, "keypoints": kp, "labelled": lab,
                "matrix": torch.from_numpy(matrices), "index": torch.from_numpy(np.asarray(indices))}
