"""What a link imports: images of a folder, or samples of an LSP / COCO / Label Studio export, with or without
labels; and how each becomes a Label Studio task (local-files URL or upload)."""

from __future__ import annotations

import logging
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.errors import CoordinatorError
from backend.services.annotations import keypoints_to_json
from vl4pose.data import load_samples
from vl4pose.data.labelstudio import keypoints_to_results
from vl4pose.data.sample import Sample, image_size
from vl4pose.errors import VL4PoseError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass
class Item:
    """One image to import; ``sample`` holds its existing labels (None for a bare image)."""

    path: Path
    sample: Sample | None = None

    @property
    def labelled(self) -> bool:
        return self.sample is not None and bool(self.sample.labelled.any())


def folder_items(folder: Path) -> list[Item]:
    """Every image under ``folder`` (recursively, sorted by path)."""
    if not folder.is_dir():
        raise CoordinatorError(f"image folder {folder} does not exist or is not a folder")
    items = [Item(p.resolve()) for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not items:
        raise CoordinatorError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {folder}")
    return items


def dataset_items(dataset: str, data: str, split: str | None, skeleton: str, image_dir: str | None) -> list[Item]:
    """One item per image of a dataset; an image with several people keeps the most complete one."""
    try:
        samples = load_samples(dataset, data, split, skeleton=skeleton, images=image_dir)
    except VL4PoseError as exc:
        raise CoordinatorError(str(exc)) from None
    best: dict[Path, Sample] = {}
    for sample in samples:
        if not isinstance(sample.image, (str, Path)):
            raise CoordinatorError(f"sample {sample.sample_id} has no image file")
        path = Path(sample.image).resolve()
        if path not in best or sample.labelled.sum() > best[path].labelled.sum():
            best[path] = sample
    return [Item(path, sample) for path, sample in best.items()]


def local_files_url(path: Path, files_root: Path) -> str | None:
    """``/data/local-files/?d=<path relative to the root>`` or None when the file is outside the root."""
    try:
        relative = path.resolve().relative_to(files_root.resolve())
    except ValueError:
        return None
    return "/data/local-files/?d=" + urllib.parse.quote(relative.as_posix(), safe="/")


def choose_import(items: list[Item], mode: str, files_root: str) -> str:
    """``local-files`` when every image lies under Label Studio's document root, else ``upload``."""
    root = Path(files_root) if files_root else None
    inside = root is not None and all(local_files_url(i.path, root) for i in items)
    if mode == "local-files" and not inside:
        raise CoordinatorError(
            "VL4POSE_IMAGE_IMPORT=local-files needs every image under VL4POSE_LABEL_STUDIO_FILES_ROOT "
            f"({files_root or 'not set'}), which must equal Label Studio's "
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
        )
    if mode == "upload":
        return "upload"
    return "local-files" if inside else "upload"


def annotation_results(item: Item, config: dict) -> list[dict]:
    """Label Studio results of an item's existing labels (keypoints the config has no label for are dropped)."""
    sample = item.sample
    labels = config["labels"]
    placed = sample.labelled & np.array([label is not None for label in labels])
    return keypoints_to_results(
        sample.keypoints,
        image_size(item.path),
        [label or "" for label in labels],
        placed,
        None,
        config["from_name"],
        config["to_name"],
    )


def holdout_rows(items: list[Item]) -> list[dict]:
    """HoldoutSample fields of labelled items."""
    rows = []
    for item in items:
        if not item.labelled:
            continue
        sample = item.sample
        rows.append(
            {
                "sample_id": sample.sample_id[:200],
                "image": str(item.path),
                "keypoints": keypoints_to_json(np.where(sample.labelled[:, None], sample.keypoints, np.nan)),
                "visibility": [int(v) for v in np.where(sample.labelled, np.maximum(sample.visibility, 1), 0)],
                "box": [float(v) for v in sample.box] if sample.box is not None else None,
            }
        )
    return rows
