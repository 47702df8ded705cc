"""Correction effort: keypoints an annotator moved beyond tolerance, added or deleted relative to the served
suggestion; stored per annotation record, averaged per round, and the migration that adds it."""

from __future__ import annotations

import numpy as np
import pytest
from coord_fakes import insert_old_project
from sqlalchemy import inspect, select, text

from backend.db import Database, downgrade, upgrade
from backend.models import AnnotationRecord, Project, Round, TaskPrediction
from backend.services.annotations import keypoints_to_json, upsert_annotation
from backend.services.rounds import refresh_stats
from backend.services.served import PCK_ALPHA, compare_poses, correction_effort
from vl4pose.data.labelstudio import keypoints_to_results
from vl4pose.skeletons import get_skeleton

LSP = get_skeleton("lsp14")
IMAGE = (400, 600)


def _pose() -> np.ndarray:
    """(14, 2) an upright lsp14 figure in a 400 x 600 image; torso = |l_shoulder - r_hip| etc."""
    rng = np.random.default_rng(3)
    pose = rng.uniform(80, 320, size=(LSP.num_keypoints, 2))
    lsho, rhip, rsho, lhip = LSP.torso
    pose[lsho], pose[rsho] = (240, 200), (160, 200)
    pose[lhip], pose[rhip] = (230, 360), (170, 360)
    return pose


def _torso(pose: np.ndarray) -> float:
    lsho, rhip, rsho, lhip = LSP.torso
    return max(np.linalg.norm(pose[lsho] - pose[rhip]), np.linalg.norm(pose[rsho] - pose[lhip]))


def _free_keypoint() -> int:
    return next(i for i in range(LSP.num_keypoints) if i not in LSP.torso)


def test_an_unchanged_pose_needs_no_correction():
    pose = _pose()
    effort = correction_effort(pose, pose.copy(), LSP)
    assert (effort.moved, effort.added, effort.deleted, effort.total) == (0, 0, 0, 0)
    assert effort.tolerance_px == pytest.approx(PCK_ALPHA * _torso(pose))


def test_a_keypoint_moved_within_tolerance_is_no_correction_and_beyond_it_is_one():
    served = _pose()
    tolerance = PCK_ALPHA * _torso(served)
    i = _free_keypoint()
    for distance, moved in ((0.9 * tolerance, 0), (1.1 * tolerance, 1)):
        submitted = served.copy()
        submitted[i] += (distance * 0.6, distance * 0.8)
        effort = correction_effort(served, submitted, LSP)
        assert (effort.moved, effort.total) == (moved, moved), distance


def test_added_and_deleted_keypoints_count_once_each():
    served, submitted = _pose(), _pose()
    free = [i for i in range(LSP.num_keypoints) if i not in LSP.torso]
    served[free[0]] = np.nan  # the suggestion lacked it; the annotator placed it
    submitted[free[1]] = np.nan  # suggested, deleted by the annotator
    submitted[free[2]] += 200.0  # moved far
    effort = correction_effort(served, submitted, LSP)
    assert (effort.moved, effort.added, effort.deleted, effort.total) == (1, 1, 1, 3)


def test_without_a_torso_reference_any_move_beyond_a_pixel_counts():
    served = _pose()
    submitted = served.copy()
    lsho, rhip, rsho, lhip = LSP.torso
    submitted[[rhip, lhip]] = np.nan  # no shoulder-hip pair left in the submitted pose: no tolerance
    i = _free_keypoint()
    submitted[i] += (0.6, 0.0)
    effort = correction_effort(served, submitted, LSP)
    assert effort.tolerance_px is None and (effort.moved, effort.deleted) == (0, 2)
    submitted[i] += (3.0, 0.0)
    assert correction_effort(served, submitted, LSP).moved == 1


@pytest.mark.parametrize("seed", range(6))
def test_moved_plus_added_is_what_served_pck_counts_as_wrong(seed):
    rng = np.random.default_rng(seed)
    served, submitted = _pose(), _pose()
    submitted += rng.normal(0, 25, submitted.shape)
    free = [i for i in range(LSP.num_keypoints) if i not in LSP.torso]
    served[rng.choice(free, 2, replace=False)] = np.nan
    submitted[rng.choice(free, 2, replace=False)] = np.nan
    correct, total, _ = compare_poses(served, submitted, LSP)
    effort = correction_effort(served, submitted, LSP)
    assert total - correct == effort.moved + effort.added
    assert effort.deleted == int((np.isfinite(served).all(1) & ~np.isfinite(submitted).all(1)).sum())


# -- stored per record, averaged per round --------------------------------------------------------------------------
def _results(pose: np.ndarray) -> list[dict]:
    placed = np.isfinite(pose).all(axis=1)
    return keypoints_to_results(np.nan_to_num(pose), IMAGE, list(LSP.keypoints), placed)


