"""Shared pieces of the browser tests: the Chromium launch, Label Studio's login, and what the labelling
interface holds (read from its store, ``window.Htx``)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import REPO

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


@contextlib.contextmanager
def chromium_context() -> Iterator[object]:
    """A fresh Chromium profile (Playwright ``BrowserContext``); fails (never skips) when the browser or
    Playwright is missing."""
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


def ls_login(page, live) -> None:
    """Log a Playwright page into the live Label Studio as its admin."""
    login(page, live.ls_url, live.config.secrets.ls_username, live.config.secrets.ls_password)


def login(page, ls_url: str, username: str, password: str) -> None:
    """Log a Playwright page into a Label Studio as the given user (nothing to do when the browser context is
    logged in already: Label Studio then redirects the login page away)."""
    page.goto(ls_url + "/user/login/")
    page.wait_for_load_state("networkidle")
    if "/user/login" not in page.url:
        return
    page.fill("input[name=email]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
