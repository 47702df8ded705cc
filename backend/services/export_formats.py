"""Dataset export writers: COCO person keypoints, LSP ``joints.mat`` (LSPET layout), Label Studio JSON, and
the provenance file every export carries. Each writer fills an empty folder; :mod:`backend.services.export`
collects the annotations and publishes the folder (or a zip of it) atomically.

Every writer's output loads back through ``vl4pose.data.load_samples`` (``coco`` / ``lsp`` / ``labelstudio``)
with the same keypoints: see ``tests/backend/test_coord_export.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from backend.errors import CoordinatorError
from backend.services.configs import label_text
from vl4pose.data.sample import box_from_keypoints
from vl4pose.skeletons import Skeleton

FORMATS = ("coco", "lsp", "labelstudio")
LSP_SKELETON = "lsp14"
COCO_FILE = "person_keypoints.json"
LSP_FILE = "joints.mat"
LABELSTUDIO_FILE = "tasks.json"
PROVENANCE_FILE = "provenance.json"
OCCLUDED_CHOICE = "Occluded"
_JPEG = (".jpg", ".jpeg")


@dataclass
class ExportItem:
    """One exported annotation (the latest of its task).

    Attributes:
        keypoints: (K, 2) image pixels, NaN rows where not labelled.
        visibility: (K,) ints: 0 not labelled, 1 occluded, 2 visible.
        source: the local image file (filled in before writing); ``size``: its (width, height).
        name: the image's file name inside the export's ``images/``.
    """

    task_id: int
    annotation_id: int
    image_url: str
    keypoints: np.ndarray
    visibility: np.ndarray
    round: int
    served_model_version: str | None
    accepted: bool | None
    holdout: bool
    updated_at: dt.datetime | None
    source: Path | None = None
    size: tuple[int, int] = (0, 0)
    name: str = ""


@dataclass
class ExportSet:
    """What one export writes: the project's identity, its skeleton and label config, and the items."""

    project: dict[str, Any]
    skeleton: Skeleton
    label_config: dict[str, Any]
    format: str
    round: int | None
    items: list[ExportItem]
    skipped: dict[str, int] = field(default_factory=dict)


def check_format(fmt: str, skeleton: Skeleton) -> None:
    """Raise a CoordinatorError for an unknown format or a skeleton the format cannot hold."""
    if fmt not in FORMATS:
        raise CoordinatorError(f"unknown export format {fmt!r}; choose one of {list(FORMATS)}")
    if fmt == "lsp" and skeleton.name != LSP_SKELETON:
        raise CoordinatorError(
            f"the LSP format holds the 14 LSP keypoints only ({LSP_SKELETON}); this project's skeleton is "
            f"{skeleton.name!r} ({skeleton.num_keypoints} keypoints): export it as coco or labelstudio"
        )


def write(export: ExportSet, folder: Path) -> list[str]:
    """Write ``export`` into the empty ``folder`` (images copied into ``images/``); returns the file names."""
    (folder / "images").mkdir()
    if export.format == "lsp":
        for number, item in enumerate(export.items, 1):
            item.name = f"im{number:05d}.jpg"  # the LSPET naming the loader expects
            _copy_image(item.source, folder / "images" / item.name, jpeg=True)
        main = _write_lsp(export, folder)
    else:
        for item in export.items:
            _copy_image(item.source, folder / "images" / item.name, jpeg=False)
        main = _write_coco(export, folder) if export.format == "coco" else _write_labelstudio(export, folder)
    _write_json(folder / PROVENANCE_FILE, provenance(export))
    return [main, PROVENANCE_FILE, "images/"]


def _copy_image(source: Path | None, target: Path, jpeg: bool) -> None:
    if source is None:
        raise CoordinatorError(f"no image file for {target.name}")
    if not jpeg or source.suffix.lower() in _JPEG:
        shutil.copyfile(source, target)
        return
    with Image.open(source) as image:  # LSP image folders hold JPEGs only; pixels and size are unchanged
        image.convert("RGB").save(target, "JPEG", quality=95)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")


def _xy(value: float) -> float:
    return round(float(value), 3)


def _write_coco(export: ExportSet, folder: Path) -> str:
    """COCO person keypoints: flat ``[x, y, v] * K`` (v 0 not labelled, 1 occluded, 2 visible; unlabelled
    keypoints are ``0, 0, 0``), ``bbox`` = the tight box of the labelled keypoints, 1-based skeleton edges."""
    skeleton = export.skeleton
    images, annotations = [], []
    for item in export.items:
        labelled = item.visibility > 0
        flat: list[float] = []
        for (x, y), v in zip(item.keypoints, item.visibility):
            flat += [_xy(x), _xy(y), int(v)] if v > 0 else [0, 0, 0]
        x0, y0, x1, y1 = box_from_keypoints(item.keypoints, labelled)
        images.append({"id": item.task_id, "file_name": f"images/{item.name}", "width": item.size[0],
                       "height": item.size[1]})
        annotations.append(
            {
                "id": item.annotation_id,
                "image_id": item.task_id,
                "category_id": 1,
                "keypoints": flat,
                "num_keypoints": int(labelled.sum()),
                "bbox": [_xy(x0), _xy(y0), _xy(x1 - x0), _xy(y1 - y0)],
                "area": _xy((x1 - x0) * (y1 - y0)),
                "iscrowd": 0,
            }
        )
    name = "hand" if skeleton.name.startswith("hand") else "person"
    category = {
        "id": 1,
        "name": name,
        "supercategory": name,
        "keypoints": list(skeleton.keypoints),
        "skeleton": [[parent + 1, child + 1] for parent, child in skeleton.edges],
    }
    info = {
        "description": f"{export.project['title']} (VL4Pose coordinator project {export.project['id']})",
        "date_created": _now(),
        "round": export.round,
    }
    _write_json(folder / COCO_FILE, {"info": info, "images": images, "annotations": annotations,
                                     "categories": [category]})
    return COCO_FILE


