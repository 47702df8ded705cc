"""Linking variants: existing labels as annotations or ground truth, uploads, re-linking, no initial model."""

from __future__ import annotations

import shutil

import pytest

from coord_fakes import gt_results, sample_for_url
from sqlalchemy import select

from backend.models import AnnotationRecord, HoldoutSample, Job, JobState, ModelVersion, Project, Round, RoundState


def _rows(app, model):
    with app.extensions["vl4pose"].db.session() as session:
        return session.scalars(select(model)).all()


def test_existing_labels_become_annotations_that_train_the_first_model(make_app, fake_ls, link):
    app = make_app(holdout_fraction=0.0)
    result = link(app, limit=5, labels="annotations")
    assert result.tasks_imported == 5 and result.annotations_imported == 5 and result.image_source == "local-files"
    assert all(len(t["annotations"]) == 1 for t in fake_ls.tasks.values())
    records = _rows(app, AnnotationRecord)
    assert len(records) == 5 and all(r.round_id is None and r.keypoint_count > 0 for r in records)
    [round_] = _rows(app, Round)
    assert round_.labelled_count == 0  # imported labels do not eat the first round's budget
    [project] = _rows(app, Project)
    assert project.validation_policy == "share"


def test_existing_labels_as_ground_truth_form_the_held_out_set(make_app, fake_ls, link):
    app = make_app()
    result = link(app, limit=5, labels="ground-truth")
    assert result.tasks_imported == 0 and result.holdout_samples == 5
    [project] = _rows(app, Project)
    assert project.validation_policy == "ground_truth"
    samples = _rows(app, HoldoutSample)
    assert len(samples) == 5 and all(s.image.endswith(".jpg") and len(s.keypoints) == 14 for s in samples)


def test_a_folder_outside_the_files_root_is_uploaded_and_relinking_adds_nothing(
    make_app, fake_ls, link, tmp_path, lspet_dir
):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("im00001.jpg", "im00002.jpg"):
        shutil.copy(lspet_dir / "images" / name, folder / name)
    (folder / "notes.txt").write_text("not an image")
    app = make_app()
    first = link(app, dataset=None, data=None, split=None, images=str(folder))
    assert first.image_source == "upload" and first.tasks_imported == 2
    assert sorted(t["data"]["image"].rsplit("-", 1)[1] for t in fake_ls.tasks.values()) == [
        "im00001.jpg",
        "im00002.jpg",
    ]
    again = link(app, dataset=None, data=None, split=None, images=str(folder), project_id=first.ls_project_id)
    assert again.tasks_imported == 0 and again.project_id == first.project_id and again.webhook_id == first.webhook_id
    assert len(fake_ls.tasks) == 2 and len(fake_ls.webhooks_) == 1 and len(_rows(app, Round)) == 1


def test_without_an_initial_model_the_first_round_trains_from_the_preset(make_app, fake_ls, link, lspet_pool):
    app = make_app(round_budget=2, train_preset="tiny")
    result = link(app, limit=5)
    [round_] = _rows(app, Round)
    assert round_.model_version is None and fake_ls.predictions == []
    [project] = _rows(app, Project)
    client = app.test_client()
    for task_id in sorted(fake_ls.tasks)[:2]:
        sample = sample_for_url(lspet_pool, fake_ls.tasks[task_id]["data"]["image"])
        body = fake_ls.annotate(task_id, gt_results(sample, project.label_config))
        client.post(
            "/hooks/label-studio",
            json=body,
            headers={"X-VL4Pose-Secret": app.extensions["vl4pose"].settings.webhook_secret},
        )
    rounds = sorted(_rows(app, Round), key=lambda r: r.number)
    assert [r.state for r in rounds] == [RoundState.DONE, RoundState.OPEN]
    assert rounds[0].metrics["served_pck"] is None and rounds[0].accepted_count == 0  # nothing was served
    [version] = _rows(app, ModelVersion)
    assert version.version == f"p{result.ls_project_id}-v1" and version.parent is None
    assert all(j.state == JobState.DONE for j in _rows(app, Job))
    assert len(fake_ls.predictions) == 3


def test_a_coco_file_links_with_its_skeleton_and_one_annotation_per_image(make_app, fake_ls, link, coco_dir):
    app = make_app()
    result = link(
        app, skeleton="coco17", dataset="coco", data=str(coco_dir), split="val", limit=None, labels="annotations"
    )
    tasks = list(fake_ls.tasks.values())
    assert result.tasks_imported == len(tasks) == result.annotations_imported  # one task per image, best person
    assert len({t["data"]["image"] for t in tasks}) == len(tasks)
    assert all(t["data"]["image"].startswith("/data/local-files/?d=coco_mini/val2017/") for t in tasks)
    labels = {r["value"]["keypointlabels"][0] for t in tasks for r in t["annotations"][0]["result"]}
    assert "Nose" in labels or "nose" in {label.lower() for label in labels}
    [project] = _rows(app, Project)
    assert project.skeleton == "coco17" and len(project.label_config["labels"]) == 17


def test_a_label_studio_export_links_with_its_labels(make_app, fake_ls, link, lspet_pool, tmp_path):
    import json

    from backend.services.configs import config_for, parse_config
    from vl4pose.skeletons import LSP14

    config = parse_config(config_for(LSP14), LSP14)
    samples = list(lspet_pool.values())[:3]
    export = [
        {"id": i + 1, "data": {"image": str(s.image)}, "annotations": [{"id": 10 + i, "result": gt_results(s, config)}]}
        for i, s in enumerate(samples)
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    app = make_app()
    result = link(app, dataset="labelstudio", data=str(path), split=None, labels="annotations")
    assert result.tasks_imported == 3 and result.annotations_imported == 3
    imported = sorted(fake_ls.tasks.values(), key=lambda t: t["id"])
    assert [t["data"]["image"].rsplit("/", 1)[1] for t in imported] == [s.image.name for s in samples]

    def points(results):
        return {r["value"]["keypointlabels"][0]: (r["value"]["x"], r["value"]["y"]) for r in results}

    got, sent = points(imported[0]["annotations"][0]["result"]), points(export[0]["annotations"][0]["result"])
    assert got.keys() == sent.keys() and all(got[k] == pytest.approx(sent[k], abs=1e-6) for k in sent)


def test_linking_adds_a_data_manager_view_ordered_by_score_once(make_app, fake_ls, link):
    from backend.services.linking import QUEUE_VIEW

    app = make_app()
    first = link(app)
    [view] = fake_ls.views(first.ls_project_id)
    assert view["id"] == first.view_id and view["title"] == QUEUE_VIEW
    assert view["data"]["ordering"] == ["tasks:predictions_score"]  # "Label All Tasks" follows the tab's order
    again = link(app, project_id=first.ls_project_id)
    assert again.view_id == first.view_id and len(fake_ls.views(first.ls_project_id)) == 1


def test_a_re_link_finds_the_tab_under_its_old_title(make_app, fake_ls, link):
    from backend.services.linking import LEGACY_QUEUE_VIEWS

    app = make_app()
    first = link(app)
    [view] = fake_ls.views(first.ls_project_id)
    view["title"] = LEGACY_QUEUE_VIEWS[0]  # a project linked before the tab was renamed
    again = link(app, project_id=first.ls_project_id)
    assert again.view_id == first.view_id and len(fake_ls.views(first.ls_project_id)) == 1
