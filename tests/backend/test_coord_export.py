"""Dataset export (``python -m backend export``, the API and the dashboard): COCO / LSP / Label Studio files that
load back through ``vl4pose.data.load_samples`` with the same keypoints (real LSPET images), the append-only
annotation history behind ``--round R``, the occluded flag, the export job, and clear errors that leave nothing
behind. Unit tests use the fake Label Studio; the last test uses the real one."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from coord_fakes import TOKEN, gt_results, insert_old_project, sample_for_url
from sqlalchemy import select, text

from backend.errors import CoordinatorError
from backend.models import AnnotationStatus, AnnotationVersion, Project, Round, RoundState
from vl4pose.data import load_samples

HOOK = "/hooks/label-studio"
REPO = Path(__file__).resolve().parents[2]


# -- helpers ----------------------------------------------------------------------------------------------
def occluded(result: dict) -> dict:
    """The per-region "Occluded" choice Label Studio stores for a keypoint region (same id, its x/y)."""
    value = {k: v for k, v in result["value"].items() if k != "keypointlabels"}
    return {**{k: result[k] for k in ("id", "to_name", "original_width", "original_height")},
            "from_name": "occluded", "type": "choices", "value": {**value, "choices": ["Occluded"]}}


@pytest.fixture
def labelled(make_app, fake_ls, link, lspet_pool, hook_headers):
    """An app with 6 linked LSPET tasks, 4 of them annotated with their ground truth through webhooks; the first
    one has its first keypoint marked occluded. Returns (app, project id, {task id: sample})."""
    app = make_app()
    link(app, limit=6, round_budget=100)
    services = app.extensions["vl4pose"]
    with services.db.session() as session:
        project = session.scalars(select(Project)).one()
        config, project_id = dict(project.label_config), project.id
    client = app.test_client()
    samples = {}
    for n, task_id in enumerate(sorted(fake_ls.tasks)[:4]):
        sample = sample_for_url(lspet_pool, fake_ls.tasks[task_id]["data"]["image"])
        results = gt_results(sample, config)
        if n == 0:
            results.append(occluded(results[0]))
        assert client.post(HOOK, json=fake_ls.annotate(task_id, results), headers=hook_headers).status_code == 200
        samples[task_id] = sample
    return app, project_id, samples


def stored(app, project_id: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{task id: (keypoints (K, 2) NaN where missing, visibility (K,))} of the latest stored versions."""
    from backend.services.annotations import keypoints_from_json
    from backend.services.history import latest_per_task, versions_as_of

    with app.extensions["vl4pose"].db.session() as session:
        return {
            v.task_id: (keypoints_from_json(v.keypoints, 14), np.asarray(v.visibility))
            for v in latest_per_task(versions_as_of(session, project_id))
        }


def export(app, project_id: int, fmt: str, out: Path, round_number: int | None = None) -> dict:
    from backend.services.export import export_dataset

    return export_dataset(app.extensions["vl4pose"], project_id, fmt, out, round_number)


def by_task(samples, provenance: dict) -> dict[int, object]:
    """Loaded samples keyed by task id, matched through the provenance file's image names."""
    task_of = {Path(t["image"]).name: t["task_id"] for t in provenance["tasks"]}
    return {task_of[Path(s.image).name]: s for s in samples}


def load_back(fmt: str, out: Path):
    if fmt == "coco":
        return load_samples("coco", out / "person_keypoints.json", skeleton="lsp14")
    if fmt == "lsp":
        return load_samples("lspet", out)
    return load_samples("labelstudio", out / "tasks.json", skeleton="lsp14")


