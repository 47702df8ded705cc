"""Label configs: our four annotation configs pass /setup; wrong ones get a 4xx naming the problem (the parser
itself, shared with the coordinator, is tested in tests/common/test_labelconfig.py)."""

from __future__ import annotations

import pytest
from ml_helpers import CONFIGS, LSP_CONFIG

from vl4pose.skeletons import SKELETONS


@pytest.mark.parametrize("skeleton", sorted(SKELETONS))
def test_each_annotation_config_has_distinct_hotkeys_and_colours(skeleton):
    import xml.etree.ElementTree as ET

    labels = [el for el in ET.fromstring((CONFIGS / f"{skeleton}.xml").read_text()).iter("Label")]
    hotkeys = [el.get("hotkey") for el in labels]
    colours = [el.get("background") for el in labels]
    assert all(hotkeys) and len(set(hotkeys)) == len(hotkeys)
    assert all(c and c.startswith("#") for c in colours) and len(set(colours)) == len(colours)
    # Label Studio's own tool keys (K key point, V move, H pan, R rect, E eraser, B brush, ...) stay free
    assert not set(hotkeys) & set("kvhrebpowmu")


def test_lsp_config_answers_setup_with_the_served_version(client):
    response = client.post("/setup", json={"project": "3.1", "schema": LSP_CONFIG, "hostname": "http://127.0.0.1:1",
                                           "access_token": "x" * 40})
    assert response.status_code == 200
    assert response.json == {"model_version": "tiny-v1", "skeleton": "lsp14"}


@pytest.mark.parametrize("skeleton", ["mpii16", "coco17", "hand21"])
def test_other_skeleton_configs_are_refused_by_an_lsp_model(client, skeleton):
    response = client.post("/setup", json={"project": "3.1", "schema": (CONFIGS / f"{skeleton}.xml").read_text()})
    if skeleton == "mpii16":  # mpii16 has pelvis and thorax, which lsp14 lacks
        assert response.json["unknown"] == ["Thorax", "Pelvis"]
    assert response.status_code == 422
    assert response.json["error"] == "unknown_labels" and response.json["skeleton"] == "lsp14"
    assert response.json["expected"] == list(SKELETONS["lsp14"].keypoints)


@pytest.mark.parametrize("skeleton", sorted(SKELETONS))
def test_every_config_passes_setup_without_a_model(make_app, tmp_path, skeleton):
    from vl4pose.registry import ModelRegistry

    registry = ModelRegistry(tmp_path / "empty")
    registry.link_project("3")  # linked without a skeleton or a version: any known skeleton's config passes
    registry.link_project("4", skeleton="coco17")  # linked with its skeleton: only configs that fit it
    client = make_app(models_dir=registry.root).test_client()
    response = client.post("/setup", json={"project": "3.1", "schema": (CONFIGS / f"{skeleton}.xml").read_text()})
    assert response.status_code == 200
    assert response.json == {"model_version": None, "skeleton": skeleton}
    response = client.post("/setup", json={"project": "4.1", "schema": (CONFIGS / f"{skeleton}.xml").read_text()})
    assert response.status_code == (200 if skeleton == "coco17" else 422)


BAD = [
    ("<View><Image", 400, "invalid_label_config"),
    ("", 400, "invalid_label_config"),
    ('<View><Text name="t" value="$text"/></View>', 422, "no_image_tag"),
    ('<View><Image name="image" value="$image"/><RectangleLabels name="r" toName="image"><Label value="a"/>'
     "</RectangleLabels></View>", 422, "no_keypoint_labels"),
    ('<View><Image name="image" value="$image"/><KeyPointLabels name="kp" toName="other"><Label value="Neck"/>'
     "</KeyPointLabels></View>", 422, "no_keypoint_labels"),
    ('<View><Image name="image" value="$image"/><KeyPointLabels name="kp" toName="image"></KeyPointLabels></View>',
     422, "no_keypoint_labels"),
    ('<View><Image name="image" value="image"/><KeyPointLabels name="kp" toName="image"><Label value="Neck"/>'
     "</KeyPointLabels></View>", 400, "invalid_label_config"),
    ('<View><Image name="image" value="$image"/><KeyPointLabels name="kp" toName="image"><Label value="Neck"/>'
     '<Label value="neck "/></KeyPointLabels></View>', 422, "duplicate_labels"),
    ('<View><Image name="image" value="$image"/><KeyPointLabels name="kp" toName="image"><Label value="Neck"/>'
     '<Label value="Tail"/></KeyPointLabels></View>', 422, "unknown_labels"),
]


@pytest.mark.parametrize("xml,status,code", BAD)
def test_wrong_label_configs_get_a_4xx_naming_the_problem(client, xml, status, code):
    for endpoint, body in (("/setup", {"project": "3.1", "schema": xml}),
                           ("/predict", {"tasks": [], "project": "3.1", "label_config": xml, "params": {}})):
        if endpoint == "/predict" and not xml:
            continue  # an empty label_config in /predict falls back to the one from /setup
        response = client.post(endpoint, json=body)
        assert response.status_code == status, (endpoint, response.json)
        assert response.json["error"] == code
        assert response.json["message"] and "Traceback" not in response.json["message"]
    if code == "unknown_labels":
        assert response.json["unknown"] == ["Tail"]


def test_setup_without_schema_is_a_400(client):
    response = client.post("/setup", json={"project": "3.1"})
    assert response.status_code == 400 and response.json["error"] == "invalid_request"
