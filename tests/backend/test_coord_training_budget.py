"""Round training under a time budget: the setting, the job's TrainConfig, the dashboard and the API."""

from __future__ import annotations

import pytest
from coord_fakes import TOKEN

from backend.config import Settings, SettingsError
from backend.services.training import train_config


def test_a_time_budget_reaches_the_rounds_train_config(make_app):
    app = make_app(queue="memory", train_time_budget_minutes=12.0)
    fields = train_config(app.extensions["vl4pose"].settings, round_number=3, heads=["bones"])
    assert fields["time_budget_s"] == 720.0 and fields["epochs"] >= 100  # the budget, not the epochs, ends it
    services = make_app(queue="memory").extensions["vl4pose"]
    plain = train_config(services.settings, round_number=3, heads=["bones"])
    assert plain["time_budget_s"] is None and plain["epochs"] == services.settings.train_epochs


def test_a_negative_budget_is_refused_with_what_to_set():
    with pytest.raises(SettingsError, match="TRAIN_TIME_BUDGET_MINUTES"):
        Settings.from_env({"VL4POSE_TRAIN_TIME_BUDGET_MINUTES": "-1"}, require_secrets=False)


def test_the_dashboard_and_the_api_show_the_training_budget(make_app, link):
    app = make_app(queue="memory", train_time_budget_minutes=15.0)
    link(app, limit=4)
    client = app.test_client()
    report = client.get("/api/projects/1", headers={"Authorization": f"Bearer {TOKEN}"}).json
    assert report["training_budget"] == "15 min per round"
    client.post("/login", data={"token": TOKEN})
    assert "Training: 15 min per round" in client.get("/projects/1").get_data(as_text=True)
