"""Label Studio labelling configs for a skeleton: read ``annotation_configs/<skeleton>.xml`` when it exists,
otherwise generate an equivalent one; and read a config (through :mod:`common.labelconfig`) into the names the
coordinator stores."""

from __future__ import annotations

import colorsys
from pathlib import Path
from xml.sax.saxutils import quoteattr

from backend.errors import CoordinatorError
from common.labelconfig import LabelConfigError, map_labels, parse_label_config
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
    """``{"from_name", "to_name", "image_key", "labels", "missing"}`` of a config (the shared parser,
    :mod:`common.labelconfig`, which the ML backend uses too); ``labels`` has K entries in keypoint order (None
    for a keypoint the config lacks), ``missing`` names those keypoints.

    Raises:
        CoordinatorError: not XML, no KeyPointLabels/Image pair, or labels that are not keypoints of the
            skeleton (or two labels for one keypoint); the message says which.
    """
    try:
        config = parse_label_config(xml)
        mapping = map_labels(config, skeleton)
    except LabelConfigError as exc:
        raise CoordinatorError(f"the labelling config cannot be used: {exc.message}") from None
    return {
        "from_name": config.keypoint_control,
        "to_name": config.image_name,
        "image_key": config.image_key,
        "labels": list(mapping.labels),
        "missing": [k for k, label in zip(skeleton.keypoints, mapping.labels) if label is None],
    }
