"""Coordinator test fixtures: an app per test on a fresh SQLite file, huey in immediate mode, a fake Label
Studio (unit tests), real LSPET images served as local files, and the tiny checkpoint."""

from __future__ import annotations

import dataclasses

import pytest

from backend.config import PREFIX, Settings
from coord_fakes import SHARED_DATA, TOKEN, SECRET, FakeLabelStudio, base_config


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """Settings come from test configs only, never from the developer's shell."""
    for field in dataclasses.fields(Settings):
        monkeypatch.delenv(PREFIX + field.name.upper(), raising=False)


@pytest.fixture
def fake_ls() -> FakeLabelStudio:
    return FakeLabelStudio(SHARED_DATA)


@pytest.fixture
def make_app(tmp_path, fake_ls):
    """``make_app(**settings)`` -> a Flask app wired to ``fake_ls``; services at ``app.extensions["vl4pose"]``."""
    from backend import create_app

    apps = []

    def build(**overrides):
        app = create_app(base_config(tmp_path, **overrides), ls_factory=lambda: fake_ls)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["vl4pose"].close()


@pytest.fixture
def auth() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def hook_headers() -> dict:
    return {"X-VL4Pose-Secret": SECRET}


@pytest.fixture(scope="session")
def lspet_pool(lspet_dir):
    from vl4pose.data import load_samples

    return {s.sample_id: s for s in load_samples("lspet", lspet_dir, "pool")[:40]}


@pytest.fixture
def link(lspet_dir):
    """``link(app, **request fields)`` -> LinkResult: links LSPET pool images into the app's (fake) Label Studio."""
    from backend.services.linking import LinkRequest, link_project

    def run(app, **fields):
        values = {
            "dataset": "lspet",
            "data": str(lspet_dir),
            "split": "pool",
            "limit": 8,
            "labels": "ignore",
            "title": "unit test",
        }
        values.update(fields)
        return link_project(app.extensions["vl4pose"], LinkRequest(**values).validate())

    return run
