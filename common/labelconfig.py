"""Read a Label Studio labelling config (XML) and map its keypoint labels onto a skeleton: the one parser of
the ML backend (``/setup``, ``/predict``) and the coordinator (linking, :mod:`backend.services.configs`).

Only the tags the services need are read: the ``Image`` the keypoints point at, the ``KeyPointLabels`` control
(its labels become keypoints) and an optional ``RectangleLabels`` person box on the same image. Neither Label
Studio nor its SDK is imported: the SDK's ``label_interface`` would serve, but importing it loads 562 modules
(pydantic, jsonschema, lxml and requests among them; label-studio-sdk 2.1.2) for three tags ElementTree reads.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from vl4pose.data.labelstudio import label_map
from vl4pose.errors import VL4PoseError
from vl4pose.skeletons import SKELETONS, Skeleton, normalise_name

MAX_CONFIG_CHARS = 1_000_000


class LabelConfigError(VL4PoseError):
    """The labelling config cannot be used; ``code`` names the problem, ``extra`` adds JSON fields (the ML
    backend answers them as its 4xx body)."""

    def __init__(self, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


@dataclass(frozen=True)
class LabelConfig:
    """What the services need from a labelling config.

    Attributes:
        image_name: ``name`` of the Image tag (the results' ``to_name``).
        image_key: task data key holding the image URL (``value="$image"`` -> ``"image"``).
        keypoint_control: ``name`` of the KeyPointLabels tag (the results' ``from_name``).
        labels: the KeyPointLabels' label values, in config order.
        smart: the KeyPointLabels tag has ``smart="true"`` (interactive suggestions).
        box_control: ``name`` of a RectangleLabels tag on the same image, or None.
        box_labels: its label values.
    """

    image_name: str
    image_key: str
    keypoint_control: str
    labels: tuple[str, ...]
    smart: bool = False
    box_control: str | None = None
    box_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeypointMapping:
    """A label config matched to a skeleton: ``labels[i]`` is the config label of keypoint i, or None
    where the config has no label for it (such keypoints are never sent to Label Studio)."""

    config: LabelConfig
    skeleton: Skeleton
    labels: tuple[str | None, ...]

    def index(self, label: str) -> int | None:
        """Keypoint index of a config label, or None for a label this config does not have."""
        for i, own in enumerate(self.labels):
            if own is not None and own == label:
                return i
        return None


def _tag(element: ET.Element) -> str:
    return element.tag.lower() if isinstance(element.tag, str) else ""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


@functools.lru_cache(maxsize=64)
def parse_label_config(xml: str) -> LabelConfig:
    """Parse the XML of a labelling config (cached per distinct string).

    Raises:
        LabelConfigError: not XML (``invalid_label_config``), no Image (``no_image_tag``), no
            KeyPointLabels on an Image (``no_keypoint_labels``), or a KeyPointLabels without labels.
    """
    if not isinstance(xml, str) or not xml.strip():
        raise LabelConfigError("invalid_label_config", "the label config is empty; send the project's XML config")
    if len(xml) > MAX_CONFIG_CHARS:
        raise LabelConfigError("invalid_label_config", f"the label config is over {MAX_CONFIG_CHARS} characters")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelConfigError("invalid_label_config", f"the label config is not valid XML ({exc})") from None
    images = {el.get("name"): el for el in root.iter() if _tag(el) == "image" and el.get("name")}
    if not images:
        raise LabelConfigError("no_image_tag", 'the label config has no <Image name=".." value="$..."/> tag; '
                                               "VL4Pose annotates images")
    keypoints = [el for el in root.iter() if _tag(el) == "keypointlabels"]
    control, image_name = None, None
    for el in keypoints:
        targets = [t.strip() for t in (el.get("toName") or "").split(",") if t.strip() in images]
        if el.get("name") and targets:
            control, image_name = el, targets[0]
            break
    if control is None or image_name is None:
        raise LabelConfigError("no_keypoint_labels", 'the label config needs a <KeyPointLabels name=".." toName="<image>">'
                                                     " tag whose toName is an Image tag; see annotation_configs/")
    labels = tuple(el.get("value") for el in control if _tag(el) == "label" and el.get("value"))
    if not labels:
        raise LabelConfigError("no_keypoint_labels", f"<KeyPointLabels name={control.get('name')!r}> has no <Label value=..>")
    value = images[image_name].get("value") or ""
    if not value.startswith("$") or len(value) < 2:
        raise LabelConfigError("invalid_label_config", f'<Image name="{image_name}"> needs value="$<data key>", got {value!r}')
    box_control, box_labels = None, ()
    for el in root.iter():
        if _tag(el) == "rectanglelabels" and image_name in [t.strip() for t in (el.get("toName") or "").split(",")]:
            box_control = el.get("name")
            box_labels = tuple(lab.get("value") for lab in el if _tag(lab) == "label" and lab.get("value"))
            break
    return LabelConfig(image_name=image_name, image_key=value[1:], keypoint_control=control.get("name"),
                       labels=labels, smart=_truthy(control.get("smart")), box_control=box_control,
                       box_labels=box_labels)


def map_labels(config: LabelConfig, skeleton: Skeleton) -> KeypointMapping:
    """Match every config label to a keypoint of ``skeleton`` (case, spaces and hyphens ignored).

    Raises:
        LabelConfigError: ``unknown_labels`` (with ``unknown`` and ``expected`` lists) or
            ``duplicate_labels`` (two labels for one keypoint).
    """
    known = {name: i for i, name in enumerate(skeleton.keypoints)}
    unknown = [label for label in config.labels if normalise_name(label) not in known]
    if unknown:
        raise LabelConfigError(
            "unknown_labels",
            f"labels {unknown} of <KeyPointLabels name={config.keypoint_control!r}> are not keypoints of skeleton "
            f"{skeleton.name!r}; name the labels after its keypoints (see annotation_configs/{skeleton.name}.xml)",
            unknown=unknown, expected=list(skeleton.keypoints), skeleton=skeleton.name)
    labels: list[str | None] = [None] * skeleton.num_keypoints
    for label, index in label_map(list(config.labels), skeleton).items():
        if labels[index] is not None:
            raise LabelConfigError("duplicate_labels", f"labels {labels[index]!r} and {label!r} both name keypoint "
                                                       f"{skeleton.keypoints[index]!r}; keep one of them",
                                   duplicate=[labels[index], label])
        labels[index] = label
    return KeypointMapping(config, skeleton, tuple(labels))


def guess_skeleton(config: LabelConfig) -> KeypointMapping:
    """With no model yet: the smallest known skeleton that has a keypoint for every label.

    Raises:
        LabelConfigError: ``unknown_labels`` against the skeleton that matches the most labels.
    """
    names = {normalise_name(label) for label in config.labels}
    fitting = [s for s in SKELETONS.values() if names <= set(s.keypoints)]
    if fitting:
        return map_labels(config, min(fitting, key=lambda s: s.num_keypoints))
    closest = max(SKELETONS.values(), key=lambda s: len(names & set(s.keypoints)))
    return map_labels(config, closest)
