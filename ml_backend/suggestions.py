"""Interactive suggestions that Label Studio 1.23.2 can accept without duplicating or losing keypoints.

Measured in Chromium (``tests/e2e/test_browser.py::test_smart_clicks_leave_one_keypoint_per_label_and_every_click_in_place``)
and read in its editor (``web/dist/apps/labelstudio/358.js``, the ``Annotation`` model):

- the annotator's draft is a copy of the served prediction whose regions keep the prediction's result ids
  (``addAnnotationFromPrediction``);
- a smart-tool click is a *dynamic* region; the interactive request's context holds it (``is_positive: true``)
  **and every other region of the same label** (``getConnectedDynamicRegions``), i.e. the served keypoint of
  that label with its id, and nothing of other labels (earlier clicks: :mod:`ml_backend.clickmemory`);
- the answer's results become suggestions; accepting one stores it under its own id in the annotation: a
  region with that id is **replaced**, otherwise it is added (``acceptSuggestion``); "accept all" (the bottom
  bar's ✓, or Auto-Accept) then **deletes every dynamic region**, the click included
  (``deleteAllDynamicregions``).

With fresh ids and without the clicked label (what the backend answered before), accepting all left two points
for every re-solved label and dropped the click. So the answer carries every placed keypoint and every label the
draft holds (a re-solve may not place a keypoint the served pose did: left out, it would keep its served place
beside re-solved neighbours), the clicked ones exactly at the click, each under the id of the draft's region of
the same label: accepting all replaces the served keypoints in place, the click's dynamic region goes away, and
the annotation ends with exactly one keypoint per label -- the clicked ones where the annotator put them, the
others re-solved. A label the draft lacks gets an id fixed by the task and the label: the first acceptance adds
it under that id (which no later request tells), and a later suggestion of the label replaces it (inferred from
the replace-by-id rule above; the browser test's drafts held the labels it clicked).
"""

from __future__ import annotations

import hashlib


def _keypoint_label(item: object, control: str) -> str | None:
    """The label of a ``keypointlabels`` result of ``control``, None for anything else."""
    if not isinstance(item, dict) or item.get("type") != "keypointlabels":
        return None
    if item.get("from_name") not in (control, None):
        return None
    value = item.get("value")
    labels = (value.get("keypointlabels") or value.get("labels")) if isinstance(value, dict) else None
    return labels[0] if isinstance(labels, list) and labels and isinstance(labels[0], str) else None


def _clean(region: object) -> str | None:
    return region.split("#", 1)[0] if isinstance(region, str) and region else None


def _ids(results: object, control: str) -> dict[str, str]:
    """Label -> region id of a result list (the first region of a label wins)."""
    ids: dict[str, str] = {}
    for item in results if isinstance(results, list) else []:
        label, region = _keypoint_label(item, control), _clean(item.get("id") if isinstance(item, dict) else None)
        if label is not None and region is not None and label not in ids:
            ids[label] = region
    return ids


def _draft_prediction(task: dict, existing: list[dict], control: str, version: str | None) -> dict | None:
    """The task's prediction the draft was copied from: the one holding an id of the context's regions, else the
    prediction of ``version``."""
    predictions = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
    sent = {_clean(item.get("id")) for item in existing} - {None}
    chosen = next((p for p in predictions if sent & set(_ids(p.get("result"), control).values())), None)
    return chosen or next((p for p in predictions if p.get("model_version") == version), None)


def draft_region_ids(task: dict, existing: list[dict], control: str, version: str | None) -> dict[str, str]:
    """Label -> id of the draft's region of that label, as far as the request tells.

    ``existing`` (the draft's regions of the clicked label that Label Studio sent in the context) names the
    prediction the draft was copied from: the task's prediction holding one of those ids. Without such a match
    the task's prediction of ``version`` (the served model version) is assumed. The context's own regions win
    for their labels.

    Args:
        task: the task of the interactive ``/predict`` (``predictions``: list of ``{model_version, result}``).
        existing: context results of the clicked labels other than the clicks.
        control: the ``KeyPointLabels`` name (``from_name``) of our keypoints.
        version: the served model version, or None.
    """
    chosen = _draft_prediction(task, existing, control, version)
    ids = _ids(chosen.get("result"), control) if chosen is not None else {}
    ids.update(_ids(existing, control))
    return ids


def draft_places(task: dict, existing: list[dict], control: str, version: str | None) -> dict[str, list[float]]:
    """Label -> [x, y] percent of each keypoint in the prediction the draft was copied from (as
    :func:`draft_region_ids` chooses it): where a keypoint is before any suggestion is accepted."""
    chosen = _draft_prediction(task, existing, control, version)
    places: dict[str, list[float]] = {}
    for item in chosen.get("result") or [] if chosen is not None else []:
        label = _keypoint_label(item, control)
        value = item.get("value") if isinstance(item, dict) else None
        if label is not None and label not in places and isinstance(value, dict):
            xy = [value.get("x"), value.get("y")]
            if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in xy):
                places[label] = [float(c) for c in xy]
    return places


def adopt_ids(results: list[dict], ids: dict[str, str], task: object) -> int:
    """Give each result the id of the draft's region of its label, and any other result an id fixed by the task and
    its label (in place); returns how many were matched.

    The fixed id matters from the second click on: a keypoint the served pose lacked is added by accepting its first
    suggestion, under that suggestion's id, which no later request tells; the next suggestion of that label carries
    the same id, so accepting it replaces the added keypoint instead of adding a second one.
    """
    matched = 0
    for item in results:
        label = item["value"]["keypointlabels"][0]
        region = ids.get(label)
        if region is not None:
            matched += 1
        item["id"] = region or hashlib.sha1(f"vl4pose:{task}:{label}".encode()).hexdigest()[:10]
    return matched


def place_clicks(results: list[dict], at: dict[str, tuple[float, float]]) -> None:
    """Put each clicked label's result exactly where the click is (Label Studio's percentages, in place), with
    score 1: the re-solve clamps it there up to a pixel round trip."""
    for item in results:
        label = item["value"]["keypointlabels"][0]
        if label in at:
            item["value"]["x"], item["value"]["y"] = at[label]
            item["score"] = 1.0
