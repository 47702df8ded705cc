"""Interactive suggestions that Label Studio can accept without duplicating keypoints.

What Label Studio 1.23.2 does with an interactive answer (its editor's ``Annotation`` model, read in
``web/dist/apps/labelstudio/358.js``): the smart-tool click is a *dynamic* region; the answer's results become
suggestions; accepting a suggestion puts it in the annotation under the id of an existing region whose id
(without ``#<annotation>``) equals the suggestion's id -- **replacing that region** -- or adds it as a new
region; "accept all" (the bottom bar's ✓, or Auto-Accept) then **deletes every dynamic region**. The draft an
annotator edits was copied from the served prediction with its result ids kept (``addAnnotationFromPrediction``).

So the answer carries every placed keypoint, the clicked ones included at the click, and each result takes
the id of the served prediction's region of the same label: accepting all replaces the served keypoints in
place, the click's dynamic region goes away, and the annotation ends with exactly one keypoint per label --
the clicked ones where the annotator put them, the others re-solved. A label the served prediction lacks
keeps a fresh id (it is added); a served keypoint the re-solve does not place is left as it was.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def served_region_ids(task: dict, control: str, version: str | None) -> dict[str, str]:
    """Label -> region id of the task's served prediction (the one a draft starts from).

    The served prediction is the task's prediction of ``version`` (the model version this backend serves),
    else the task's last prediction with keypoints of ``control``. Labels that occur twice keep the first id.

    Args:
        task: a Label Studio task as sent in ``/predict`` (``predictions``: list of ``{model_version, result}``).
        control: the ``KeyPointLabels`` name (``from_name``) of our keypoints.
        version: the served model version, or None.
    """
    candidates = [p for p in task.get("predictions") or [] if isinstance(p, dict) and _keypoints(p, control)]
    if not candidates:
        return {}
    exact = [p for p in candidates if p.get("model_version") == version]
    chosen = exact[0] if exact else candidates[-1]
    ids: dict[str, str] = {}
    for item in _keypoints(chosen, control):
        label, region = item["value"]["keypointlabels"][0], item.get("id")
        if isinstance(region, str) and region and label not in ids:
            ids[label] = region.split("#", 1)[0]
    return ids


def _keypoints(prediction: dict, control: str) -> list[dict]:
    """The prediction's ``keypointlabels`` results of ``control`` that name a label."""
    results = prediction.get("result")
    if not isinstance(results, list):
        return []
    out = []
    for item in results:
        if not isinstance(item, dict) or item.get("type") != "keypointlabels" or item.get("from_name") != control:
            continue
        labels = (item.get("value") or {}).get("keypointlabels") if isinstance(item.get("value"), dict) else None
        if isinstance(labels, list) and labels and isinstance(labels[0], str):
            out.append(item)
    return out


def adopt_served_ids(results: list[dict], served: dict[str, str]) -> int:
    """Give each result the id of the served region of its label (in place); returns how many were matched."""
    matched = 0
    for item in results:
        region = served.get(item["value"]["keypointlabels"][0])
        if region is not None:
            item["id"] = region
            matched += 1
    return matched


def place_clicks(results: list[dict], clicks: list[dict]) -> None:
    """Put each clicked label's result exactly where the click is (Label Studio's percentages, in place),
    with score 1: the re-solve clamps it there up to a pixel round trip."""
    at = {}
    for click in clicks:
        value = click["value"]
        label = (value.get("keypointlabels") or value.get("labels"))[0]
        at[label] = (float(value["x"]), float(value["y"]))
    for item in results:
        label = item["value"]["keypointlabels"][0]
        if label in at:
            item["value"]["x"], item["value"]["y"] = at[label]
            item["score"] = 1.0