@pytest.fixture
def database(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'effort.sqlite'}")
    db.upgrade()
    with db.session() as session:
        project = Project(ls_project_id=7, title="effort", skeleton="lsp14", round_budget=10,
                          validation_policy="ground_truth", label_config={"image_key": "image"})
        session.add(project)
        session.flush()
        session.add(Round(project_id=project.id, number=1, model_version="v0", budget=10))
    return db


def test_records_store_the_effort_and_the_round_averages_the_served_tasks_apart_from_the_unserved(database):
    served = _pose()
    moved_far = served.copy()
    moved_far[_free_keypoint()] += 150.0
    with database.session() as session:
        project = session.scalar(select(Project))
        # task 1: accepted as served (prediction in the event); task 2: one keypoint moved far (stored prediction
        # of the round's version); task 3: no suggestion at all (no prediction stored, labelled from scratch with
        # 12 keypoints)
        prediction = {"model_version": "v0", "result": _results(served)}
        session.add(TaskPrediction(project_id=project.id, task_id=2, model_version="v0", score=0.5,
                                   log_likelihood=-1.0, image_url="/x.jpg", image_size=list(IMAGE),
                                   keypoints=keypoints_to_json(served), placed=[True] * LSP.num_keypoints,
                                   confidence=[1.0] * LSP.num_keypoints))
        session.flush()
        scratch = served.copy()
        scratch[:2] = np.nan
        annotations = [
            {"id": 11, "task": 1, "result": _results(served), "prediction": prediction,
             "updated_at": "2026-11-30T06:00:00Z"},
            {"id": 12, "task": 2, "result": _results(moved_far), "updated_at": "2026-11-30T06:00:01Z"},
            {"id": 13, "task": 3, "result": _results(scratch), "updated_at": "2026-11-30T06:00:02Z"},
        ]
        for annotation in annotations:
            upsert_annotation(session, project, annotation, None, "webhook")
        records = {r.task_id: r for r in session.scalars(select(AnnotationRecord))}
        assert [records[t].corrections for t in (1, 2, 3)] == [0, 1, 12]
        assert [records[t].served_total is None for t in (1, 2, 3)] == [False, False, True]
        round_ = session.scalar(select(Round))
        refresh_stats(session, round_)
        metrics = dict(round_.metrics)
    assert metrics["corrections_per_task"] == pytest.approx(0.5) and metrics["no_correction_share"] == 0.5
    assert metrics["effort_tasks"] == 2 and metrics["unserved_tasks"] == 1
    assert metrics["unserved_keypoints_per_task"] == 12


def test_migration_0006_adds_the_column_fills_unserved_records_and_downgrades(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'old.sqlite'}")
    upgrade(db.engine, "0005")
    with db.engine.begin() as connection:
        insert_old_project(connection)
        for id_, status, total in ((1, "submitted", None), (2, "submitted", 14), (3, "cancelled", None)):
            connection.execute(text(
                "INSERT INTO annotation_record (id, project_id, task_id, annotation_id, status, image_url, keypoints, "
                "keypoint_count, served_total, holdout, source, first_seen_at) VALUES (:id, 1, :id, :id, :status, "
                "'', '[]', 9, :total, 0, 'webhook', '2026-01-01 00:00:00')"), {"id": id_, "status": status,
                                                                               "total": total})
    upgrade(db.engine, "0006")
    with db.engine.connect() as connection:
        rows = connection.execute(text("SELECT id, corrections FROM annotation_record ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [(1, 9), (2, None), (3, None)]
    downgrade(db.engine, "0005")
    assert "corrections" not in {c["name"] for c in inspect(db.engine).get_columns("annotation_record")}


def test_the_dashboard_and_the_api_show_the_rounds_correction_effort(make_app, link):
    from coord_fakes import TOKEN

    app = make_app(queue="memory")
    link(app, limit=4)
    services = app.extensions["vl4pose"]
    with services.db.session() as session:
        round_ = session.scalar(select(Round))
        for annotation_id, corrections, served_total in ((1, 0, 14), (2, 3, 14), (3, 12, None)):
            session.add(AnnotationRecord(project_id=round_.project_id, round_id=round_.id, task_id=annotation_id,
                                         annotation_id=annotation_id, keypoint_count=12, corrections=corrections,
                                         served_total=served_total, served_correct=served_total and 11))
        session.flush()
        refresh_stats(session, round_)
    client = app.test_client()
    report = client.get("/api/projects/1", headers={"Authorization": f"Bearer {TOKEN}"}).json
    first = report["rounds"][0]
    assert (first["corrections_per_task"], first["no_correction_share"]) == (1.5, 0.5)
    assert (first["unserved_tasks"], first["unserved_keypoints_per_task"]) == (1, 12.0)
    assert report["accuracy"]["corrections_per_task"] == [[1, 1.5]]
    assert report["accuracy"]["no_correction_share"] == [[1, 0.5]]
    client.post("/login", data={"token": TOKEN})
    page = client.get("/projects/1").get_data(as_text=True)
    assert "<td>1.50 (50.0% none) · 1 unserved: 12.0 kp</td>" in page
    assert "round 1: served suggestions accepted without correction (share) = 0.500" in page
