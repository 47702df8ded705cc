"""Browser test of interactive correction in the real Label Studio UI: Auto-Annotation on, the smart keypoint
tool ("Auto-Detect"), one click with a keypoint label selected -> Label Studio asks our ML backend for the
re-solve and shows its suggestions -> accept them all -> submit. The submitted annotation must hold exactly one
keypoint per label: the clicked one where it was put, the others where our re-solve put them.

This test submits an annotation, so it lives in a module that pytest runs after ``test_loop.py`` (files run in
name order), whose checks count every annotation of the shared live project.
"""

from __future__ import annotations

import pytest
from browser_helpers import SELECTED_ANNOTATION, ls_login
from waiting import wait_for

pytestmark = pytest.mark.integration

STORE = """() => {
  const selected = window.Htx.annotationStore.selected;
  return {auto: window.Htx.autoAnnotation, suggestions: selected.suggestions.size,
          labelSelected: selected.names.get('kp').isSelected, selectedRegions: selected.selectedRegions.length,
          regions: selected.regions.map(r => ({id: r.cleanId, label: r.labels ? r.labels[0] : null,
                                               x: r.x, y: r.y, dynamic: r.dynamic}))};
}"""
IMAGE_BOX = """() => {
  // the editor's <img alt="image"> (clipped, drawn on the canvas) is laid out exactly where the image is shown
  const img = Array.from(document.querySelectorAll('img[alt="image"]'))
    .sort((a, b) => b.getBoundingClientRect().width - a.getBoundingClientRect().width)[0];
  const r = (img || document.querySelector('.konvajs-content')).getBoundingClientRect();
  return {left: r.left, top: r.top, width: r.width, height: r.height};
}"""


def _labels(results: list[dict]) -> dict[str, tuple[float, float]]:
    """Label -> (x, y) percent of the keypointlabels results; fails on a label that occurs twice."""
    points = [(r["value"]["keypointlabels"][0], (r["value"]["x"], r["value"]["y"]))
              for r in results if r.get("type") == "keypointlabels"]
    labels = [label for label, _ in points]
    assert len(labels) == len(set(labels)), f"a label occurs more than once: {sorted(labels)}"
    return dict(points)


def test_a_smart_click_and_accepting_the_suggestions_leave_one_keypoint_per_label(live, browser):
    from stack.start import label_stream_url

    page = browser.new_page()
    ls_login(page, live)
    page.goto(label_stream_url(live.ls_url, live.link))
    page.locator(".lsf-outliner-item").first.wait_for()
    opened = page.evaluate(SELECTED_ANNOTATION)
    task_id = opened["task"]
    served = {label: (x, y) for label, x, y in opened["regions"]}
    assert len(served) == len(opened["regions"]) > 0, "the draft starts from our prediction, one region per label"
    page.wait_for_timeout(1000)  # let the image lay out

    page.get_by_text("Auto-Annotation", exact=True).click()
    page.wait_for_function("() => window.Htx.autoAnnotation === true")
    assert page.evaluate(STORE)["selectedRegions"] == 0, "a selected region would take the label clicked next"
    label = sorted(served)[0]
    x, y = served[label]
    target = (x + 12.0 if x < 60 else x - 12.0, y + 6.0 if y < 70 else y - 6.0)  # well away from the suggestion
    smart_tool = page.locator("button[aria-label='Auto-Detect']").first  # the smart keypoint tool
    smart_tool.click()
    page.locator(".lsf-labels .lsf-label").filter(has_text=label).first.click()
    page.wait_for_function("() => window.Htx.annotationStore.selected.names.get('kp').isSelected")
    if "lsf-tool_active" not in (smart_tool.get_attribute("class") or ""):
        smart_tool.click()  # selecting the label switched to the plain keypoint tool
    assert "lsf-tool_active" in (smart_tool.get_attribute("class") or "")
    assert page.evaluate("() => window.Htx.annotationStore.selected.names.get('kp').isSelected")
    box = page.evaluate(IMAGE_BOX)
    with page.expect_response(lambda r: "/interactive-annotating" in r.url, timeout=180_000) as answer:
        page.mouse.click(box["left"] + target[0] / 100 * box["width"], box["top"] + target[1] / 100 * box["height"])
    body = answer.value.json()
    assert not body.get("errors"), body
    suggested = _labels(body["data"]["result"])
    page.wait_for_function("() => window.Htx.annotationStore.selected.suggestions.size > 0")
    shown = page.evaluate(STORE)
    clicks = [r for r in shown["regions"] if r["dynamic"]]
    assert len(clicks) == 1 and clicks[0]["label"] == label, shown["regions"]
    clicked = (clicks[0]["x"], clicks[0]["y"])
    assert clicked == pytest.approx(target, abs=1.0), "the click landed where the test put it"
    assert shown["suggestions"] == len(suggested) > 1
    assert suggested[label] == pytest.approx(clicked, abs=1e-3), "the answer repeats the click where it is"
    # accepting applies a still-selected label to every accepted region (Label Studio's acceptSuggestion); by
    # default ("Keep label selected after creating a region" off) the click unselects it
    assert not shown["labelSelected"], "the keypoint label is still selected after the click"

    page.locator("[data-testid=bottombar-accept-suggestions-button]").click()
    page.wait_for_function("() => window.Htx.annotationStore.selected.suggestions.size === 0")
    accepted = page.evaluate(STORE)["regions"]
    assert not any(r["dynamic"] for r in accepted)
    in_ui = _labels([{"type": "keypointlabels", "value": {"x": r["x"], "y": r["y"], "keypointlabels": [r["label"]]}}
                     for r in accepted])
    assert set(in_ui) == set(served) | set(suggested)

    before = {a["id"] for a in live.ls_get(f"/api/tasks/{task_id}/")["annotations"]}
    page.locator("[data-testid=bottombar-submit-button]").first.click()
    new = []
    wait_for(lambda: new.extend(a for a in live.ls_get(f"/api/tasks/{task_id}/")["annotations"]
                                if a["id"] not in before) or new, 120, "the submitted annotation in Label Studio")
    assert len(new) == 1, "one annotation submitted"
    stored = _labels(new[0]["result"])
    assert set(stored) == set(served) | set(suggested), "exactly one keypoint per label, none lost"
    assert stored[label] == pytest.approx(clicked, abs=1e-2), "the clicked keypoint stays where it was put"
    for name, xy in stored.items():
        want = suggested.get(name, served.get(name))  # re-solved; a keypoint the re-solve left out stays served
        assert xy == pytest.approx(want, abs=1e-2), name
    page.close()
