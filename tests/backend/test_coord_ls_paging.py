"""Integration: the adapter's paging and pruning calls against the real Label Studio 1.23.2 (the session's)."""

from __future__ import annotations

import time
import uuid

import pytest

pytestmark = pytest.mark.integration

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<KeyPointLabels name="kp" toName="image"><Label value="Nose"/></KeyPointLabels></View>'
)


def _result(x: float) -> list[dict]:
    return [{"id": "a1", "from_name": "kp", "to_name": "image", "type": "keypointlabels", "original_width": 100,
             "original_height": 100, "image_rotation": 0,
             "value": {"x": x, "y": 20.0, "width": 1.0, "keypointlabels": ["Nose"]}}]


def test_pages_keyset_pages_with_annotation_results_and_pruning_by_model_version(label_studio):
    from backend.services.labelstudio import LabelStudio
    from backend.services.reconcile import ls_time

    ls = LabelStudio(label_studio.url, label_studio.token)
    try:
        project = ls.create_project(f"paging-{uuid.uuid4().hex[:6]}", CONFIG)
        ids = ls.import_tasks(project, [{"data": {"image": f"/data/upload/x/{i}.jpg"}} for i in range(7)])
        tasks, total = ls.task_page(project, 2, 3)
        assert [t["id"] for t in tasks] == ids[3:6] and total == 7
        assert set(tasks[0]) == {"id", "data", "total_annotations", "cancelled_annotations"}
        assert ls.task_page(project, 9, 3) == ([], 0)

        for version in ("v0", "v1", "v2"):
            ls.import_predictions(project, [{"task": t, "result": _result(10.0), "score": 0.5,
                                             "model_version": version} for t in ids])
        ls.update_project(project, model_version="v2")
        from datetime import datetime, timezone

        before = ls_time(datetime.now(timezone.utc).replace(tzinfo=None))
        time.sleep(0.05)
        annotation = ls.create_annotation(ids[4], _result(42.0))
        first = ls.tasks_after(project, "id", None, 4)
        assert [t["id"] for t in first] == ids[:4]
        rest = ls.tasks_after(project, "id", first[-1]["id"], 4)
        assert [t["id"] for t in rest] == ids[4:]
        [annotated] = [t for t in rest if t["annotations"]]
        [read] = annotated["annotations"]  # the result itself, not only the id (include filters nested fields)
        assert read["id"] == annotation and read["result"][0]["value"]["x"] == 42.0 and read["was_cancelled"] is False
        assert "predictions" not in annotated
        changed = ls.tasks_after(project, "updated_at", before, 10)  # importing predictions does not count
        assert [t["id"] for t in changed] == [ids[4]]

        assert ls.model_versions(project) == {"v0": 7, "v1": 7, "v2": 7}
        assert ls.delete_predictions(project, "v0") == 7
        assert ls.model_versions(project) == {"v1": 7, "v2": 7}
        assert ls.project(project)["model_version"] == "v2"  # the version in use is untouched
    finally:
        ls.close()