# -- round trips ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["coco", "lsp", "labelstudio"])
def test_an_export_loads_back_through_the_projects_loaders_with_identical_keypoints(labelled, tmp_path, fmt):
    app, project_id, samples = labelled
    out = tmp_path / f"export-{fmt}"
    summary = export(app, project_id, fmt, out)
    assert summary["annotations"] == 4 and summary["outcomes"] == {"no suggestion": 4}
    provenance = json.loads((out / "provenance.json").read_text())
    loaded = by_task(load_back(fmt, out), provenance)
    truth = stored(app, project_id)
    assert sorted(loaded) == sorted(truth) == sorted(samples)
    for task_id, (keypoints, visibility) in truth.items():
        sample = loaded[task_id]
        labelled_ = visibility > 0
        np.testing.assert_array_equal(sample.visibility > 0, labelled_)
        if fmt == "labelstudio":  # percentages of the image and back: float rounding only
            np.testing.assert_allclose(sample.keypoints[labelled_], keypoints[labelled_], rtol=0, atol=1e-9)
        else:
            np.testing.assert_array_equal(sample.keypoints[labelled_], keypoints[labelled_])
        assert np.isnan(sample.keypoints[~labelled_]).all()
        # in image pixels of the very image that was labelled: the submitted ground truth comes back
        source = samples[task_id]
        inside = labelled_ & np.isfinite(source.keypoints).all(axis=1)
        np.testing.assert_allclose(sample.keypoints[inside], source.keypoints[inside], atol=0.01)
        assert Path(sample.image).read_bytes() == Path(source.image).read_bytes()
    first = min(truth)
    expected = {"coco": 1, "labelstudio": 1, "lsp": 2}[fmt]  # LSPET's flag cannot say "occluded"
    assert truth[first][1][0] == 1 and loaded[first].visibility[0] == expected
    assert provenance["tasks"][0]["keypoints_occluded"] == 1 and provenance["round"] is None


def test_coco_export_has_visibility_boxes_names_and_one_based_edges(labelled, tmp_path):
    from vl4pose.skeletons import get_skeleton

    app, project_id, _ = labelled
    export(app, project_id, "coco", tmp_path / "coco")
    coco = json.loads((tmp_path / "coco" / "person_keypoints.json").read_text())
    skeleton = get_skeleton("lsp14")
    [category] = coco["categories"]
    assert category["keypoints"] == list(skeleton.keypoints)
    assert category["skeleton"] == [[p + 1, c + 1] for p, c in skeleton.edges]
    assert min(min(e) for e in category["skeleton"]) == 1
    for ann in coco["annotations"]:
        flat = np.asarray(ann["keypoints"], float).reshape(-1, 3)
        assert set(flat[:, 2]) <= {0, 1, 2} and ann["num_keypoints"] == int((flat[:, 2] > 0).sum())
        pts = flat[flat[:, 2] > 0, :2]
        x, y, w, h = ann["bbox"]
        assert (x, y) == (pts[:, 0].min(), pts[:, 1].min())
        assert x + w == pytest.approx(pts[:, 0].max()) and y + h == pytest.approx(pts[:, 1].max())
    images = {i["id"]: i for i in coco["images"]}
    assert all((tmp_path / "coco" / images[a["image_id"]]["file_name"]).is_file() for a in coco["annotations"])


def test_lsp_export_uses_the_lspet_layout(labelled, tmp_path):
    import scipy.io

    app, project_id, _ = labelled
    export(app, project_id, "lsp", tmp_path / "lsp")
    joints = scipy.io.loadmat(str(tmp_path / "lsp" / "joints.mat"))["joints"]
    assert joints.shape == (14, 3, 4) and set(np.unique(joints[:, 2])) <= {0.0, 1.0}
    assert sorted(p.name for p in (tmp_path / "lsp" / "images").iterdir()) == [f"im{n:05d}.jpg" for n in range(1, 5)]


