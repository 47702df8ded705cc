"""Label Studio JSON: keypoint results <-> (K, 2) pixel keypoints, and the export-file loader.

Label Studio stores a keypoint as ``value.x``/``value.y`` in percent of the image and the label in
``value.keypointlabels``; ``original_width``/``original_height`` give the image size in pixels. This
module is the one place in the project that converts between those percentages and image pixels.

A keypoint may carry a per-region choice "Occluded" (``<Choices perRegion="true">`` in the label configs):
Label Studio stores it as a separate ``choices`` result with the keypoint's region ``id`` (and a copy of its
``x``/``y``). Such keypoints get visibility 1 (COCO: labelled but occluded); other placed keypoints get 2.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from pathlib import Path

import numpy as np

from vl4pose.data.sample import Sample
from vl4pose.errors import ConfigError, DataError
from vl4pose.skeletons import Skeleton, normalise_name

log = logging.getLogger(__name__)

OCCLUDED = "occluded"
"""The per-region choice (normalised name) that marks a keypoint as labelled but occluded (visibility 1)."""


def results_to_keypoints(
    results: list[dict], skeleton: Skeleton, image_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read keypoints (and an optional person rectangle) from one annotation's ``result`` list.

    Args:
        results: Label Studio result dicts; ``keypointlabels`` and ``rectanglelabels`` are used,
            other types ignored.
        skeleton: maps label names to keypoint indices (case, spaces and hyphens ignored).
        image_size: (width, height) in pixels when a result lacks ``original_width``/``original_height``.

    Returns:
        keypoints (K, 2) pixels (NaN where missing), visibility (K,) (2 placed, 1 placed and marked
        "Occluded" by a per-region choice, 0 missing), box (4,) or None.

    Raises:
        DataError: a keypoint carries a label the skeleton does not know, or no image size is known.
    """
    k = skeleton.num_keypoints
    keypoints = np.full((k, 2), np.nan)
    visibility = np.zeros(k, dtype=np.int64)
    box = None
    occluded_ids, occluded_points = occluded_marks(results)
    for item in results or []:
        kind = item.get("type")
        if kind not in ("keypointlabels", "rectanglelabels"):
            continue
        value = item.get("value") or {}
        width, height = _size(item, image_size)
        x, y = float(value.get("x", np.nan)), float(value.get("y", np.nan))
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        if kind == "rectanglelabels":
            w, h = float(value.get("width", 0)), float(value.get("height", 0))
            box = np.array([x * width / 100, y * height / 100, (x + w) * width / 100, (y + h) * height / 100])
            continue
        labels = value.get("keypointlabels") or value.get("labels") or []
        if not labels:
            continue
        try:
            index = skeleton.index(labels[0])
        except ConfigError as exc:
            raise DataError(str(exc)) from None
        keypoints[index] = (x * width / 100.0, y * height / 100.0)
        marked = str(item.get("id")) in occluded_ids or (round(x, 6), round(y, 6)) in occluded_points
        visibility[index] = 1 if marked else 2
    return keypoints, visibility, box


def occluded_marks(results: list[dict]) -> tuple[set[str], set[tuple[float, float]]]:
    """Regions marked "Occluded" by a per-region ``choices`` result: their ids, and the (x, y) percentages of
    marks that carry no id (matched by position instead)."""
    ids: set[str] = set()
    points: set[tuple[float, float]] = set()
    for item in results or []:
        value = item.get("value") or {}
        if item.get("type") != "choices" or not any(
            normalise_name(str(c)) == OCCLUDED for c in value.get("choices") or []
        ):
            continue
        if item.get("id") is not None:
            ids.add(str(item["id"]))
        elif isinstance(value.get("x"), (int, float)) and isinstance(value.get("y"), (int, float)):
            points.add((round(float(value["x"]), 6), round(float(value["y"]), 6)))
    return ids, points


def _size(item: dict, fallback: tuple[int, int] | None) -> tuple[float, float]:
    width, height = item.get("original_width"), item.get("original_height")
    if width and height:
        return float(width), float(height)
    if fallback:
        return float(fallback[0]), float(fallback[1])
    raise DataError("a Label Studio result has no original_width/original_height and no image size is known")