def _write_lsp(export: ExportSet, folder: Path) -> str:
    """``joints.mat``: variable ``joints`` of shape (14, 3, N) = (keypoint, [x, y, flag], image), LSPET layout:
    flag 1 = annotated, 0 = missing (position -1, -1). LSPET has no occluded flag: occluded keypoints are
    written as annotated (the provenance file keeps the visibility)."""
    import scipy.io  # deferred on purpose: scipy (~300 modules) only for LSP's joints.mat

    joints = np.zeros((export.skeleton.num_keypoints, 3, len(export.items)))
    for n, item in enumerate(export.items):
        labelled = item.visibility > 0
        joints[:, 0, n] = np.where(labelled, np.round(item.keypoints[:, 0], 3), -1.0)
        joints[:, 1, n] = np.where(labelled, np.round(item.keypoints[:, 1], 3), -1.0)
        joints[:, 2, n] = labelled.astype(float)
    scipy.io.savemat(str(folder / LSP_FILE), {"joints": joints}, do_compression=True)
    return LSP_FILE


def _write_labelstudio(export: ExportSet, folder: Path) -> str:
    """A Label Studio JSON export (a list of tasks, one annotation each): keypoints as ``keypointlabels`` in
    percent of the image, occluded ones with a per-region ``choices`` result ``["Occluded"]`` (same region id).
    ``data`` points at the copied image (``images/<name>``, relative to the file); ``meta.source_image`` keeps
    the Label Studio URL."""
    config = export.label_config
    from_name, to_name = config.get("from_name", "kp"), config.get("to_name", "image")
    labels = config.get("labels") or []
    tasks = []
    for item in export.items:
        width, height = item.size
        results: list[dict] = []
        for i, name in enumerate(export.skeleton.keypoints):
            if item.visibility[i] == 0:
                continue
            region = f"a{item.annotation_id}k{i}"
            common = {"id": region, "to_name": to_name, "original_width": width, "original_height": height,
                      "image_rotation": 0}
            point = {"x": float(item.keypoints[i, 0]) / width * 100.0, "y": float(item.keypoints[i, 1]) / height * 100.0,
                     "width": 0.75}
            label = labels[i] if i < len(labels) and labels[i] else label_text(name)
            results.append({**common, "from_name": from_name, "type": "keypointlabels",
                            "value": {**point, "keypointlabels": [label]}})
            if item.visibility[i] == 1:
                results.append({**common, "from_name": "occluded", "type": "choices",
                                "value": {**point, "choices": [OCCLUDED_CHOICE]}})
        tasks.append(
            {
                "id": item.task_id,
                "data": {config.get("image_key", "image"): f"images/{item.name}"},
                "meta": {"source_image": item.image_url},
                "annotations": [
                    {
                        "id": item.annotation_id,
                        "task": item.task_id,
                        "result": results,
                        "was_cancelled": False,
                        "updated_at": _time(item.updated_at),
                    }
                ],
            }
        )
    _write_json(folder / LABELSTUDIO_FILE, tasks)
    return LABELSTUDIO_FILE


def provenance(export: ExportSet) -> dict[str, Any]:
    """Where each exported label came from: the model version whose suggestion the annotator started from,
    whether it was accepted unchanged or corrected, the round it was labelled in, and whether it is held out."""

    def outcome(item: ExportItem) -> str:
        return "no suggestion" if item.accepted is None else "accepted" if item.accepted else "corrected"

    tasks = [
        {
            "task_id": item.task_id,
            "annotation_id": item.annotation_id,
            "image": f"images/{item.name}",
            "source_image": item.image_url,
            "round": item.round,
            "suggested_by": item.served_model_version,
            "outcome": outcome(item),
            "holdout": item.holdout,
            "keypoints_labelled": int((item.visibility > 0).sum()),
            "keypoints_occluded": int((item.visibility == 1).sum()),
            "updated_at": _time(item.updated_at),
        }
        for item in export.items
    ]
    counts = {key: sum(t["outcome"] == key for t in tasks) for key in ("accepted", "corrected", "no suggestion")}
    return {
        "project": export.project,
        "format": export.format,
        "round": export.round,
        "skeleton": export.skeleton.name,
        "exported_at": _now(),
        "annotations": len(tasks),
        "outcomes": counts,
        "skipped": export.skipped,
        "tasks": tasks,
    }


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="microseconds") + "Z" if value is not None else None


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
