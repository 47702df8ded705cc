"""COCO person-keypoints JSON loader: one sample per annotated person, crowd regions skipped."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from vl4pose.data.sample import Sample
from vl4pose.errors import DataError

log = logging.getLogger(__name__)


def resolve_coco_paths(data: Path, split: str | None) -> tuple[Path, Path]:
    """(annotation JSON, image folder) for ``--data`` being a JSON file or a COCO root folder."""
    data = Path(data)
    if data.is_file():
        return data, data.parent
    name = split or "val"
    annotation = data / "annotations" / f"person_keypoints_{name}2017.json"
    if not annotation.is_file():
        found = sorted(p.name for p in (data / "annotations").glob("*.json")) if (data / "annotations").is_dir() else []
        raise DataError(
            f"{annotation} not found (annotation files there: {found}); pass the JSON file itself as --data "
            "or a split that exists"
        )
    return annotation, data / f"{name}2017"


def load_coco(data: Path, split: str | None = None, image_dir: Path | None = None) -> list[Sample]:
    """Samples of a COCO person-keypoints file.

    Args:
        data: the JSON file, or a COCO root with ``annotations/person_keypoints_<split>2017.json``.
        split: ``"train"`` or ``"val"`` when ``data`` is a root folder.
        image_dir: folder of the images (default: ``<root>/<split>2017`` or the JSON's folder).
    """
    annotation_path, default_images = resolve_coco_paths(data, split)
    images_root = Path(image_dir) if image_dir else default_images
    try:
        coco = json.loads(annotation_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{annotation_path} is not valid JSON ({exc})") from exc
    if not isinstance(coco, dict) or not isinstance(coco.get("annotations"), list):
        raise DataError(f"{annotation_path} has no 'annotations' list; expected a COCO keypoints file")
    images = {img["id"]: img for img in coco.get("images", [])}
    num_kp = _keypoint_count(coco, annotation_path)
    samples: list[Sample] = []
    for ann in coco["annotations"]:
        if ann.get("iscrowd", 0) or not ann.get("num_keypoints", 0) or "keypoints" not in ann:
            continue
        img = images.get(ann["image_id"])
        if img is None:
            raise DataError(f"{annotation_path}: annotation {ann.get('id')} refers to unknown image {ann['image_id']}")
        flat = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        if flat.shape[0] != num_kp:
            raise DataError(f"{annotation_path}: annotation {ann.get('id')} has {flat.shape[0]} keypoints, expected {num_kp}")
        visibility = flat[:, 2].astype(np.int64)
        keypoints = np.where((visibility > 0)[:, None], flat[:, :2], np.nan)
        x, y, w, h = ann.get("bbox", [np.nan] * 4)
        box = np.array([x, y, x + w, y + h], dtype=np.float64) if w and h else None
        samples.append(Sample(f"coco:{ann['image_id']}:{ann.get('id', len(samples))}",
                              images_root / img["file_name"], keypoints, visibility, box=box))
    if not samples:
        raise DataError(
            f"{annotation_path} holds no person with keypoints (crowd regions and num_keypoints == 0 are "
            "skipped); use a COCO person_keypoints file"
        )
    log.info("loaded %d COCO person samples from %s", len(samples), annotation_path)
    return samples


def _keypoint_count(coco: dict, path: Path) -> int:
    for category in coco.get("categories", []):
        if category.get("keypoints"):
            return len(category["keypoints"])
    if any("keypoints" in a for a in coco["annotations"]):
        first = next(a for a in coco["annotations"] if "keypoints" in a)
        return len(first["keypoints"]) // 3
    raise DataError(f"{path} has no keypoints (no category lists keypoints and no annotation carries them)")
