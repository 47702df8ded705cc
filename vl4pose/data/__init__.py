"""Datasets: one :class:`Sample` type, loaders by name, crops and augmentation."""

from __future__ import annotations

from pathlib import Path

from vl4pose.data.coco import load_coco
from vl4pose.data.labelstudio import load_labelstudio
from vl4pose.data.lsp import load_lsp
from vl4pose.data.sample import Sample, load_image
from vl4pose.errors import ConfigError, DataError
from vl4pose.skeletons import Skeleton, get_skeleton

DATASETS = ("lspet", "lsp", "coco", "labelstudio")
_DEFAULT_SKELETON = {"lspet": "lsp14", "lsp": "lsp14", "coco": "coco17", "labelstudio": "lsp14"}

__all__ = ["DATASETS", "Sample", "dataset_skeleton", "load_image", "load_samples"]


def dataset_skeleton(dataset: str, skeleton: str | None = None) -> Skeleton:
    """The skeleton of a dataset kind (``labelstudio`` exports take any, default ``lsp14``)."""
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {list(DATASETS)}")
    return get_skeleton(skeleton or _DEFAULT_SKELETON[dataset])


def load_samples(
    dataset: str,
    data: str | Path,
    split: str | None = None,
    split_file: str | Path | None = None,
    skeleton: str | None = None,
    images: str | Path | None = None,
) -> list[Sample]:
    """Load samples by dataset kind.

    Args:
        dataset: ``lspet`` / ``lsp`` (``joints.mat`` folders), ``coco`` (keypoints JSON or root),
            ``labelstudio`` (a JSON export).
        data: the folder or file.
        split: split name (LSP: from ``split.json``; COCO: ``train`` / ``val``); None for everything.
        split_file: explicit split file for LSP folders.
        skeleton: skeleton name for Label Studio exports.
        images: image folder for COCO and Label Studio exports.
    """
    data = Path(data)
    if not data.exists():
        raise DataError(f"dataset path {data} does not exist; check --data")
    if dataset in ("lspet", "lsp"):
        samples = load_lsp(data, split, Path(split_file) if split_file else None)
    elif dataset == "coco":
        samples = load_coco(data, split, Path(images) if images else None)
    elif dataset == "labelstudio":
        samples = load_labelstudio(data, dataset_skeleton(dataset, skeleton), Path(images) if images else None)
    else:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {list(DATASETS)}")
    expected = dataset_skeleton(dataset, skeleton).num_keypoints
    if samples and samples[0].keypoints.shape[0] != expected:
        raise DataError(f"{data}: samples have {samples[0].keypoints.shape[0]} keypoints, skeleton expects {expected}")
    return samples
