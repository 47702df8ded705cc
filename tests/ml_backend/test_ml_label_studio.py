"""End to end against a real Label Studio 1.23.2 (the session's ``label_studio`` fixture) and our backend
running under gunicorn on 127.0.0.1: connect, retrieve predictions, rank by score, interactive correction."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import requests
from ml_helpers import CONFIGS, LSP_CONFIG

from stack.process import BackendProcess
from vl4pose.data.sample import image_size
from vl4pose.interactive import resolve_clicked

pytestmark = pytest.mark.integration

IMAGE_NUMBERS = [1, 2, 3, 4, 5, 6]


@pytest.fixture(scope="module")
def backend(tmp_path_factory, served_registry):
    """Our backend under gunicorn (generated HTTP Basic credentials), serving the tiny model."""
    tmp = tmp_path_factory.mktemp("ml_backend_gunicorn")
    settings = {"models_dir": served_registry.root, "image_cache_dir": tmp / "cache", "state_dir": tmp / "state",
                "torch_threads": 1}
    with BackendProcess(tmp / "gunicorn.log", settings, server="gunicorn") as backend:
        yield backend


@pytest.fixture(scope="module")
def predictor(model_registry):
    from vl4pose.predictor import Predictor

    return Predictor(model_registry.path("tiny-v1"))


@pytest.fixture(scope="module")
def project(label_studio, backend, served_registry, lspet_dir, predictor):
    """A project with our LSP config, LSPET tasks imported in DEscending score order (so that a queue
    falling back to sequential order would fail the ranking test), and our backend connected."""
    from label_studio_sdk import LabelStudio

    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    created = ls.projects.create(title=f"ml-backend-{uuid.uuid4().hex[:8]}", label_config=LSP_CONFIG)
    ls.import_storage.local.create(project=created.id, path=str(lspet_dir / "images"), title="lspet")
    files = {n: lspet_dir / "images" / f"im{n:05d}.jpg" for n in IMAGE_NUMBERS}
    scores = {n: predictor.predict(path).score for n, path in files.items()}
    order = sorted(IMAGE_NUMBERS, key=lambda n: -scores[n])
    imported = ls.projects.import_tasks(id=created.id, request=[
        {"image": f"/data/local-files/?d=lspet/images/im{n:05d}.jpg", "number": n} for n in order],
        return_task_ids=True)
    task_ids = dict(zip(order, imported.task_ids))
    served_registry.set_current("tiny-v1", created.id)  # what linking through the coordinator does
    ml = ls.ml.create(project=created.id, url=backend.url, title="vl4pose", is_interactive=True,
                      auth_method="BASIC_AUTH", basic_auth_user=backend.auth[0], basic_auth_pass=backend.auth[1])
    return {"ls": ls, "id": created.id, "ml_id": ml.id, "task_ids": task_ids, "files": files}


def stored_predictions(label_studio, task_id: int) -> list[dict]:
    response = requests.get(f"{label_studio.url}/api/predictions/", params={"task": task_id},
                            headers=label_studio.headers, timeout=30)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def retrieved(project, label_studio):
    project["ls"].actions.create(id="retrieve_tasks_predictions", project=project["id"],
                                 selected_items={"all": True, "excluded": []})
    return {n: stored_predictions(label_studio, task_id) for n, task_id in project["task_ids"].items()}


def test_the_backend_is_connected_with_the_served_version(project, label_studio):
    response = requests.get(f"{label_studio.url}/api/ml/{project['ml_id']}", headers=label_studio.headers, timeout=30)
    backend = response.json()
    assert backend["state"] == "CO" and backend["model_version"] == "tiny-v1"


def test_retrieved_predictions_land_on_the_predictors_pixels(retrieved, project, predictor):
    for n, predictions in retrieved.items():
        by_version = {p["model_version"]: p for p in predictions}
        assert sorted(by_version) == ["tiny-v1", "tiny-v1-raw"], n
        path = project["files"][n]
        expected = predictor.predict(path)
        w, h = image_size(path)
        for version, xy, scores in (("tiny-v1", expected.refined, expected.confidence),
                                    ("tiny-v1-raw", expected.raw, np.clip(expected.peak, 0, 1))):
            stored = by_version[version]
            # ranked in a batch, expected from a single pass: the batch size changes the network's float sums, and the
            # tiny model's flat heatmaps amplify them in the likelihood (0.0043 apart on an AMD EPYC, 2026-12-02)
            assert stored["score"] == pytest.approx(expected.score, abs=1e-2)
            names = [r["value"]["keypointlabels"][0].lower().replace(" ", "_") for r in stored["result"]]
            assert sorted(names) == sorted(expected.keypoint_names[i] for i in np.flatnonzero(expected.placed))
            for item, name in zip(stored["result"], names):
                i = expected.keypoint_names.index(name)
                assert (item["original_width"], item["original_height"]) == (w, h)
                got = (item["value"]["x"] * w / 100, item["value"]["y"] * h / 100)
                assert np.allclose(got, np.clip(xy[i], 0, (w, h)), atol=0.5), (n, name, got, xy[i])
                # batched vs single pass: rounding, and at a near-tie of the tiny model's heatmap peaks the candidate
                # set itself can differ, which moves the max-marginal confidence (0.248 vs 0.262 in a clean-clone run
                # of 2026-12-01) while the chosen position stays
                assert item["score"] == pytest.approx(scores[i], abs=0.05)
    assert sum(len(p["result"]) for ps in retrieved.values() for p in ps) > 0  # something was placed at all


def test_uncertainty_sampling_serves_the_lowest_score_first(retrieved, project, label_studio):
    url, headers = label_studio.url, label_studio.headers
    patch = requests.patch(f"{url}/api/projects/{project['id']}/", headers=headers, timeout=30,
                           json={"model_version": "tiny-v1", "sampling": "Uncertainty sampling"})
    assert patch.status_code == 200, patch.text
    score = {project["task_ids"][n]: next(p["score"] for p in ps if p["model_version"] == "tiny-v1")
             for n, ps in retrieved.items()}
    served = []
    for _ in range(len(score) + 1):
        response = requests.get(f"{url}/api/projects/{project['id']}/next/", headers=headers, timeout=30)
        if response.status_code == 404:
            break
        task = response.json()
        served.append(task["id"])
        project["ls"].annotations.create(id=task["id"], result=[], lead_time=1.0)
    assert sorted(served) == sorted(score)
    assert [score[t] for t in served] == sorted(score.values())
    if len(set(score.values())) > 1:
        assert served != sorted(served)  # tasks were imported by descending score: not the sequential order


def test_interactive_annotating_returns_the_re_solved_skeleton(project, label_studio, predictor):
    n = IMAGE_NUMBERS[0]
    path = project["files"][n]
    w, h = image_size(path)
    click = {"original_width": w, "original_height": h, "image_rotation": 0,
             "value": {"x": 45.0, "y": 30.0, "width": 0.75, "keypointlabels": ["Neck"]}, "is_positive": True,
             "id": "clickA", "from_name": "kp", "to_name": "image", "type": "keypointlabels", "origin": "manual"}
    response = requests.post(f"{label_studio.url}/api/ml/{project['ml_id']}/interactive-annotating",
                             headers=label_studio.headers, timeout=60,
                             json={"task": project["task_ids"][n], "context": {"result": [click]}})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["model_version"] == "tiny-v1"
    # the ML backend's re-solve: the click clamped, the automatic crop re-framed around it (the default rule)
    expected = resolve_clicked(predictor, predictor.analyse(path), {"neck": (0.45 * w, 0.30 * h)},
                               reanalyse=lambda box: predictor.analyse(path, box))
    assert data["score"] == pytest.approx(expected.score, abs=1e-4)
    got = {r["value"]["keypointlabels"][0].lower().replace(" ", "_"): r for r in data["result"]}
    assert (got["neck"]["value"]["x"], got["neck"]["value"]["y"]) == (45.0, 30.0)  # the click, where it was put
    # every placed keypoint, and every label of the draft (the served prediction) even where the re-solve does not
    # place it (which labels the suite's tiny model places varies from run to run)
    task = requests.get(f"{label_studio.url}/api/tasks/{project['task_ids'][n]}/", headers=label_studio.headers,
                        timeout=30).json()
    served = {r["value"]["keypointlabels"][0].lower().replace(" ", "_") for p in task["predictions"]
              if p["model_version"] == "tiny-v1" for r in p["result"]}
    assert served, "the task carries the served prediction"
    assert set(got) == {expected.keypoint_names[i] for i in np.flatnonzero(expected.placed)} | {"neck"} | served
    for name, item in got.items():
        i = expected.keypoint_names.index(name)
        xy = (item["value"]["x"] * w / 100, item["value"]["y"] * h / 100)
        assert np.allclose(xy, np.clip(expected.refined[i], 0, (w, h)), atol=0.5)


def test_malformed_interactive_context_reaches_the_browser_as_an_error(project, label_studio):
    response = requests.post(f"{label_studio.url}/api/ml/{project['ml_id']}/interactive-annotating",
                             headers=label_studio.headers, timeout=60,
                             json={"task": project["task_ids"][IMAGE_NUMBERS[0]], "context": {"result": "oops"}})
    assert response.status_code == 200
    body = response.json()
    assert "data" not in body and body["errors"] and "400" in body["errors"][0]


@pytest.mark.parametrize("skeleton", ["lsp14", "mpii16", "coco17", "hand21"])
def test_label_studio_accepts_each_annotation_config(label_studio, skeleton):
    from label_studio_sdk import LabelStudio

    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    created = ls.projects.create(title=f"ml-config-{skeleton}-{uuid.uuid4().hex[:6]}",
                                 label_config=(CONFIGS / f"{skeleton}.xml").read_text())
    assert created.id and "KeyPointLabels" in ls.projects.get(id=created.id).label_config


def test_versions_and_train_button_go_through_label_studio(project, label_studio):
    url, headers = label_studio.url, label_studio.headers
    versions = requests.get(f"{url}/api/ml/{project['ml_id']}/versions", headers=headers, timeout=30)
    assert versions.status_code == 200 and versions.json()["versions"] == ["tiny-v1"]
    train = requests.post(f"{url}/api/ml/{project['ml_id']}/train", headers=headers, json={}, timeout=30)
    assert train.status_code == 200, train.text  # our /webhook (or legacy /train) answered at once
    backend = requests.get(f"{url}/api/ml/{project['ml_id']}", headers=headers, timeout=30).json()
    assert backend["state"] != "ER", backend.get("error_message")
