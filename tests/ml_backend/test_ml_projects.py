"""Per-project model versions through a real Label Studio 1.23.2: an lsp14 and a coco17 project served side by
side by one ML backend (Basic auth registered by the coordinator's adapter), each with its own version; a project
that is not linked gets a clear error. And a data folder reached through a symbolic link."""

from __future__ import annotations

import os
import uuid

import pytest
import requests
from ml_helpers import CONFIGS

from stack.process import BackendProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def coco_checkpoint(tmp_path_factory, coco_dir):
    """A coco17 model trained for one step on a few COCO images (weak, but real and calibrated)."""
    from vl4pose.data import load_samples
    from vl4pose.models import preset
    from vl4pose.skeletons import SKELETONS
    from vl4pose.train import TrainConfig, Trainer

    samples = load_samples("coco", coco_dir, "val")
    config = TrainConfig(epochs=1, batch_size=4, steps_per_epoch=1, warmup_steps=1)
    return Trainer(preset("tiny"), SKELETONS["coco17"], config, tmp_path_factory.mktemp("coco_run")).fit(
        samples[:8], samples[8:24])


def labels_of(skeleton: str) -> set[str]:
    from common.labelconfig import parse_label_config

    return set(parse_label_config((CONFIGS / f"{skeleton}.xml").read_text()).labels)


def test_two_skeletons_are_served_side_by_side_each_with_its_own_version(
        label_studio, tiny_checkpoint, coco_checkpoint, lspet_dir, coco_dir, tmp_path):
    from backend.services.labelstudio import LabelStudio
    from vl4pose.registry import ModelRegistry

    ls = LabelStudio(label_studio.url, label_studio.token)
    registry = ModelRegistry(tmp_path / "models")
    registry.publish(tiny_checkpoint, "p1-v0")
    registry.publish(coco_checkpoint, "p2-v0")
    images = {"lsp14": [lspet_dir / "images" / f"im{n:05d}.jpg" for n in (1, 2)],
              "coco17": sorted((coco_dir / "val2017").glob("*.jpg"))[:2]}
    root = label_studio.files_root
    projects = {}
    for skeleton, version in (("lsp14", "p1-v0"), ("coco17", "p2-v0")):
        project = ls.create_project(f"side-{skeleton}-{uuid.uuid4().hex[:6]}", (CONFIGS / f"{skeleton}.xml").read_text())
        ls.add_local_storage(project, str(images[skeleton][0].parent), skeleton)
        ls.import_tasks(project, [{"image": f"/data/local-files/?d={p.resolve().relative_to(root).as_posix()}"}
                                  for p in images[skeleton]])
        registry.link_project(project, skeleton=skeleton)
        registry.set_current(version, project)  # what the rank job of each project does
        projects[skeleton] = project
    settings = {"models_dir": registry.root, "image_cache_dir": tmp_path / "cache", "state_dir": tmp_path / "state",
                "torch_threads": 1}
    with BackendProcess(tmp_path / "gunicorn.log", settings) as backend:
        for skeleton, project in projects.items():
            ls.add_ml_backend(project, backend.url, "vl4pose", basic_auth=backend.auth)
            ls.request("retrieve predictions", "POST", "/api/dm/actions",
                       params={"id": "retrieve_tasks_predictions", "project": project},
                       json={"selectedItems": {"all": True, "excluded": []}})
        stored = {}
        for skeleton, project in projects.items():
            tasks = ls.request("list tasks", "GET", "/api/tasks/", params={"project": project, "fields": "all"}).json()
            stored[skeleton] = [p for t in tasks["tasks"] for p in t["predictions"]]
        health = requests.get(f"{backend.url}/health", auth=backend.auth, timeout=10).json()["projects"]
        unlinked = requests.post(f"{backend.url}/predict", auth=backend.auth, timeout=30, json={
            "tasks": [{"id": 1, "data": {"image": "/data/upload/1/x.jpg"}}], "project": "999999.1",
            "label_config": (CONFIGS / "lsp14.xml").read_text()})
    assert {p["model_version"] for p in stored["lsp14"]} == {"p1-v0", "p1-v0-raw"}
    assert {p["model_version"] for p in stored["coco17"]} == {"p2-v0", "p2-v0-raw"}
    for skeleton in projects:
        assert len(stored[skeleton]) == 4  # two tasks, refined and raw each
        labels = {r["value"]["keypointlabels"][0] for p in stored[skeleton] for r in p["result"]}
        assert labels and labels <= labels_of(skeleton), skeleton
    assert health[str(projects["lsp14"])]["skeleton"] == "lsp14"
    assert health[str(projects["coco17"])]["skeleton"] == "coco17"
    assert unlinked.status_code == 404 and unlinked.json()["error"] == "project_not_linked"
    log = (tmp_path / "gunicorn.log").read_text()
    assert "missing or wrong HTTP Basic credentials" not in log  # Label Studio always sent the credentials


def test_a_data_folder_reached_through_a_symbolic_link_is_served(tmp_path, lspet_dir):
    """Finding: with ../shared a link, Label Studio refused the storage path (one side resolved, the other not)."""
    from backend.services.labelstudio import LabelStudio
    from stack.labelstudio import LabelStudioServer

    link = tmp_path / "linked-shared"
    os.symlink(lspet_dir.parent, link)
    server = LabelStudioServer(tmp_path / "ls-data", files_root=link)  # the document root given through the link
    assert server.environment()["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str(lspet_dir.parent.resolve())
    with server:
        ls = LabelStudio(server.url, server.token)
        project = ls.create_project("linked data", (CONFIGS / "lsp14.xml").read_text())
        ls.add_local_storage(project, str(link / "lspet" / "images"), "lspet via link")  # refused before the fix
        ls.import_tasks(project, [{"image": "/data/local-files/?d=lspet/images/im00001.jpg"}])
        image = requests.get(f"{server.url}/data/local-files/", params={"d": "lspet/images/im00001.jpg"},
                             headers=server.headers, timeout=30)
    assert image.status_code == 200 and image.content == (lspet_dir / "images" / "im00001.jpg").read_bytes()
