"""Loaders on the real files in ../shared/data, and clear errors on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io

from vl4pose.data import load_samples
from vl4pose.data.labelstudio import keypoints_to_results, results_to_keypoints
from vl4pose.data.sample import load_image
from vl4pose.errors import DataError, ImageError
from vl4pose.skeletons import COCO17, LSP14, SKELETONS


def test_skeletons_are_trees_with_the_documented_edge_counts():
    assert {name: s.num_edges for name, s in SKELETONS.items()} == {"lsp14": 13, "mpii16": 15, "coco17": 16, "hand21": 20}
    for skeleton in SKELETONS.values():
        assert sum(p == -1 for p in skeleton.parents) == 1
        perm = skeleton.flip_permutation()
        assert sorted(perm) == list(range(skeleton.num_keypoints))
    assert LSP14.keypoints[LSP14.root] == "head_top"
    assert LSP14.index("Left Knee") == 4


def test_lspet_loader_reads_the_fixed_split(lspet_dir):
    pool = load_samples("lspet", lspet_dir, "pool")
    test = load_samples("lspet", lspet_dir, "test")
    assert (len(pool), len(test)) == (8500, 1000)
    assert not {s.sample_id for s in pool} & {s.sample_id for s in test}
    first = load_samples("lspet", lspet_dir, "all")[0]
    assert first.sample_id == "im00001" and first.keypoints.shape == (14, 2)
    assert first.visibility[0] == 0 and np.isnan(first.keypoints[0]).all()  # flag 0 = missing
    np.testing.assert_allclose(first.keypoints[1], [26.03094352, 86.41022512])
    assert first.load_image().shape[2] == 3


def test_lsp_layout_has_inverted_flags(tmp_path, lspet_dir):
    joints = np.zeros((3, 14, 2))
    joints[0], joints[1] = 10.0, 20.0
    joints[2, 3, 0] = 1.0  # occluded, still has a position
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": joints})
    (tmp_path / "images").mkdir()
    samples = load_samples("lsp", tmp_path)
    assert [s.sample_id for s in samples] == ["im0001", "im0002"]
    assert samples[0].visibility[3] == 1 and samples[0].visibility[0] == 2
    assert samples[0].labelled.all()


def test_mat_of_unexpected_shape_names_the_file(tmp_path):
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": np.zeros((5, 3, 2))})
    with pytest.raises(DataError, match=r"joints\.mat.*shape \(5, 3, 2\)"):
        load_samples("lsp", tmp_path)


def test_missing_split_and_missing_folder(tmp_path, lspet_dir):
    with pytest.raises(DataError, match="split 'nope'"):
        load_samples("lspet", lspet_dir, "nope")
    with pytest.raises(DataError, match="does not exist"):
        load_samples("lspet", tmp_path / "absent")


def test_coco_loader_one_sample_per_person_crowd_skipped(coco_dir):
    train = load_samples("coco", coco_dir, "train")
    val = load_samples("coco", coco_dir, "val")
    coco = json.loads((coco_dir / "annotations" / "person_keypoints_train2017.json").read_text())
    expected = sum(1 for a in coco["annotations"] if not a.get("iscrowd") and a.get("num_keypoints", 0) > 0)
    assert len(train) == expected and len(train) + len(val) == 154
    assert all(s.keypoints.shape == (COCO17.num_keypoints, 2) and s.box is not None for s in train)
    assert len({s.image for s in train}) < len(train)  # several persons per image
    assert train[0].load_image().ndim == 3


def test_coco_without_keypoints_names_the_file(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 1, 1]}],
                                "categories": [{"id": 1, "name": "person"}]}))
    with pytest.raises(DataError, match="instances.json"):
        load_samples("coco", path)


def test_labelstudio_export_round_trip(tmp_path, lspet_dir):
    samples = load_samples("lspet", lspet_dir, "test")[:3]
    tasks = []
    for i, s in enumerate(samples):
        h, w = s.load_image().shape[:2]
        results = keypoints_to_results(s.keypoints, (w, h), list(LSP14.keypoints), s.labelled)
        tasks.append({"id": i + 1, "data": {"image": f"/data/upload/1/abcd1234-{s.sample_id}.jpg"},
                      "annotations": [{"id": i, "result": results, "was_cancelled": False}]})
    tasks.append({"id": 99, "data": {"image": "x.jpg"}, "annotations": []})  # unlabelled: skipped
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    loaded = load_samples("labelstudio", export, images=lspet_dir / "images")
    assert len(loaded) == 3
    for original, back in zip(samples, loaded):
        np.testing.assert_allclose(back.keypoints[original.labelled], original.keypoints[original.labelled], atol=1e-9)
        assert (back.labelled == original.labelled).all()


def test_labelstudio_unknown_label_is_a_clear_error():
    results = [{"type": "keypointlabels", "original_width": 100, "original_height": 50,
                "value": {"x": 10, "y": 10, "keypointlabels": ["Tail"]}}]
    with pytest.raises(DataError, match="Tail"):
        results_to_keypoints(results, LSP14)


def test_bad_images_raise_image_error_naming_the_file(tmp_path):
    with pytest.raises(ImageError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(ImageError, match="corrupt.jpg"):
        load_image(corrupt)
    with pytest.raises(ImageError, match="cannot be decoded"):
        load_image(b"not an image")


def test_huge_image_is_refused(tmp_path):
    from PIL import Image

    path = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000)).save(path)
    with pytest.raises(ImageError, match="over the limit"):
        load_image(path, max_pixels=1_000_000)
