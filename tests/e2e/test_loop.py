"""End to end: two labelling rounds through a real Label Studio, the ML backend, the coordinator and its worker,
each a separate process on 127.0.0.1, driven by the simulated annotator through Label Studio's API only."""

from __future__ import annotations

import math
import re

import pytest
import requests
from sqlalchemy import select

from e2e_helpers import BUDGET, POOL, effort_cell

pytestmark = pytest.mark.integration


def test_each_task_served_is_the_lowest_likelihood_one_left(two_rounds):
    for log in two_rounds:
        remaining = dict(log.scores_before)
        assert len(log.labelled) == BUDGET
        for item in log.labelled:
            assert item.task_id in remaining, f"task {item.task_id} had no prediction of {log.version}"
            assert item.score == pytest.approx(remaining[item.task_id])
            assert remaining[item.task_id] == pytest.approx(min(remaining.values())), "not the lowest score left"
            del remaining[item.task_id]
        scores = [item.score for item in log.labelled]
        assert scores == sorted(scores)


def test_predictions_carry_the_current_model_version(live, two_rounds):
    for log in two_rounds:
        assert log.registry_current == log.version, "the ML backend's registry serves another version"
        assert log.ml_health_version == log.version
        assert all(item.model_version == log.version == item.project_model_version for item in log.labelled)
    # round 1 starts on the initial model; each round then ran on the version trained after the previous one
    assert [log.version for log in two_rounds] == [live.link["initial_version"], f"p{live.ls_project}-v1"]


def test_a_new_version_is_published_and_ranks_the_queue_after_each_round(live, two_rounds):
    from backend.models import ModelVersion, Round
    from vl4pose.registry import ModelRegistry

    registry = ModelRegistry(live.config.storage / "models")
    v1, v2 = f"p{live.ls_project}-v1", f"p{live.ls_project}-v2"
    assert {live.link["initial_version"], v1, v2} <= set(registry.versions())
    assert registry.current() == v2
    assert live.ls_get(f"/api/projects/{live.ls_project}/")["model_version"] == v2
    with live.db().session() as session:
        rounds = session.scalars(select(Round).where(Round.project_id == live.project).order_by(Round.number)).all()
        assert [(r.number, r.state.value, r.model_version) for r in rounds] == [
            (1, "done", live.link["initial_version"]), (2, "done", v1), (3, "open", v2)]
        versions = {v.version: v for v in session.scalars(select(ModelVersion))}
        assert versions[v1].parent == live.link["initial_version"] and versions[v2].parent == v1
        assert versions[v1].train_images > 0 and versions[v2].train_images > versions[v1].train_images
        for r in rounds[:2]:
            assert r.metrics["trained_version"] in (v1, v2) and r.metrics["holdout_pck"] is not None
    unlabelled = set(live.predictions(v2)) - live.labelled_tasks()
    assert len(unlabelled) == POOL - 2 * BUDGET, "every unlabelled task carries a prediction of the new version"


def test_the_ml_backend_scores_a_task_like_the_ranking_did(live, two_rounds):
    """The pre-annotation the ML backend serves and the prediction that ranked the task come from the same
    Predictor and version. The project runs the default strategy, ``vl4pose_mix``, whose stored score is the
    task's rank in the joint order (rank as score), so the served score is compared with the calibrated score
    only on a per-task strategy."""
    v2 = f"p{live.ls_project}-v2"
    stored = live.predictions(v2)
    task_id = min(set(stored) - live.labelled_tasks(), key=lambda t: stored[t]["score"])
    task = live.ls_get(f"/api/tasks/{task_id}/")
    project = live.ls_get(f"/api/projects/{live.ls_project}/")
    answer = requests.post(live.config.url("ml") + "/predict", timeout=120, auth=live.config.ml_auth, json={
        "tasks": [task], "project": f"{live.ls_project}.0", "label_config": project["label_config"]}).json()
    refined = answer["results"][0][0]
    assert refined["model_version"] == v2
    assert len(refined["result"]) == len(stored[task_id]["result"]) > 0

    def points(result: list[dict]) -> dict[str, tuple[float, float]]:
        return {r["value"]["keypointlabels"][0]: (r["value"]["x"], r["value"]["y"]) for r in result}

    served, ranked = points(refined["result"]), points(stored[task_id]["result"])
    assert served.keys() == ranked.keys()
    for label, xy in served.items():  # percent of the image; batched and single passes round differently
        assert xy == pytest.approx(ranked[label], abs=0.05), label
    strategy = live.coordinator.project(live.project)["project"]["strategy"]
    if strategy == "vl4pose":
        assert refined["score"] == pytest.approx(stored[task_id]["score"], rel=1e-3, abs=1e-6)
    else:
        assert strategy == "vl4pose_mix" and 0 < refined["score"] < 1