# -- history and --round -------------------------------------------------------------------------------
def test_round_exports_read_the_append_only_history(labelled, tmp_path, fake_ls, hook_headers):
    from backend.services.rounds import open_round

    app, project_id, samples = labelled
    services = app.extensions["vl4pose"]
    with services.db.session() as session:
        project = session.get(Project, project_id)
        session.scalars(select(Round)).one().state = RoundState.DONE
        open_round(session, project, None, [])
    first, second = sorted(samples)[:2]
    created = [fake_ls.tasks[t]["annotations"][0]["id"] for t in sorted(samples)]
    [a1] = fake_ls.tasks[first]["annotations"]
    [a2] = fake_ls.tasks[second]["annotations"]
    moved = [dict(r, value=dict(r["value"], x=r["value"]["x"] + 1.0)) if r["type"] == "keypointlabels" else r
             for r in a1["result"]]
    client = app.test_client()
    assert client.post(HOOK, json=fake_ls.update(a1["id"], moved), headers=hook_headers).status_code == 200
    assert client.post(HOOK, json=fake_ls.delete(a2["id"]), headers=hook_headers).status_code == 200

    with services.db.session() as session:
        rows = session.scalars(select(AnnotationVersion).order_by(AnnotationVersion.id)).all()
        history = [(v.annotation_id, v.round_number, v.status) for v in rows]
    assert history == [(a, 1, AnnotationStatus.SUBMITTED) for a in created] + [
        (a1["id"], 2, AnnotationStatus.SUBMITTED), (a2["id"], 2, AnnotationStatus.DELETED)]

    export(app, project_id, "coco", tmp_path / "r1", round_number=1)
    export(app, project_id, "coco", tmp_path / "now")
    after_round_1 = by_task(load_back("coco", tmp_path / "r1"), json.loads((tmp_path / "r1/provenance.json").read_text()))
    now = by_task(load_back("coco", tmp_path / "now"), json.loads((tmp_path / "now/provenance.json").read_text()))
    assert sorted(after_round_1) == sorted(samples) and sorted(now) == sorted(set(samples) - {second})
    shift = now[first].keypoints - after_round_1[first].keypoints
    width = fake_ls.tasks[first]["annotations"][0]["result"][0]["original_width"]
    placed = np.isfinite(shift).all(axis=1)
    np.testing.assert_allclose(shift[placed, 0], width / 100, atol=2e-3)  # 1 % of the width, to the stored mm
    np.testing.assert_allclose(shift[placed, 1], 0, atol=1e-9)
    with pytest.raises(CoordinatorError, match=r"rounds 0\.\.2"):
        export(app, project_id, "coco", tmp_path / "r7", round_number=7)
    with pytest.raises(CoordinatorError, match="no submitted annotation with keypoints up to round 0"):
        export(app, project_id, "coco", tmp_path / "r0", round_number=0)


def test_migration_0004_backfills_one_version_per_existing_annotation(tmp_path):
    from sqlalchemy import inspect

    from backend.db import Database, current_revision, downgrade, upgrade

    db = Database(f"sqlite:///{tmp_path / 'old.sqlite'}")
    upgrade(db.engine, "0003")
    with db.engine.begin() as connection:
        insert_old_project(connection)
        connection.execute(text(
            "INSERT INTO round (id, project_id, number, state, budget, selected_tasks, labelled_count, accepted_count, "
            "corrected_count, metrics, timings, opened_at) VALUES (5, 1, 2, 'open', 5, '[]', 0, 0, 0, '{}', '{}', "
            "'2026-01-01 00:00:00')"))
        for annotation, source, keypoints in ((11, "webhook", "[[1.5, 2.0], null]"), (12, "tombstone", "[]")):
            connection.execute(text(
                "INSERT INTO annotation_record (project_id, round_id, task_id, annotation_id, status, updated_at, "
                "image_url, keypoints, keypoint_count, holdout, source, first_seen_at) VALUES (1, 5, 3, :a, "
                "'submitted', '2026-01-02 00:00:00', 'u', :k, 1, 0, :s, '2026-01-02 00:00:00')"),
                {"a": annotation, "s": source, "k": keypoints})
    upgrade(db.engine, "0004")
    assert current_revision(db.engine) == "0004"
    with db.engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT annotation_id, round_number, status, keypoints, visibility, source FROM annotation_version")).all()
    assert [tuple(r) for r in rows] == [(11, 2, "submitted", "[[1.5, 2.0], null]", "[2, 0]", "migration")]
    downgrade(db.engine, "0003")
    assert "annotation_version" not in inspect(db.engine).get_table_names()


