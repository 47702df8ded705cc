"""Read the annotator's clicks from ``params.context`` of an interactive ``/predict``.

Label Studio sends ``{"result": [{"type": "keypointlabels", "from_name", "to_name", "original_width",
"original_height", "value": {"x", "y", "width", "keypointlabels": [label]}, "is_positive", ...}]}``
(see captures ``10_`` and ``10b_``). Keypoints of our KeyPointLabels control become clamped keypoints
(image pixels); a rectangle of the config's RectangleLabels control becomes the person box.
Negative clicks (``is_positive: false``) and results of other controls are ignored. Label Studio 1.23.2 also
sends the annotation's existing regions of the clicked label (measured in Chromium: the served pre-annotation's
keypoint of that label, without ``is_positive``): when the context holds positive clicks, those others are not
clamped but kept as ``existing`` (their region ids tell which regions the suggestions replace). Percentages are
converted with the size of the fetched image itself (``original_width``/``original_height`` are not
needed), so a click lands where the annotator put it even if those fields disagree with the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from common.labelconfig import KeypointMapping
from vl4pose.data.labelstudio import results_to_keypoints
from vl4pose.errors import DataError, VL4PoseError
from vl4pose.skeletons import Skeleton

EDGE_TOLERANCE = 1.0
"""Percent a click may lie outside the image (a point dropped on the border)."""


class ContextError(VL4PoseError):
    """``params.context`` is not what Label Studio sends for an interactive request."""


@dataclass
class Clicks:
    """Validated context results: keypoint clicks, the last person rectangle (Label Studio percentages) and the
    annotation's existing keypoint regions Label Studio sent along (not clamped)."""

    keypoints: list[dict]
    box: dict | None = None
    existing: list[dict] = field(default_factory=list)
    from_editor: bool = False
    """The clicks came marked ``is_positive`` (Label Studio's editor), not as an API caller's complete context."""

    def at(self) -> dict[str, tuple[float, float]]:
        """Clicked label -> (x, y) percent where the annotator put it (the last click of a label wins)."""
        return {click_label(item): (float(item["value"]["x"]), float(item["value"]["y"])) for item in self.keypoints}

    def in_pixels(self, skeleton: Skeleton, image_size: tuple[int, int]
                  ) -> tuple[dict[int, tuple[float, float]], np.ndarray | None]:
        """(clamped: keypoint index -> (x, y) image pixels, person box (4,) in pixels or None)."""
        try:
            keypoints, visibility, _ = results_to_keypoints([_unsized(i) for i in self.keypoints], skeleton, image_size)
            box = results_to_keypoints([_unsized(self.box)], skeleton, image_size)[2] if self.box else None
        except DataError as exc:
            raise ContextError(f"params.context cannot be read: {exc}") from None
        clamped = {int(i): (float(keypoints[i, 0]), float(keypoints[i, 1])) for i in np.flatnonzero(visibility > 0)}
        return clamped, box


def with_earlier(clicks: Clicks, earlier: list[dict], mapping: KeypointMapping) -> tuple[Clicks, frozenset[str]]:
    """``clicks`` plus the task's earlier clicks (:class:`ml_backend.clickmemory.ClickMemory`) of labels not clicked
    now, and the labels those earlier clicks add. An earlier click the label config no longer accepts is dropped.
    """
    now = clicks.at()
    added: dict[str, dict] = {}
    for item in earlier:
        try:
            usable = _check_item(item, mapping) == "keypoint"
        except ContextError:
            usable = False
        if usable and click_label(item) not in now:
            added[click_label(item)] = item
    return (Clicks(list(added.values()) + clicks.keypoints, clicks.box, clicks.existing, clicks.from_editor),
            frozenset(added))


def click_label(item: dict) -> str:
    """The label of a validated keypoint context result (``value.keypointlabels`` or ``value.labels``)."""
    value = item["value"]
    return (value.get("keypointlabels") or value.get("labels"))[0]


def _unsized(item: dict) -> dict:
    return {k: v for k, v in item.items() if k not in ("original_width", "original_height")}


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ContextError(f"context result {what} must be a finite number, got {value!r}")
    return float(value)


def _check_item(item: object, mapping: KeypointMapping) -> str | None:
    """The kind of a context item we use ('keypoint' or 'box'), None for one we ignore; raise if malformed."""
    if not isinstance(item, dict):
        raise ContextError(f"every context result must be an object, got {type(item).__name__}")
    config = mapping.config
    kind, source = item.get("type"), item.get("from_name")
    if item.get("is_positive") is False:
        return None
    if kind == "keypointlabels" and source in (config.keypoint_control, None):
        usage = "keypoint"
    elif kind == "rectanglelabels" and config.box_control is not None and source == config.box_control:
        usage = "box"
    else:
        return None
    value = item.get("value")
    if not isinstance(value, dict):
        raise ContextError(f"a {kind} context result has no 'value' object")
    for axis in ("x", "y") + (("width", "height") if usage == "box" else ()):
        number = _number(value.get(axis), f"value.{axis}")
        if axis in ("x", "y") and not -EDGE_TOLERANCE <= number <= 100.0 + EDGE_TOLERANCE:
            raise ContextError(f"context result value.{axis}={number} is outside the image (0-100 percent)")
    if usage == "box" and (value["width"] <= 0 or value["height"] <= 0):
        raise ContextError("the person box in params.context has no area")
    if usage == "keypoint":
        labels = value.get("keypointlabels") or value.get("labels")
        if not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
            raise ContextError("a keypointlabels context result needs value.keypointlabels = [<label>]")
        if mapping.index(labels[0]) is None:
            raise ContextError(f"context keypoint label {labels[0]!r} is not a label of <KeyPointLabels "
                               f"name={config.keypoint_control!r}>; expected one of "
                               f"{[label for label in mapping.labels if label]}")
    return usage


def parse_context(context: object, mapping: KeypointMapping) -> Clicks | None:
    """The clicks in ``params.context``; None when it carries none (an ordinary prediction request).

    Raises:
        ContextError: the context or one of its results is malformed.
    """
    if context is None:
        return None
    if not isinstance(context, dict):
        raise ContextError(f"params.context must be an object or null, got {type(context).__name__}")
    result = context.get("result")
    if result is None or result == []:
        return None
    if not isinstance(result, list):
        raise ContextError(f"params.context.result must be a list, got {type(result).__name__}")
    used = [(item, usage) for item in result if (usage := _check_item(item, mapping)) is not None]
    boxes = [{**item, "type": "rectanglelabels"} for item, usage in used if usage == "box"]
    keypoints = [item for item, usage in used if usage == "keypoint"]
    clicks = [item for item in keypoints if item.get("is_positive") is True]
    if not clicks:  # no click marked positive: every keypoint is one (an API caller's context)
        return Clicks(keypoints, boxes[-1] if boxes else None)
    existing = [item for item in keypoints if item.get("is_positive") is not True]
    return Clicks(clicks, boxes[-1] if boxes else None, existing, from_editor=True)
