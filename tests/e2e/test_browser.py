"""Browser tests: the dashboard and a Label Studio task in headless Chromium (Debian's ``chromium`` driven by
Playwright; no browser is downloaded). They save ``docs/screenshots/dashboard.png`` and
``docs/screenshots/labelstudio-task.png`` (linked from the README)."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

import pytest
import requests
from browser_helpers import SCREENSHOTS, SELECTED_ANNOTATION, login, ls_login
from e2e_helpers import BUDGET, REPO, effort_cell, pct_cell
from waiting import wait_for

pytestmark = pytest.mark.integration


def test_dashboard_shows_the_rounds_and_the_accuracy_chart_with_the_real_numbers(live, two_rounds, browser):
    report = live.coordinator.project(live.project)
    page = browser.new_page()
    page.goto(live.config.url("coordinator") + f"/login?next=/projects/{live.project}")
    page.fill("input[name=token]", live.config.secrets.api_token)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/projects/{live.project}")

    rows = page.locator("h2:text-is('Rounds') + table tbody tr")
    assert rows.count() == len(report["rounds"]) == 3
    shown = {}
    for i in range(rows.count()):
        cells = [c.strip() for c in rows.nth(i).locator("td").all_inner_texts()]
        shown[int(cells[0])] = cells
    for r in report["rounds"]:
        cells = shown[r["number"]]
        assert cells[1] == r["state"] and cells[2] == (r["model_version"] or "—")
        assert cells[3] == f"{r['labelled']} / {r['budget']}" and cells[4] == f"{r['accepted']} / {r['corrected']}"
        assert cells[5] == pct_cell(r["served_pck"]) and cells[8] == pct_cell(r["holdout_pck"])
        assert cells[6] == effort_cell(r) and cells[7] == (r["trained_version"] or "—")
    for n in (1, 2):  # both labelled rounds were served and have a correction-effort figure
        assert report["rounds"][n - 1]["corrections_per_task"] is not None and shown[n][6] != "—"
    assert [shown[n][3] for n in (1, 2)] == [f"{BUDGET} / {BUDGET}"] * 2

    titles = page.locator("svg.chart circle title").all_text_contents()
    expected = [f"round {x}: {label} = {y:.3f}" for key, label in (
        ("served_pck", "served suggestions vs submitted (PCK@0.2)"),
        ("no_correction_share", "served suggestions accepted without correction (share)"),
        ("holdout_pck", "new model on the held-out set (PCK@0.2)")) for x, y in report["accuracy"][key]]
    # rounds 1-2 served (PCK and share accepted without correction); rounds 0-2 held-out
    assert sorted(titles) == sorted(expected) and len(titles) == 2 + 2 + 3
    assert page.locator("svg.chart polyline").count() == 3
    page.mouse.wheel(0, 10_000)  # the queue's pose images load lazily
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    assert page.evaluate("Array.from(document.images).filter(i => i.naturalWidth === 0).length") == 0
    page.mouse.wheel(0, -10_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)
    page.close()


def test_the_label_stream_opens_the_lowest_likelihood_task_with_our_refined_pre_annotation(live, two_rounds, browser):
    """What an annotator sees after "Label All Tasks" (the URL start.sh prints): the lowest score first, its
    pre-annotation being our prediction of the current model version."""
    from stack.start import label_stream_url

    version = live.ls_get(f"/api/projects/{live.ls_project}/")["model_version"]
    stored = live.predictions(version)
    task_id = min(set(stored) - live.labelled_tasks(), key=lambda t: stored[t]["score"])
    page = browser.new_page()
    ls_login(page, live)
    assert live.link["view_id"], "linking adds the lowest-likelihood-first tab"
    page.goto(label_stream_url(live.ls_url, live.link))
    page.locator(".lsf-outliner-item").first.wait_for()
    shown = page.evaluate(SELECTED_ANNOTATION)  # what the labelling interface holds for the open task
    prediction = stored[task_id]
    assert shown["task"] == task_id, "the stream serves the lowest-likelihood task first"
    assert [prediction["id"], pytest.approx(prediction["score"])] in shown["predictions"]
    points = {item["value"]["keypointlabels"][0]: (item["value"]["x"], item["value"]["y"])
              for item in prediction["result"]}
    assert len(points) == len(shown["regions"]) > 0, "the draft starts from our prediction"
    for label, x, y in shown["regions"]:
        assert (x, y) == pytest.approx(points[label], abs=1e-6), label
    page.mouse.move(5, 880)
    page.wait_for_timeout(1500)  # let the image and the points paint
    page.screenshot(path=str(SCREENSHOTS / "labelstudio-task.png"))
    page.close()


# -- interactive correction in the real editor ----------------------------------------------------------------------

INTERACTIVE_STORE = """() => {
  const selected = window.Htx.annotationStore.selected;
  return {auto: window.Htx.autoAnnotation, suggestions: selected.suggestions.size,
          labelSelected: selected.names.get('kp').isSelected,
          regions: selected.regions.map(r => ({id: r.cleanId, label: r.labels ? r.labels[0] : null,
                                               x: r.x, y: r.y, dynamic: r.dynamic}))};
}"""
EDITOR_IMAGE = """() => {  // the editor's image (a blob: URL): the largest image on the page
  const width = i => i.getBoundingClientRect().width;
  const img = Array.from(document.images).sort((a, b) => width(b) - width(a))[0];
  const r = img.getBoundingClientRect();
  return {left: r.left, top: r.top, width: r.width, height: r.height};
}"""


@pytest.fixture(scope="module")
def interactive_project(label_studio, model_registry, lspet_dir, tmp_path_factory):
    """A Label Studio project with our lsp14 config (``smart="true"`` keypoints), one LSPET task, our ML backend
    connected as an interactive backend, and the task's predictions retrieved through Label Studio (its own
    project, so the live loop's annotation counts stay untouched)."""
    from label_studio_sdk import LabelStudio

    from stack.process import BackendProcess

    tmp = tmp_path_factory.mktemp("ml_backend_browser")
    settings = {"models_dir": model_registry.root, "image_cache_dir": tmp / "cache", "state_dir": tmp / "state",
                "torch_threads": 1}
    with BackendProcess(tmp / "ml.log", settings, server="dev") as backend:
        ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
        created = ls.projects.create(title=f"interactive-{uuid.uuid4().hex[:8]}",
                                     label_config=(REPO / "annotation_configs" / "lsp14.xml").read_text())
        ls.import_storage.local.create(project=created.id, path=str(lspet_dir / "images"), title="lspet")
        imported = ls.projects.import_tasks(id=created.id, request=[
            {"image": "/data/local-files/?d=lspet/images/im00001.jpg"}], return_task_ids=True)
        model_registry.set_current("tiny-v1", created.id)  # what linking through the coordinator does
        ls.ml.create(project=created.id, url=backend.url, title="vl4pose", is_interactive=True,
                     auth_method="BASIC_AUTH", basic_auth_user=backend.auth[0], basic_auth_pass=backend.auth[1])
        ls.actions.create(id="retrieve_tasks_predictions", project=created.id,
                          selected_items={"all": True, "excluded": []})
        response = requests.patch(f"{label_studio.url}/api/projects/{created.id}/", headers=label_studio.headers,
                                  json={"model_version": "tiny-v1"}, timeout=30)
        assert response.status_code == 200, response.text
        yield {"id": created.id, "task": imported.task_ids[0], "state": tmp / "state"}