def test_no_annotation_is_missing_from_the_coordinator(live, two_rounds):
    from backend.models import AnnotationRecord, Round

    submitted = {item.annotation_id: item for log in two_rounds for item in log.labelled}
    in_label_studio = set()
    for task in live.ls_get("/api/tasks/", project=live.ls_project, page_size=500, fields="all")["tasks"]:
        in_label_studio |= {a["id"] for a in task.get("annotations") or []}
    assert in_label_studio == set(submitted)
    with live.db().session() as session:
        records = session.scalars(select(AnnotationRecord).where(AnnotationRecord.project_id == live.project)).all()
        rounds = {r.id: r.number for r in session.scalars(select(Round))}
        assert {r.annotation_id for r in records} == set(submitted)
        assert all(r.status.value == "submitted" and r.keypoint_count > 0 for r in records)
        for record in records:  # accepted vs corrected as the annotator did it, in the round that served it
            item = submitted[record.annotation_id]
            assert record.accepted is item.accepted and record.from_prediction == item.prediction_id
            assert record.served_model_version == item.model_version
        by_round = {n: sorted(r.annotation_id for r in records if rounds[r.round_id] == n) for n in (1, 2)}
        assert by_round == {n + 1: sorted(i.annotation_id for i in log.labelled) for n, log in enumerate(two_rounds)}


def test_the_dashboard_numbers_match_the_database(live, two_rounds):
    from backend.models import AnnotationRecord, ModelVersion, Round

    report = live.coordinator.project(live.project)
    with live.db().session() as session:
        rounds = session.scalars(select(Round).where(Round.project_id == live.project).order_by(Round.number)).all()
        records = session.scalars(select(AnnotationRecord).where(AnnotationRecord.project_id == live.project)).all()
        v0 = session.scalar(select(ModelVersion).where(ModelVersion.version == live.link["initial_version"]))
        expected, unserved = [], {}
        for r in rounds:
            mine = [a for a in records if a.round_id == r.id]
            served = [a for a in mine if a.served_total]
            served_pck = sum(a.served_correct for a in served) / sum(a.served_total for a in served) if served else None
            # correction effort: the served tasks' mean and share with none; tasks without a suggestion apart
            with_effort = [a.corrections for a in mine if a.served_total is not None]
            by_hand = [a.corrections for a in mine if a.served_total is None]
            assert None not in with_effort + by_hand, "every submitted record has its correction effort"
            for a in mine:
                if a.accepted:  # accepted unchanged: nothing to correct
                    assert a.corrections == 0
                if a.served_total is not None:  # served keypoints judged wrong were moved, or added
                    assert a.corrections >= a.served_total - a.served_correct
                else:
                    assert a.corrections == a.keypoint_count
            unserved[r.number] = len(by_hand)
            expected.append({"number": r.number, "labelled": len({a.task_id for a in mine}),
                             "accepted": sum(a.accepted is True for a in mine),
                             "corrected": sum(a.accepted is False for a in mine),
                             "served_pck": served_pck, "holdout_pck": (r.metrics or {}).get("holdout_pck"),
                             "corrections_per_task": sum(with_effort) / len(with_effort) if with_effort else None,
                             "no_correction_share": with_effort.count(0) / len(with_effort) if with_effort else None,
                             "model_version": r.model_version})
        initial_pck = (v0.metrics or {}).get("holdout_pck")
    api = [{k: r[k] for k in expected[0]} for r in report["rounds"]]
    assert {r["number"]: r["unserved_tasks"] or 0 for r in report["rounds"]} == unserved
    assert len(api) == len(expected) == 3
    for got, want in zip(api, expected):
        for key, value in want.items():
            assert got[key] == (pytest.approx(value) if isinstance(value, float) else value), (key, got, want)
    assert report["annotations"]["submitted"] == len(records) == 2 * BUDGET
    assert report["accuracy"]["holdout_pck"][0] == [0, pytest.approx(initial_pck)]
    assert [p[0] for p in report["accuracy"]["served_pck"]] == [1, 2]
    assert [p[0] for p in report["accuracy"]["corrections_per_task"]] == [1, 2]
    assert report["accuracy"]["no_correction_share"] == [[n, pytest.approx(e["no_correction_share"])]
                                                         for n, e in ((1, expected[0]), (2, expected[1]))]

    page = requests.Session()
    login = page.post(live.config.url("coordinator") + "/login", data={"token": live.config.secrets.api_token})
    assert login.status_code == 200
    html = page.get(f"{live.config.url('coordinator')}/projects/{live.project}").text
    rows = re.findall(r"<tr>\s*<td>(\d+)</td>(.*?)</tr>", html, re.S)
    shown = {int(number): re.sub(r"<[^>]+>", "", body) for number, body in rows if "state" in body}
    for want in expected:
        cells = shown[want["number"]]
        assert f"{want['labelled']} / {BUDGET}" in cells
        assert f"{want['accepted']} / {want['corrected']}" in cells
        for key in ("served_pck", "holdout_pck"):
            if want[key] is not None and math.isfinite(want[key]):
                assert f"{100 * want[key]:.1f}%" in cells, (key, cells)
        if want["corrections_per_task"] is not None:
            assert effort_cell(want) in cells, cells
