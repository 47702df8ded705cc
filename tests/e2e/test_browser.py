"""Browser tests: the dashboard and a Label Studio task in headless Chromium (Debian's ``chromium`` driven by
Playwright; no browser is downloaded). They save ``docs/screenshots/dashboard.png`` and
``docs/screenshots/labelstudio-task.png`` (linked from the README)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from e2e_helpers import BUDGET, REPO

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("VL4POSE_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = REPO / "docs" / "screenshots"
SELECTED_ANNOTATION = """() => {
  const store = window.Htx.annotationStore, selected = store.selected;
  return {task: window.Htx.task.id, type: selected.type,
          predictions: store.predictions.map(p => [Number(p.pk), p.score]),
          regions: selected.regions.map(r => [r.labels ? r.labels[0] : null, r.x, r.y])};
}"""


@pytest.fixture(scope="module")
def browser():
    """A fresh Chromium profile; fails (never skips) when the browser or Playwright is missing."""
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `bash scripts/setup.sh --browser` (installs Debian's "
                    "chromium with apt-get, as root) or point VL4POSE_CHROMIUM at a Chromium binary")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed in .venv: run `bash scripts/setup.sh` (pyproject's test extra)")
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=ARGS, viewport={"width": 1400, "height": 900})
        context.set_default_timeout(60_000)
        yield context
        context.close()


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


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
        assert cells[5] == _pct(r["served_pck"]) and cells[7] == _pct(r["holdout_pck"])
        assert cells[6] == (r["trained_version"] or "—")
    assert [shown[n][3] for n in (1, 2)] == [f"{BUDGET} / {BUDGET}"] * 2

    titles = page.locator("svg.chart circle title").all_text_contents()
    expected = [f"round {x}: {label} = {y:.3f}" for key, label in (
        ("served_pck", "served suggestions vs submitted (PCK@0.2)"),
        ("holdout_pck", "new model on the held-out set (PCK@0.2)")) for x, y in report["accuracy"][key]]
    assert sorted(titles) == sorted(expected) and len(titles) == 2 + 3  # rounds 1-2 served; rounds 0-2 held-out
    assert page.locator("svg.chart polyline").count() == 2
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
    page.goto(live.ls_url + "/user/login/")
    page.fill("input[name=email]", live.config.secrets.ls_username)
    page.fill("input[name=password]", live.config.secrets.ls_password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
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
