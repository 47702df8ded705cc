"""Browser tests: the dashboard and a Label Studio task in headless Chromium (Debian's ``chromium`` driven by
Playwright; no browser is downloaded). They save ``docs/screenshots/dashboard.png`` and
``docs/screenshots/labelstudio-task.png`` (linked from the README)."""

from __future__ import annotations

import pytest
from browser_helpers import SCREENSHOTS, SELECTED_ANNOTATION, ls_login
from e2e_helpers import BUDGET, effort_cell, pct_cell

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
