"""Everything after the network, in NumPy (no torch at import): the one code path of the torch
:class:`~vl4pose.predictor.Predictor`, :func:`vl4pose.inference.analyse` and the ONNX scorer.

Heatmaps -> candidates (local maxima, sub-pixel) -> the exact expected log-likelihood (VL4Pose Eq. 3) ->
tree-DP refinement (Eq. 6, :mod:`vl4pose.refine`) -> the calibrated score; plus the flip-test averaging.
Shapes: N images, K keypoints, M candidates per keypoint, E edges, H heatmap side. Positions are in
heatmap pixels; bone lengths in units of the heatmap side (1.0 = the whole crop).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vl4pose.skeletons import Skeleton

_LOG_2PI = math.log(2 * math.pi)


@dataclass
class Calibration:
    """How raw likelihoods become user-facing numbers (stored as ``calibration.json`` in a checkpoint).

    Attributes:
        temperature: softmax temperature over candidate peak values.
        max_candidates: candidates per keypoint (K in the paper's notation).
        reference: sorted expected log-likelihoods of validation images; the calibrated score of an
            image is the (interpolated) fraction of these that are lower.
        min_peak: heatmap value below which a keypoint counts as not placed (fitted on validation: at most
            0.1, and low enough that 95 % of labelled keypoints are placed).
    """

    temperature: float = 0.1
    max_candidates: int = 5
    reference: list[float] = field(default_factory=list)
    min_peak: float = 0.1

    def score(self, log_likelihood: np.ndarray) -> np.ndarray:
        """Order-preserving map of (N,) log-likelihoods to (0, 1): the interpolated empirical CDF of the
        validation reference, with exponential tails so that the map stays strictly increasing."""
        x = np.asarray(log_likelihood, dtype=np.float64)
        ref = np.asarray(self.reference, dtype=np.float64)
        if ref.size < 2:
            return 1.0 / (1.0 + np.exp(-x / 10.0))
        n = ref.size
        spread = max(float(ref.std()), 1e-6)
        ranks = (np.arange(n) + 0.5) / n
        inside = np.interp(x, ref, ranks)
        below = ranks[0] * np.exp(np.minimum(x - ref[0], 0.0) / spread)
        above = 1.0 - (1.0 - ranks[-1]) * np.exp(-np.maximum(x - ref[-1], 0.0) / spread)
        return np.where(x < ref[0], below, np.where(x > ref[-1], above, inside))


# -- sub-pixel decoders (the one implementation; vl4pose.codec.decode uses it too) ----------------------
def _gather(flat: np.ndarray, xs: np.ndarray, ys: np.ndarray, w: int, h: int, dx: int, dy: int) -> np.ndarray:
    """Values of (N, K, H*W) maps at (xs + dx, ys + dy) clamped into the map; (N, K, M)."""
    index = np.clip(ys + dy, 0, h - 1) * w + np.clip(xs + dx, 0, w - 1)
    return np.take_along_axis(flat, index, axis=2)


def subpixel_parabola(heatmaps: np.ndarray, xs: np.ndarray, ys: np.ndarray, sigma: float = 1.0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Integer peaks (N, K, M) -> float x, y (N, K, M): a log-parabola fit on each axis (exact for a Gaussian),
    each moved by at most half a pixel; border peaks keep their integer coordinate. ``sigma`` is unused."""
    n, k, h, w = heatmaps.shape
    flat = np.log(np.maximum(heatmaps.reshape(n, k, h * w).astype(np.float64), 1e-10))
    centre = _gather(flat, xs, ys, w, h, 0, 0)
    offsets = []
    for (lo, hi), pos, limit in (((_gather(flat, xs, ys, w, h, -1, 0), _gather(flat, xs, ys, w, h, 1, 0)), xs, w),
                                 ((_gather(flat, xs, ys, w, h, 0, -1), _gather(flat, xs, ys, w, h, 0, 1)), ys, h)):
        curvature = lo - 2 * centre + hi
        step = 0.5 * (lo - hi) / np.where(curvature < -1e-6, curvature, -1e6)
        interior = (pos > 0) & (pos < limit - 1)
        offsets.append(np.where(interior, np.clip(step, -0.5, 0.5), 0.0))
    return xs + offsets[0], ys + offsets[1]


def _blur(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (B, H, W) maps with replicate padding (radius ceil(2 sigma))."""
    radius = max(1, int(math.ceil(2 * sigma)))
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-taps**2 / (2 * sigma**2))
    kernel /= kernel.sum()
    h, w = maps.shape[1:]
    padded = np.pad(maps, ((0, 0), (0, 0), (radius, radius)), mode="edge")
    rows = sum(kernel[i] * padded[:, :, i:i + w] for i in range(kernel.size))
    padded = np.pad(rows, ((0, 0), (radius, radius), (0, 0)), mode="edge")
    return sum(kernel[i] * padded[:, i:i + h, :] for i in range(kernel.size))


def subpixel_dark(heatmaps: np.ndarray, xs: np.ndarray, ys: np.ndarray, sigma: float = 1.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """DARK (Zhang et al. 2020): blur with the target's Gaussian (``sigma`` heatmap pixels), then one Newton
    step on the log heatmap with the full 2x2 Hessian at each integer peak; offsets clamped to one pixel;
    border peaks and non-concave spots keep the integer position. Shapes as :func:`subpixel_parabola`."""
    n, k, h, w = heatmaps.shape
    maps = heatmaps.reshape(n * k, h, w).astype(np.float64)
    blurred = _blur(maps, sigma)
    peak = maps.max(axis=(1, 2), keepdims=True)
    blurred = blurred * peak / np.maximum(blurred.max(axis=(1, 2), keepdims=True), 1e-10)
    flat = np.log(np.maximum(blurred.reshape(n, k, h * w), 1e-10))

    def value(dx: int, dy: int) -> np.ndarray:
        return _gather(flat, xs, ys, w, h, dx, dy)

    centre = value(0, 0)
    gx, gy = 0.5 * (value(1, 0) - value(-1, 0)), 0.5 * (value(0, 1) - value(0, -1))
    hxx = value(1, 0) - 2 * centre + value(-1, 0)
    hyy = value(0, 1) - 2 * centre + value(0, -1)
    hxy = 0.25 * (value(1, 1) - value(1, -1) - value(-1, 1) + value(-1, -1))
    det = hxx * hyy - hxy**2
    concave = (hxx < -1e-6) & (det > 1e-12)
    safe = np.where(concave, det, 1.0)
    ox, oy = -(hyy * gx - hxy * gy) / safe, -(-hxy * gx + hxx * gy) / safe
    interior = (xs > 0) & (xs < w - 1) & (ys > 0) & (ys < h - 1) & concave
    return (xs + np.where(interior, np.clip(ox, -1.0, 1.0), 0.0), ys + np.where(interior, np.clip(oy, -1.0, 1.0), 0.0))


Decoder = Callable[[np.ndarray, np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]]
DECODERS: dict[str, Decoder] = {"parabola": subpixel_parabola, "dark": subpixel_dark}
DEFAULT_DECODER = "parabola"
"""The sub-pixel decoder of every candidate (Predictor, analyse, ONNX scorer): switch here, in one place.
``dark`` needs the model's target sigma: the Predictor and the scorer pass it; :func:`vl4pose.inference.analyse`
callers (calibration, strategies) must then pass ``sigma=model_config.sigma`` too (its default is 1.0)."""


# -- candidates --------------------------------------------------------------------------------------
@dataclass
class Candidates:
    """Per keypoint, up to M local maxima of its heatmap, strongest first.

    Attributes:
        xy: (N, K, M, 2) float64 sub-pixel positions in heatmap pixels (0 for invalid slots).
        value: (N, K, M) float64 heatmap values (-inf for invalid slots).
        valid: (N, K, M) bool; slot 0 (the global maximum) is always valid.
    """

    xy: np.ndarray
    value: np.ndarray
    valid: np.ndarray

    def log_probs(self, temperature: float) -> np.ndarray:
        """(N, K, M) log p̂ = log softmax(value / temperature) over valid candidates (-inf elsewhere)."""
        scaled = self.value / temperature
        top = scaled.max(axis=-1, keepdims=True)
        return scaled - (top + np.log(np.exp(scaled - top).sum(axis=-1, keepdims=True)))

    def copy(self) -> "Candidates":
        return Candidates(self.xy.copy(), self.value.copy(), self.valid.copy())

    def clamp(self, keypoint: int, image: int, xy: tuple[float, float]) -> None:
        """Make a given location the only candidate of one keypoint of one image (log p̂ = 0)."""
        self.xy[image, keypoint, 0] = xy
        self.xy[image, keypoint, 1:] = 0.0
        self.value[image, keypoint, 0] = 0.0
        self.value[image, keypoint, 1:] = -math.inf
        self.valid[image, keypoint, 0] = True
        self.valid[image, keypoint, 1:] = False


def find_candidates(heatmaps: np.ndarray, max_candidates: int, decoder: str = DEFAULT_DECODER,
                    sigma: float = 1.0) -> Candidates:
    """Local maxima (3x3 non-maximum suppression, border peaks kept), top ``max_candidates`` by value,
    refined to sub-pixel positions by ``decoder`` (a key of :data:`DECODERS`; ``sigma`` for ``dark``).

    Args:
        heatmaps: (N, K, H, W).
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    n, k, h, w = heatmaps.shape
    m = min(max_candidates, h * w)
    padded = np.pad(heatmaps, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)  # border peaks count
    pooled = padded[:, :, 1:-1, 1:-1].copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(pooled, padded[:, :, dy:dy + h, dx:dx + w], out=pooled)
    peaks = np.where(heatmaps >= pooled, heatmaps, -np.inf).reshape(n, k, h * w)
    # top m by value, equal values to the lower index (as a stable sort of all H*W would choose, e.g. on a plateau
    # of zeros), found by a partial selection of the m-th value instead of a full sort (3x faster)
    index = _top_indices(peaks, m)
    value = np.take_along_axis(peaks, index, axis=2)
    order = np.lexsort((index, -value))
    index, value = np.take_along_axis(index, order, axis=2), np.take_along_axis(value, order, axis=2).astype(np.float64)
    valid = np.isfinite(value)
    valid[..., 0] = True  # the global maximum is always a local maximum
    xs, ys = index % w, index // w
    fx, fy = DECODERS[decoder](heatmaps, xs, ys, sigma)
    xy = np.stack([fx, fy], axis=-1) * valid[..., None]
    return Candidates(xy, np.where(valid, value, -np.inf), valid)


def _top_indices(values: np.ndarray, m: int) -> np.ndarray:
    """(N, K, P) values -> (N, K, m) indices of the m largest (in no particular order); among values equal to the
    m-th largest, the lowest indices (deterministic whatever the other values, as a stable sort would choose)."""
    n, k, p = values.shape
    if m >= p:
        return np.broadcast_to(np.arange(p), (n, k, p))
    index = np.argpartition(-values, m - 1, axis=2)[..., :m]
    kth = np.take_along_axis(values, index, axis=2).min(axis=2, keepdims=True)  # (N, K, 1) the m-th largest
    tied = (values >= kth).sum(axis=2) > m  # (N, K) rows where equal values compete for the last slots
    if tied.any():
        rows, row_kth = values[tied], kth[tied]  # (R, P), (R, 1)
        above, equal = rows > row_kth, rows == row_kth
        chosen = above | (equal & (np.cumsum(equal, axis=1) <= m - above.sum(axis=1, keepdims=True)))
        index = index.copy()
        index[tied] = np.nonzero(chosen)[1].reshape(-1, m)
    return index


# -- the skeleton likelihood ---------------------------------------------------------------------------
def edge_log_likelihood(child_xy: np.ndarray, parent_xy: np.ndarray, mean: np.ndarray, logvar: np.ndarray,
                        size: float) -> np.ndarray:
    """log q(child = a | parent = b) = log N(|a - b| / size; mean, exp(logvar)) for every candidate pair.

    Args:
        child_xy: (..., Mc, 2) and parent_xy: (..., Mp, 2) heatmap pixels (same leading dims).
        mean, logvar: (...) bone-length Gaussian in units of the heatmap side; size: heatmap side H.

    Returns:
        (..., Mc, Mp) log-densities.
    """
    length = np.linalg.norm(child_xy[..., :, None, :] - parent_xy[..., None, :, :], axis=-1) / size
    mean, logvar = np.asarray(mean)[..., None, None], np.asarray(logvar)[..., None, None]
    return -0.5 * (_LOG_2PI + logvar + (length - mean) ** 2 * np.exp(-logvar))


def edge_index(skeleton: Skeleton) -> tuple[list[int], list[int]]:
    """Parent and child keypoint index of every edge, in edge order."""
    return [p for p, _ in skeleton.edges], [c for _, c in skeleton.edges]


def edge_tables(xy: np.ndarray, mean: np.ndarray, logvar: np.ndarray, skeleton: Skeleton, size: float) -> np.ndarray:
    """(N, E, M, M) float64 log q(child candidate a | parent candidate b) for every edge at once.

    Args:
        xy: (N, K, M, 2) candidate positions; mean, logvar: (N, E).
    """
    parents, children = edge_index(skeleton)
    xy = np.asarray(xy, dtype=np.float64)
    return edge_log_likelihood(xy[:, children], xy[:, parents], np.asarray(mean, dtype=np.float64),
                               np.asarray(logvar, dtype=np.float64), size)


def expected_log_likelihood(xy: np.ndarray, log_probs: np.ndarray, mean: np.ndarray, logvar: np.ndarray,
                            skeleton: Skeleton, size: float) -> tuple[np.ndarray, np.ndarray]:
    """E[log q] = sum over edges of sum_a sum_b p̂(a) p̂(b) log q(a | b): exact, O(E M²).

    Args:
        xy: (N, K, M, 2) candidates; log_probs: (N, K, M) log p̂; mean, logvar: (N, E) bone-length parameters.

    Returns:
        total (N,) and per-edge (N, E) expected log-likelihoods (float64).
    """
    parents, children = edge_index(skeleton)
    probs = np.exp(np.asarray(log_probs, dtype=np.float64))
    logq = edge_tables(xy, mean, logvar, skeleton, size)  # (N, E, Mc, Mp)
    weights = probs[:, children, :, None] * probs[:, parents, None, :]
    # 0 * finite everywhere (invalid slots sit at 0 with weight 0); no nan from -inf
    edges = (weights * logq).sum(axis=(2, 3))
    return edges.sum(axis=1), edges


def flip_average(heatmaps: np.ndarray, mirrored: np.ndarray, permutation: Sequence[int]) -> np.ndarray:
    """Flip test: (N, K, H, W) heatmaps of the crops and of their mirror images -> their average, the mirrored
    ones mirrored back with left and right swapped. Mirroring a crop about its centre maps heatmap pixel j to
    W-1-j exactly (pixel centres at ``j*stride + (stride-1)/2``)."""
    return 0.5 * (heatmaps + mirrored[:, list(permutation), :, ::-1])


def rescale_heatmaps(heatmaps: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(K, H, W) heatmaps sampled bilinearly (zeros outside) at ``matrix`` of each output pixel: an axis-aligned
    (3, 3) affine from output heatmap pixels to input heatmap pixels (scale and shift; the multi-scale test)."""
    if abs(matrix[0, 1]) > 1e-9 or abs(matrix[1, 0]) > 1e-9:
        raise ValueError("rescale_heatmaps takes an axis-aligned affine (scale and shift, no rotation)")
    _, height, width = heatmaps.shape

    def taps(coords: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:  # (2, n) indices and weights
        low = np.floor(coords)
        frac = coords - low
        index = np.stack([low, low + 1]).astype(np.int64)
        weight = np.stack([1.0 - frac, frac]) * ((index >= 0) & (index < n))
        return np.clip(index, 0, n - 1), weight.astype(heatmaps.dtype)

    rows, row_w = taps(matrix[1, 1] * np.arange(height) + matrix[1, 2], height)
    cols, col_w = taps(matrix[0, 0] * np.arange(width) + matrix[0, 2], width)
    by_row = row_w[0][:, None] * heatmaps[:, rows[0]] + row_w[1][:, None] * heatmaps[:, rows[1]]
    return col_w[0] * by_row[:, :, cols[0]] + col_w[1] * by_row[:, :, cols[1]]
