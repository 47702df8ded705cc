"""Round trips: heatmap encode/decode, crop -> inverse transform, image warping."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vl4pose.codec import decode, encode
from vl4pose.data.transforms import CropWindow, apply_affine, heatmap_matrix, warp


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([16, 32, 64]), st.sampled_from([1.0, 2.0]))
def test_heatmap_round_trip(seed, size, sigma):
    rng = np.random.default_rng(seed)
    points = torch.from_numpy(rng.uniform(1.0, size - 2.0, size=(3, 5, 2))).float()
    heatmaps, weights = encode(points, torch.ones(3, 5), size, sigma)
    decoded, values = decode(heatmaps)
    assert torch.allclose(decoded, points, atol=2e-3)
    assert torch.all(values > 0.6) and torch.all(weights == 1)


def test_encode_drops_missing_and_far_outside():
    points = torch.tensor([[[float("nan"), 3.0], [100.0, 2.0], [4.0, 4.0]]])
    heatmaps, weights = encode(points, torch.tensor([[1.0, 1.0, 0.0]]), 16, 1.0)
    assert weights.tolist() == [[0.0, 0.0, 0.0]]
    assert float(heatmaps.abs().sum()) == 0.0


@settings(max_examples=100, deadline=None)
@given(st.floats(0, 500), st.floats(0, 500), st.floats(10, 800), st.floats(-180, 180), st.booleans(),
       st.sampled_from([64, 128, 256]))
def test_crop_inverse_round_trip(cx, cy, side, rotation, flip, size):
    window = CropWindow((cx, cy), side, rotation, flip)
    matrix = heatmap_matrix(size, size // 4) @ window.matrix(size)
    points = np.random.default_rng(0).uniform(-50, 550, size=(14, 2))
    back = apply_affine(np.linalg.inv(matrix), apply_affine(matrix, points))
    np.testing.assert_allclose(back, points, atol=1e-6)


def test_window_centre_maps_to_crop_centre_and_flip_mirrors():
    window = CropWindow((100.0, 50.0), 80.0, 0.0, True)
    m = window.matrix(64)
    np.testing.assert_allclose(apply_affine(m, np.array([[100.0, 50.0]])), [[31.5, 31.5]])
    left, right = apply_affine(m, np.array([[90.0, 50.0], [110.0, 50.0]]))
    assert left[0] > right[0]  # mirrored


@settings(max_examples=25, deadline=None)
@given(st.integers(5, 90), st.integers(5, 70), st.floats(-40, 40), st.sampled_from([0.5, 1.0, 2.0, 6.0]))
def test_warp_moves_a_bright_spot_where_the_matrix_says(x, y, rotation, zoom):
    image = np.zeros((80, 100, 3), dtype=np.uint8)
    image[y - 1:y + 2, x - 1:x + 2] = 255  # a 3x3 spot centred on (x, y)
    size = 64
    window = CropWindow((50.0, 40.0), 100.0 / zoom * 0.9, rotation)
    m = window.matrix(size)
    crop = warp(image, m, size).sum(dim=0).numpy()
    expected = apply_affine(m, np.array([[x, y]], dtype=float))[0]
    reach = 1.5 * size / window.side + 2  # the magnified spot must lie whole inside the crop
    if not (reach <= expected[0] <= size - 1 - reach and reach <= expected[1] <= size - 1 - reach) or crop.max() <= 0:
        return
    ys, xs = np.nonzero(crop > 0.5 * crop.max())
    weights = crop[ys, xs]
    centroid = np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)])
    assert np.linalg.norm(centroid - expected) < 0.75