def _points(results: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """Label -> every (x, y) percent of that label among the keypointlabels results."""
    points: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        if r.get("type") == "keypointlabels":
            points.setdefault(r["value"]["keypointlabels"][0], []).append((r["value"]["x"], r["value"]["y"]))
    return points


def _away_from(regions: list[dict]) -> tuple[float, float]:
    """The point (percent) of a grid inside the image farthest from every region: a click there draws a new point
    instead of selecting a region."""
    grid = [(x, y) for x in range(10, 91, 4) for y in range(10, 91, 4)]
    return max(grid, key=lambda p: min((p[0] - r["x"]) ** 2 + (p[1] - r["y"]) ** 2 for r in regions))


def _smart_click(page, label: str, target: tuple[float, float], diag: Path, step: str) -> dict:
    """Select the smart keypoint tool ("Auto-Detect") and ``label``, click at ``target`` (percent of the image), wait
    for our answer to show as suggestions; returns what was sent, answered and shown."""
    page.keyboard.press("Escape")  # nothing selected: a click on the image draws instead of unselecting
    smart_tool = page.locator("button.lsf-tool_smart").first  # it has no aria-label
    if "lsf-tool_active" not in (smart_tool.get_attribute("class") or ""):
        smart_tool.click()
    page.locator(".lsf-labels .lsf-label").filter(has_text=label).first.click()
    page.wait_for_function("() => window.Htx.annotationStore.selected.names.get('kp').isSelected")
    if "lsf-tool_active" not in (smart_tool.get_attribute("class") or ""):
        smart_tool.click()
    assert "lsf-tool_active" in (smart_tool.get_attribute("class") or "")
    box = page.evaluate(EDITOR_IMAGE)
    with page.expect_request(lambda r: "/interactive-annotating" in r.url, timeout=180_000) as sent, \
            page.expect_response(lambda r: "/interactive-annotating" in r.url, timeout=180_000) as answer:
        page.mouse.click(box["left"] + target[0] / 100 * box["width"], box["top"] + target[1] / 100 * box["height"])
    step_notes = {"url": sent.value.url, "sent": sent.value.post_data_json, "answer": answer.value.json()}
    assert not step_notes["answer"].get("errors"), step_notes["answer"]
    page.wait_for_function("() => window.Htx.annotationStore.selected.suggestions.size > 0")
    step_notes["shown"] = shown = page.evaluate(INTERACTIVE_STORE)
    page.screenshot(path=str(diag / f"{step}-suggestions.png"))
    clicks = [r for r in shown["regions"] if r["dynamic"] and r["label"] == label]
    assert len(clicks) == 1, shown["regions"]
    step_notes["clicked"] = (clicks[0]["x"], clicks[0]["y"])
    assert step_notes["clicked"] == pytest.approx(target, abs=1.0), "the click landed where the test put it"
    assert shown["suggestions"] == len(step_notes["answer"]["data"]["result"])
    # accepting applies a still-selected label to every accepted region: the click unselects it by default
    assert not shown["labelSelected"], "the keypoint label is still selected after the click"
    return step_notes


def _accept_all(page, diag: Path, step: str) -> dict:
    page.locator("[data-testid=bottombar-accept-suggestions-button]").click()
    page.wait_for_function("() => window.Htx.annotationStore.selected.suggestions.size === 0")
    page.wait_for_timeout(1000)
    page.screenshot(path=str(diag / f"{step}-accepted.png"))
    return page.evaluate(INTERACTIVE_STORE)


def test_smart_clicks_leave_one_keypoint_per_label_and_every_click_in_place(interactive_project, label_studio,
                                                                               browser):
    """The annotator's interactive correction as Label Studio 1.23.2 really does it: the label stream opens the task
    with our served pre-annotation as the draft; Auto-Annotation on, the smart keypoint tool ("Auto-Detect"), a
    label, a click on the image -> Label Studio asks our backend (``/interactive-annotating``) and shows its answer
    as suggestions -> accept all (the bottom bar's ✓); a second label and click, *not* accepted; a third label and
    click, accept all -> submit. The annotation read back through the API holds exactly one keypoint per label:
    every clicked one where it was put, the others where the last re-solve put them. Label Studio sends a request
    only its own click: the backend remembers the task's clicks and suggests each earlier one at its click (the
    pending second one must be: accepting all deletes the click's own region), or not at all once it saw an answer
    accepted since. Once submitted, the task's clicks are forgotten (the next request's task lists the new
    annotation).

    Diagnostics (screenshots, what was sent and answered) go to a temporary folder outside the repository."""
    diag = Path(tempfile.mkdtemp(prefix="vl4pose-interactive-"))
    notes: dict = {}
    task_id = interactive_project["task"]
    memory = interactive_project["state"] / "clicks" / f"{interactive_project['id']}-{task_id}.json"
    page = browser.new_page()
    try:
        login(page, label_studio.url, label_studio.username, label_studio.password)
        page.goto(f"{label_studio.url}/projects/{interactive_project['id']}/data?labeling=1")
        page.wait_for_function("() => window.Htx && window.Htx.annotationStore.selected "
                               "&& window.Htx.annotationStore.selected.regions.length > 0")
        page.wait_for_timeout(1500)  # let the image lay out
        notes["opened"] = opened = page.evaluate(INTERACTIVE_STORE)
        page.screenshot(path=str(diag / "1-opened.png"))
        served = _points([{"type": "keypointlabels",
                           "value": {"x": r["x"], "y": r["y"], "keypointlabels": [r["label"]]}}
                          for r in opened["regions"]])
        assert len(served) == len(opened["regions"]) > 2, "the draft starts from our prediction, one region per label"

        page.get_by_text("Auto-Annotation", exact=True).click()
        page.wait_for_function("() => window.Htx.autoAnnotation === true")
        first, second, third = sorted(served)[0], sorted(served)[-1], sorted(served)[len(served) // 2]
        x, y = served[first][0]
        target = (x + 12.0 if x < 60 else x - 12.0, y + 6.0 if y < 70 else y - 6.0)  # away from the served point
        notes["click1"] = one = _smart_click(page, first, target, diag, "2")
        suggested1 = _points(one["answer"]["data"]["result"])
        assert len(suggested1) >= len(served)
        notes["accepted1"] = _accept_all(page, diag, "3")
        assert json.loads(memory.read_text())["clicks"][0]["value"]["keypointlabels"] == [first]

        notes["click2"] = two = _smart_click(page, second, _away_from(notes["accepted1"]["regions"]), diag, "4")
        assert [r["value"]["keypointlabels"][0] for r in two["sent"]["context"]["result"]
                if r.get("is_positive")] == [second], "Label Studio sends only the new click"
        suggested2 = _points(two["answer"]["data"]["result"])
        # the first click: left alone once the backend saw the first answer accepted, else suggested at its click
        assert suggested2.get(first, [one["clicked"]])[0] == pytest.approx(one["clicked"], abs=1e-2)

        notes["click3"] = three = _smart_click(page, third, _away_from(two["shown"]["regions"]), diag, "5")
        suggested3 = _points(three["answer"]["data"]["result"])
        assert suggested3.get(first, [one["clicked"]])[0] == pytest.approx(one["clicked"], abs=1e-2)
        assert suggested3[second][0] == pytest.approx(two["clicked"], abs=1e-2), "the pending second click, suggested"
        notes["accepted3"] = _accept_all(page, diag, "6")

        url = f"{label_studio.url}/api/tasks/{task_id}/"
        before = {a["id"] for a in requests.get(url, headers=label_studio.headers, timeout=30).json()["annotations"]}
        page.locator("[data-testid=bottombar-submit-button]").first.click()
        new: list = []

        def submitted() -> bool:
            annotations = requests.get(url, headers=label_studio.headers, timeout=30).json()["annotations"]
            new[:] = [a for a in annotations if a["id"] not in before]
            return bool(new)

        wait_for(submitted, 120, "the submitted annotation in Label Studio")
        notes["submitted"] = new
        # the editor's next interactive call for the task (as the browser makes it): the request's task now lists the
        # submitted annotation, so the first click is forgotten and its label re-solved
        later = requests.post(three["url"], headers=label_studio.headers, json=three["sent"], timeout=120)
        assert later.status_code == 200, later.text
        notes["after_submit"] = after = _points(later.json()["data"]["result"])
    finally:
        (diag / "notes.json").write_text(json.dumps(notes, indent=1, default=str))
        print(f"browser diagnostics in {diag}")
        page.close()

    assert len(new) == 1, "one annotation submitted"
    stored = _points(new[0]["result"])
    counts = {name: len(xy) for name, xy in stored.items()}
    assert set(counts) == set(served) | set(suggested1) | set(suggested3) and set(counts.values()) == {1}, \
        f"exactly one keypoint per label; got {counts}"
    for label, step in ((first, one), (second, two), (third, three)):
        assert stored[label][0] == pytest.approx(step["clicked"], abs=1e-2), f"the click on {label} is not in place"
    for name, [xy] in stored.items():
        if name not in (first, second, third):  # where the last accepted answer showing it put it (the third, else the
            # first: a label a later re-solve does not place keeps its place), else where it was served
            placed = next(answer[name][0] for answer in (suggested3, suggested1, served) if name in answer)
            assert xy == pytest.approx(placed, abs=1e-2), f"{name} is not where the last accepted re-solve put it"
    assert first in after, "after the submit the task's clicks are forgotten: the first label is re-solved again"
    assert [c["value"]["keypointlabels"] for c in json.loads(memory.read_text())["clicks"]] == [[third]]