# -- bad input: clear errors, nothing written ---------------------------------------------------------------
def test_bad_requests_fail_clearly_and_leave_nothing_behind(labelled, make_app, tmp_path):
    from backend.services.export import export_dataset

    app, project_id, _ = labelled
    services = app.extensions["vl4pose"]
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    with pytest.raises(CoordinatorError, match=r"unknown export format 'yolo'; choose one of \['coco', 'lsp', 'labelstudio'\]"):
        export(app, project_id, "yolo", tmp_path / "a")
    existing = tmp_path / "taken"
    existing.mkdir()
    with pytest.raises(CoordinatorError, match="taken already exists"):
        export(app, project_id, "coco", existing)
    with pytest.raises(CoordinatorError, match="does not exist; create it"):
        export(app, project_id, "coco", tmp_path / "missing" / "out")
    with pytest.raises(CoordinatorError, match="project 99 does not exist"):
        export(app, 99, "coco", tmp_path / "b")
    with services.db.session() as session:
        session.add(Project(ls_project_id=500, title="body", skeleton="coco17", round_budget=5, label_config={}))
        session.add(Project(ls_project_id=501, title="empty", skeleton="lsp14", round_budget=5, label_config={}))
    with services.db.session() as session:
        coco17, empty = (session.scalar(select(Project.id).where(Project.ls_project_id == n)) for n in (500, 501))
    with pytest.raises(CoordinatorError, match="LSP format holds the 14 LSP keypoints only.*'coco17'.*coco or labelstudio"):
        export(app, coco17, "lsp", tmp_path / "c")
    with pytest.raises(CoordinatorError, match=f"project {empty} has no submitted annotation with keypoints; label"):
        export_dataset(services, empty, "coco", tmp_path / "d", sync=False)
    # an image gone mid-way: the error names the task; no output, no temporary folder
    with services.db.session() as session:
        version = session.scalars(select(AnnotationVersion).order_by(AnnotationVersion.id.desc())).first()
        version.image_url, gone_task = "/data/upload/1/gone.jpg", version.task_id
    with pytest.raises(CoordinatorError, match=f"1 image\\(s\\) cannot be read, e.g. \\['task {gone_task}"):
        export_dataset(services, project_id, "coco", tmp_path / "e.zip", sync=False)
    assert [p.name for p in tmp_path.iterdir()] == ["taken"] and not any(existing.iterdir())


# -- job, API, dashboard, CLI ----------------------------------------------------------------------------
def test_the_api_runs_an_export_job_and_serves_its_zip(labelled, tmp_path, auth):
    app, project_id, _ = labelled
    client = app.test_client()
    bad = client.post(f"/api/projects/{project_id}/exports", json={"format": "lsp", "round": "x"}, headers=auth)
    assert bad.status_code == 400 and "'round' must be an integer" in bad.json["message"]
    bad = client.post(f"/api/projects/{project_id}/exports", json={"format": "csv"}, headers=auth)
    assert bad.status_code == 400 and "unknown export format 'csv'" in bad.json["message"]
    started = client.post(f"/api/projects/{project_id}/exports", json={"format": "lsp"}, headers=auth)
    assert started.status_code == 202, started.json
    job_id = started.json["id"]  # the immediate queue ran the job inside the request
    status = client.get(f"/api/projects/{project_id}/exports/{job_id}", headers=auth).json
    assert status["kind"] == "export" and status["state"] == "done" and status["annotations"] == 4
    assert status["stage"] == "exported 4 annotations" and status["progress"] == 1.0
    listing = client.get(f"/api/projects/{project_id}/exports", headers=auth).json["exports"]
    assert [e["id"] for e in listing] == [job_id]
    response = client.get(status["download_url"], headers=auth)
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert f"project-{project_id}-lsp.zip" in response.headers["Content-Disposition"]
    archive = tmp_path / "download.zip"
    archive.write_bytes(response.data)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "unzipped")
    assert len(load_back("lsp", tmp_path / "unzipped")) == 4
    assert client.get(status["download_url"]).status_code == 401
    assert client.get(f"/api/projects/{project_id}/exports/999/download", headers=auth).status_code == 404


