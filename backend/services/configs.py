"""Label Studio labelling configs for a skeleton: read ``annotation_configs/<skeleton>.xml`` when it exists,
otherwise generate an equivalent one; and parse a config into the names the coordinator needs."""

from __future__ import annotations

import colorsys
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import quoteattr

from backend.errors import CoordinatorError
from vl4pose.errors import ConfigError
from vl4pose.skeletons import Skeleton

CONFIG_DIR = Path(__file__).resolve().parents[2] / "annotation_configs"


def label_text(keypoint: str) -> str:
    """``right_ankle`` -> ``Right Ankle`` (any spelling maps back through :func:`normalise_name`)."""
    return keypoint.replace("_", " ").title()


def generate_config(skeleton: Skeleton) -> str:
    """A KeyPointLabels config with one label per keypoint, smart (interactive) keypoints, distinct colours."""
    lines = ["<View>", '  <KeyPointLabels name="kp" toName="image" smart="true" strokeWidth="2">']
    k = skeleton.num_keypoints
    for i, name in enumerate(skeleton.keypoints):
        r, g, b = colorsys.hsv_to_rgb(i / k, 0.75, 0.95)
        colour = f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
        lines.append(f'    <Label value={quoteattr(label_text(name))} background="{colour}"/>')
    lines += ["  </KeyPointLabels>", '  <Image name="image" value="$image" zoom="true" zoomControl="true"/>', "</View>"]
    return "\n".join(lines) + "\n"


def config_for(skeleton: Skeleton, config_dir: Path = CONFIG_DIR) -> str:
    """The project's labelling config: the shared file for the skeleton if present, else a generated one."""
    path = config_dir / f"{skeleton.name}.xml"
    return path.read_text() if path.is_file() else generate_config(skeleton)


def parse_config(xml: str, skeleton: Skeleton) -> dict:
    """``{"from_name", "to_name", "image_key", "labels"}`` of a config; ``labels`` has K entries in keypoint
    order (None for a keypoint the config lacks).

    Raises:
        CoordinatorError: no KeyPointLabels/Image pair, or labels that are not keypoints of the skeleton.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise CoordinatorError(f"the labelling config is not valid XML ({exc})") from None
    control = next(iter(root.iter("KeyPointLabels")), None)
    if control is None or not control.get("name") or not control.get("toName"):
        raise CoordinatorError("the labelling config has no <KeyPointLabels name=... toName=...> tag")
    image = next((t for t in root.iter("Image") if t.get("name") == control.get("toName")), None)
    if image is None or not (image.get("value") or "").startswith("$"):
        raise CoordinatorError(f"the labelling config has no <Image name={control.get('toName')!r} value=\"$...\">")
    labels: list[str | None] = [None] * skeleton.num_keypoints
    unknown = []
    for tag in control.iter("Label"):
        value = tag.get("value") or ""
        try:
            labels[skeleton.index(value)] = value
        except ConfigError:
            unknown.append(value)
    if unknown:
        raise CoordinatorError(
            f"labels {unknown} of the labelling config are not keypoints of {skeleton.name!r}; "
            f"expected names like {[label_text(k) for k in skeleton.keypoints[:4]]}..."
        )
    if not any(labels):
        raise CoordinatorError(f"the labelling config names no keypoint of {skeleton.name!r}")
    return {
        "from_name": control.get("name"),
        "to_name": control.get("toName"),
        "image_key": image.get("value")[1:],
        "labels": labels,
        "missing": [k for k, label in zip(skeleton.keypoints, labels) if label is None],
    }
