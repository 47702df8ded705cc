"""The whole system live: the session's real Label Studio, and the ML backend, coordinator and worker started
as separate processes on 127.0.0.1 by ``stack.services`` (exactly as ``scripts/start.sh`` runs them), with a
project of 40 LSPET pool images linked through the coordinator's CLI and the tiny model as version 0.

``two_rounds`` has the simulated annotator label two whole rounds through Label Studio's API and records
what it saw, for the end-to-end and browser tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from browser_helpers import chromium_context
from e2e_helpers import BUDGET, HOLDOUT, POOL, SHARED_DATA, Live, RoundLog
from waiting import wait_for


@pytest.fixture(scope="session")
def live(label_studio, tiny_checkpoint, lspet_dir, tmp_path_factory):
    from stack.process import free_port
    from stack.project import Coordinator, LinkSpec, link, round_ready
    from stack.config import Secrets, StackConfig
    from stack.services import start_service, stop_service

    storage = tmp_path_factory.mktemp("stack")
    secrets = Secrets(label_studio.username, label_studio.password, label_studio.token,
                      "e2e-api-token-0123456789abcdef", "e2e-webhook-secret-0123456789")
    ports = {"labelstudio": label_studio.port, "ml": free_port(), "coordinator": free_port()}
    settings = {"train_epochs": 1, "train_steps_per_epoch": 3, "train_batch_size": 4, "train_warmup_steps": 1,
                "train_val_fraction": 0.25, "rank_batch_size": 8, "import_chunk": 50, "reconcile_minutes": 1,
                "job_retry_delay_s": 2, "log_level": "INFO"}
    config = StackConfig(storage, secrets, SHARED_DATA, ports, settings=settings, torch_threads=1,
                         worker_threads=2, web_workers=2)
    try:
        for name in ("ml", "coordinator", "worker"):
            start_service(config, name, timeout=120)
        spec = LinkSpec("e2e loop", {"dataset": "lspet", "data": lspet_dir, "split": "pool", "limit": POOL,
                                     "labels": "ignore", "holdout_dataset": "lspet", "holdout_data": lspet_dir,
                                     "holdout_split": "test", "holdout_limit": HOLDOUT, "round_budget": BUDGET},
                        init_checkpoint=Path(tiny_checkpoint.path))
        linked = link(config, spec, timeout=600)
        coordinator = Coordinator(config.url("coordinator"), secrets.api_token)
        coordinator.wait(linked["project_id"], round_ready(linked["initial_version"]), "round 1 ranked", 600)
        session = requests.Session()
        session.headers.update(label_studio.headers)
        yield Live(config, linked, coordinator, session, label_studio.url)
    finally:
        for name in ("worker", "coordinator", "ml"):  # the session's Label Studio belongs to its own fixture
            stop_service(config, name)


def ml_version(live: Live, expected: str, timeout: float = 60.0) -> str | None:
    """The version the ML backend serves, once it is ``expected`` (it looks at the registry about once a second
    and loads a new version in the background), or whatever it still serves after ``timeout``."""
    seen = {}

    def serves() -> bool:
        health = requests.get(live.config.url("ml") + "/health", auth=live.config.ml_auth, timeout=5).json()
        seen["version"] = health["projects"].get(str(live.ls_project), {}).get("model_version")
        return seen["version"] == expected

    try:
        wait_for(serves, timeout, f"the ML backend to serve {expected}")
    except AssertionError:
        pass
    return seen.get("version")


@pytest.fixture(scope="session")
def two_rounds(live: Live, lspet_dir) -> list[RoundLog]:
    """The simulated annotator labels two rounds; returns a log per round."""
    from stack.annotator import GroundTruth, SimulatedAnnotator
    from vl4pose.registry import ModelRegistry

    truth = GroundTruth.load("lspet", lspet_dir, "pool", SHARED_DATA)
    annotator = SimulatedAnnotator(live.ls_url, live.config.secrets.ls_token, live.ls_project, truth)
    registry = ModelRegistry(live.config.storage / "models")
    logs = []
    for _ in range(2):
        version = annotator.project()["model_version"]
        log = RoundLog(version, {t: p["score"] for t, p in live.predictions(version).items()})
        log.registry_current = registry.current()
        log.ml_health_version = ml_version(live, version)
        log.labelled = annotator.run(BUDGET)
        logs.append(log)
        annotator.wait_for_new_version(version, timeout=600)
    wait_for(lambda: live.coordinator.project(live.project)["current_job"] is None, 300, "the jobs to finish")
    ml_version(live, annotator.project()["model_version"])
    return logs


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (a fresh profile per test module) for the browser tests."""
    with chromium_context() as context:
        yield context