def test_the_dashboard_starts_an_export_and_links_the_download(labelled):
    app, project_id, _ = labelled
    client = app.test_client()
    assert client.post("/login", data={"token": TOKEN, "next": "/"}).status_code == 302
    page = client.get(f"/projects/{project_id}").get_data(as_text=True)
    assert 'id="export"' in page and 'value="lsp"' in page
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    response = client.post(f"/projects/{project_id}/export", data={"format": "labelstudio", "round": "1",
                                                                  "csrf_token": csrf})
    assert response.status_code == 302 and response.headers["Location"].endswith("#export")
    page = client.get(f"/projects/{project_id}").get_data(as_text=True)
    assert "Export job" in page and f"/api/projects/{project_id}/exports/" in page and ">download</a>" in page
    response = client.post(f"/projects/{project_id}/export", data={"format": "labelstudio", "round": "x1",
                                                                  "csrf_token": csrf}, follow_redirects=True)
    assert "round must be a round number" in response.get_data(as_text=True)


def test_the_cli_exports_directly_and_reports_errors(labelled, tmp_path, monkeypatch, capsys):
    from backend.cli import main

    app, project_id, _ = labelled
    settings = app.extensions["vl4pose"].settings
    monkeypatch.setenv("VL4POSE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("VL4POSE_STORAGE_DIR", str(settings.storage_path))
    monkeypatch.setenv("VL4POSE_LABEL_STUDIO_FILES_ROOT", settings.label_studio_files_root)
    monkeypatch.setenv("VL4POSE_QUEUE", "memory")
    out = tmp_path / "cli.zip"
    argv = ["export", "--project", str(project_id), "--format", "labelstudio", "--out", str(out), "--no-sync"]
    assert main(argv) == 0
    assert "exported 4 annotations" in capsys.readouterr().out
    with zipfile.ZipFile(out) as zf:
        assert {"tasks.json", "provenance.json"} <= set(zf.namelist())
    assert main(argv) == 1
    assert "already exists; choose a new --out path" in capsys.readouterr().err


# -- label configs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lsp14", "coco17", "mpii16", "hand21"])
def test_every_label_config_has_the_occluded_flag_and_both_parsers_accept_it(name):
    import xml.etree.ElementTree as ET

    from backend.services.configs import parse_config
    from common.labelconfig import map_labels, parse_label_config
    from vl4pose.skeletons import get_skeleton

    xml = (REPO / "annotation_configs" / f"{name}.xml").read_text()
    [choices] = ET.fromstring(xml).iter("Choices")
    assert choices.get("perRegion") == "true" and [c.get("value") for c in choices] == ["Occluded"]
    skeleton = get_skeleton(name)
    assert parse_config(xml, skeleton)["missing"] == []
    config = parse_label_config(xml)
    assert config.keypoint_control == "kp" and map_labels(config, skeleton).labels.count(None) == 0


def test_the_coordinator_reads_a_config_with_the_shared_parser_and_refuses_what_it_refuses():
    from backend.services.configs import parse_config
    from vl4pose.skeletons import get_skeleton

    lsp = get_skeleton("lsp14")
    head = '<View><Image name="img" value="$photo"/><KeyPointLabels name="points" toName="img">'
    config = parse_config(head + '<Label value="neck"/></KeyPointLabels></View>', lsp)
    assert (config["from_name"], config["to_name"], config["image_key"]) == ("points", "img", "photo")
    assert config["labels"][12] == "neck" and config["labels"].count(None) == 13 and len(config["missing"]) == 13
    for xml, fragment in [
        ("<View><Image", "not valid XML"),
        (head + '<Label value="Neck"/><Label value="neck "/></KeyPointLabels></View>', "both name keypoint 'neck'"),
        (head + '<Label value="Tail"/></KeyPointLabels></View>', r"\['Tail'\] .* not keypoints of skeleton 'lsp14'"),
        ('<View><Image name="img" value="$photo"/></View>', "KeyPointLabels"),
    ]:
        with pytest.raises(CoordinatorError, match=fragment):
            parse_config(xml, lsp)


def test_occluded_marks_are_read_by_region_id_or_position():
    from vl4pose.data.labelstudio import results_to_keypoints
    from vl4pose.skeletons import get_skeleton

    def point(region, label, x):
        return {"id": region, "type": "keypointlabels", "original_width": 200, "original_height": 100,
                "value": {"x": x, "y": 50.0, "keypointlabels": [label]}}

    results = [point("a", "Neck", 10.0), point("b", "Head Top", 20.0), point("c", "Right Ankle", 30.0),
               {"id": "b", "type": "choices", "value": {"x": 20.0, "y": 50.0, "choices": ["Occluded"]}},
               {"type": "choices", "value": {"x": 30.0, "y": 50.0, "choices": ["occluded"]}},
               {"id": "a", "type": "choices", "value": {"choices": ["Visible"]}}]
    skeleton = get_skeleton("lsp14")
    keypoints, visibility, _ = results_to_keypoints(results, skeleton)
    assert [visibility[skeleton.index(n)] for n in ("neck", "head_top", "right_ankle", "left_ankle")] == [2, 1, 1, 0]
    assert keypoints[skeleton.index("head_top")].tolist() == [40.0, 50.0]


# -- integration: a real Label Studio, real LSPET labels ---------------------------------------------------
@pytest.mark.integration
def test_lspet_labels_imported_into_a_real_label_studio_export_and_load_back_unchanged(
    label_studio, tmp_path, lspet_dir
):
    """12 LSPET pool images linked with their labels as annotations (the real Label Studio stores them), one
    re-annotated with a per-region "Occluded" choice through Label Studio's API; each format then loads back
    with the coordinator's stored keypoints and, for keypoints inside the image, LSPET's own joints."""
    import time

    from backend import create_app
    from backend.services.linking import LinkRequest, link_project
    from coord_fakes import base_config

    app = create_app(base_config(tmp_path, queue="memory", label_studio_url=label_studio.url,
                                 label_studio_token=label_studio.token, public_url="http://127.0.0.1:9"))
    services = app.extensions["vl4pose"]
    try:
        linked = link_project(services, LinkRequest(dataset="lspet", data=str(lspet_dir), split="pool", limit=12,
                                                    labels="annotations", round_budget=100,
                                                    title="export-it").validate())
        assert linked.annotations_imported == 12
        truth = {s.sample_id: s for s in load_samples("lspet", lspet_dir, "pool")[:12]}
        [task] = [t for t in services.ls().export_annotated(linked.ls_project_id)
                  if t["data"]["image"].endswith("/" + sorted(truth)[0] + ".jpg")]
        results = task["annotations"][0]["result"]
        services.ls().create_annotation(task["id"], results + [occluded(results[0])])  # its webhook goes nowhere

        for fmt in ("coco", "lsp", "labelstudio"):
            started = time.monotonic()
            summary = export(app, linked.project_id, fmt, tmp_path / fmt)  # reads Label Studio first (reconcile)
            assert summary["annotations"] == 12, summary
            print(f"export {fmt}: 12 annotations in {time.monotonic() - started:.2f} s")
            provenance = json.loads((tmp_path / fmt / "provenance.json").read_text())
            rounds = {t["task_id"]: t["round"] for t in provenance["tasks"]}
            assert rounds == {t: int(t == task["id"]) for t in rounds}  # imported before round 1; re-annotated in 1
            loaded = by_task(load_back(fmt, tmp_path / fmt), provenance)
            for task_id, (keypoints, visibility) in stored(app, linked.project_id).items():
                sample, source = loaded[task_id], next(t for t in provenance["tasks"] if t["task_id"] == task_id)
                labelled_ = visibility > 0
                np.testing.assert_allclose(sample.keypoints[labelled_], keypoints[labelled_], rtol=0, atol=1e-9)
                lspet = truth[Path(source["source_image"]).stem]
                width, height = lspet.load_image().shape[1::-1]
                inside = lspet.labelled & (lspet.keypoints >= 0).all(1) & (lspet.keypoints <= (width, height)).all(1)
                np.testing.assert_array_equal(labelled_, lspet.labelled)
                np.testing.assert_allclose(sample.keypoints[inside], lspet.keypoints[inside], atol=1e-3)
                occluded_expected = task_id == task["id"] and fmt != "lsp"
                assert (sample.visibility[0] == 1) == occluded_expected
    finally:
        services.close()