def keypoints_to_results(
    keypoints: np.ndarray,
    image_size: tuple[int, int],
    labels: list[str],
    placed: np.ndarray,
    scores: np.ndarray | None = None,
    from_name: str = "kp",
    to_name: str = "image",
    point_width: float = 0.75,
) -> list[dict]:
    """Label Studio ``keypointlabels`` results for the placed keypoints (others are left out).

    Args:
        keypoints: (K, 2) image pixels.
        image_size: (width, height) pixels.
        labels: K label strings as they appear in the labelling config.
        placed: (K,) bool; False keypoints produce no result.
        scores: optional (K,) per-keypoint scores in [0, 1].
    """
    width, height = image_size
    out = []
    for i, label in enumerate(labels):
        if not placed[i] or not np.isfinite(keypoints[i]).all():
            continue
        x = float(np.clip(keypoints[i, 0] / width * 100.0, 0.0, 100.0))
        y = float(np.clip(keypoints[i, 1] / height * 100.0, 0.0, 100.0))
        result = {
            "id": f"kp{i}",
            "from_name": from_name,
            "to_name": to_name,
            "type": "keypointlabels",
            "original_width": int(width),
            "original_height": int(height),
            "image_rotation": 0,
            "value": {"x": x, "y": y, "width": point_width, "keypointlabels": [label]},
        }
        if scores is not None:
            result["score"] = float(scores[i])
        out.append(result)
    return out


def latest_annotation(task: dict) -> dict | None:
    """The most recent annotation of a task that was not cancelled, or None."""
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not annotations:
        return None
    return max(annotations, key=lambda a: (a.get("updated_at") or a.get("created_at") or "", a.get("id") or 0))


def resolve_image(url: str, image_root: Path | None) -> Path:
    """A local path for a task's image URL: absolute paths, relative paths and ``/data/local-files/?d=`` paths
    (both relative to ``image_root``), and uploaded files (``/data/upload/<project>/<hash>-<name>``) found by name."""
    parsed = urllib.parse.urlparse(url)
    query = urllib.parse.parse_qs(parsed.query)
    candidates: list[Path] = []
    if "d" in query:
        candidates.append((image_root or Path(".")) / query["d"][0])
    path = Path(urllib.parse.unquote(parsed.path))
    if path.is_absolute() and not url.startswith("/data/"):
        candidates.append(path)
    elif not path.is_absolute() and not parsed.scheme and image_root is not None:
        candidates.append(image_root / path)  # a path relative to the export (``images/x.jpg``)
    if image_root is not None:
        candidates.append(image_root / path.name)
        if "-" in path.name:
            candidates.append(image_root / path.name.split("-", 1)[1])
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataError(f"image {url!r} not found (tried {[str(c) for c in candidates]}); pass --images DIR")


def load_labelstudio(export: Path, skeleton: Skeleton, image_root: Path | None = None,
                     image_key: str | None = None) -> list[Sample]:
    """Samples of a Label Studio JSON export (a list of tasks); tasks without a usable annotation are skipped."""
    export = Path(export)
    try:
        tasks = json.loads(export.read_text())
    except FileNotFoundError:
        raise DataError(f"Label Studio export {export} not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{export} is not valid JSON ({exc}); export the project as JSON") from exc
    if not isinstance(tasks, list):
        raise DataError(f"{export} is not a Label Studio JSON export (expected a list of tasks)")
    root = Path(image_root) if image_root else export.parent
    samples = []
    for task in tasks:
        annotation = latest_annotation(task)
        if annotation is None:
            continue
        keypoints, visibility, box = results_to_keypoints(annotation.get("result", []), skeleton)
        if not visibility.any():
            continue
        data = task.get("data") or {}
        url = data.get(image_key) if image_key else next((v for v in data.values() if isinstance(v, str)), None)
        if not url:
            raise DataError(f"{export}: task {task.get('id')} has no image in its data {sorted(data)}")
        samples.append(Sample(f"ls:{task.get('id')}", resolve_image(url, root), keypoints, visibility, box=box))
    if not samples:
        raise DataError(f"{export} holds no task with keypoint annotations for skeleton {skeleton.name!r}")
    log.info("loaded %d annotated tasks from %s", len(samples), export)
    return samples


def label_map(labels: list[str], skeleton: Skeleton) -> dict[str, int]:
    """Map every label of a config to a keypoint index; raise ConfigError naming unknown ones."""
    known = {normalise_name(k): i for i, k in enumerate(skeleton.keypoints)}
    unknown = [label for label in labels if normalise_name(label) not in known]
    if unknown:
        raise ConfigError(f"labels {unknown} are not keypoints of {skeleton.name!r}; expected {list(skeleton.keypoints)}")
    return {label: known[normalise_name(label)] for label in labels}
