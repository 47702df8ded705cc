"""The shared label-config parser (common.labelconfig): the annotation configs map every keypoint of their
skeleton; subsets, other spellings and a person box are read (moved here from tests/ml_backend, whose /setup tests
check the 4xx answers for wrong configs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.labelconfig import guess_skeleton, map_labels, parse_label_config
from vl4pose.skeletons import SKELETONS, normalise_name

CONFIGS = Path(__file__).resolve().parents[2] / "annotation_configs"
LSP_CONFIG = (CONFIGS / "lsp14.xml").read_text()


@pytest.mark.parametrize("skeleton", sorted(SKELETONS))
def test_each_annotation_config_maps_every_keypoint_of_its_skeleton(skeleton):
    config = parse_label_config((CONFIGS / f"{skeleton}.xml").read_text())
    assert (config.image_name, config.image_key, config.keypoint_control, config.smart) == ("image", "image", "kp", True)
    mapping = map_labels(config, SKELETONS[skeleton])
    assert all(label is not None for label in mapping.labels)
    assert [normalise_name(label) for label in mapping.labels] == list(SKELETONS[skeleton].keypoints)
    assert guess_skeleton(config).skeleton.name == skeleton


def test_subset_of_keypoints_and_other_names_are_accepted():
    xml = """<View><Image name="img" value="$photo"/>
      <KeyPointLabels name="points" toName="img"><Label value="right-ankle"/><Label value="HEAD TOP"/></KeyPointLabels>
    </View>"""
    config = parse_label_config(xml)
    assert (config.image_name, config.image_key, config.keypoint_control, config.smart) == ("img", "photo", "points", False)
    mapping = map_labels(config, SKELETONS["lsp14"])
    assert mapping.labels[0] == "right-ankle" and mapping.labels[13] == "HEAD TOP"
    assert sum(label is not None for label in mapping.labels) == 2
    assert mapping.index("HEAD TOP") == 13 and mapping.index("Neck") is None


def test_rectangle_labels_person_box_is_found():
    xml = LSP_CONFIG.replace("</View>", '<RectangleLabels name="person" toName="image"><Label value="Person"/>'
                                        "</RectangleLabels></View>")
    config = parse_label_config(xml)
    assert config.box_control == "person" and config.box_labels == ("Person",)
