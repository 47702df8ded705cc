"""Linking a project through the coordinator's CLI, and waiting for its first ranking.

``python -m backend link ... --json`` runs as a child with the same wiring as the running services, exactly
as a user would run it; the coordinator's JSON API then tells when round 1 is ranked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from stack.labelstudio import connect, ensure_ml_basic_auth
from stack.config import REPO, StackConfig, StackError


@dataclass
class LinkSpec:
    """What to link (``python -m backend link`` options by name, without the leading dashes)."""

    title: str
    options: dict[str, object] = field(default_factory=dict)
    init_checkpoint: Path | None = None

    def argv(self) -> list[str]:
        args = ["--title", self.title]
        for name, value in self.options.items():
            if value is not None:
                args += [f"--{name.replace('_', '-')}", str(value)]
        if self.init_checkpoint is not None:
            args += ["--init-checkpoint", str(self.init_checkpoint)]
        return args


def link(config: StackConfig, spec: LinkSpec, timeout: float = 1800.0) -> dict:
    """Run the link; returns its JSON result (``project_id``, ``ls_project_id``, ``initial_version``, ...)."""
    argv = [sys.executable, "-m", "backend", "link", *spec.argv(), "--json"]
    done = subprocess.run(argv, cwd=REPO, env=config.environment("coordinator"), capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise StackError(f"linking the project failed: {done.stderr.strip()[-2000:] or done.stdout[-2000:]}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        raise StackError(f"linking printed no JSON result: {done.stdout[-2000:]}") from None


class Coordinator:
    """A small client of the coordinator's JSON API."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **params: object) -> dict:
        response = self.http.get(self.url + path, params=params, timeout=30)
        if response.status_code != 200:
            raise StackError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def project(self, project_id: int) -> dict:
        return self.get(f"/api/projects/{project_id}")

    def wait(self, project_id: int, done, what: str, timeout: float, show=None) -> dict:
        """Poll the project's report until ``done(report)``; ``show(report)`` reports progress."""
        deadline = time.monotonic() + timeout
        while True:
            report = self.project(project_id)
            # a failed job stops the wait; a failed webhook event (``event_id``) is isolated by the coordinator and
            # shown on the dashboard, and the round goes on without it
            failed = [f for f in report["failures"] if f["state"] == "failed" and "event_id" not in f]
            if done(report):
                return report
            if failed:
                raise StackError(f"{what}: {failed[0]['what']} failed: {failed[0]['error']}")
            if time.monotonic() > deadline:
                raise StackError(f"{what} did not happen within {timeout:.0f} s; see the dashboard and storage/logs/")
            if show is not None:
                show(report)
            time.sleep(1.0)


def round_ready(version: str | None):
    """A predicate: the project's open round is served by ``version`` (any version when None) and no job runs."""

    def done(report: dict) -> bool:
        current = report["current_round"] or {}
        served = current.get("model_version")
        return (
            current.get("state") == "open"
            and report["current_job"] is None
            and (served == version if version else served is not None)
        )

    return done


def job_progress_printer(stream=sys.stdout):
    """Prints the coordinator's current job as it changes (one line per stage)."""
    last = {"text": None}

    def show(report: dict) -> None:
        job = report["current_job"]
        if not job:
            return
        text = f"  coordinator: {job['kind']} job {job['state']}, {100 * job['progress']:.0f} %: {job['stage']}"
        if text != last["text"]:
            stream.write(text + "\n")
            stream.flush()
            last["text"] = text

    return show


def ml_serves(config: StackConfig, version: str, project: int | str, timeout: float = 120.0) -> None:
    """Wait until the ML backend serves ``version`` to Label Studio project ``project`` (it polls that project's
    ``CURRENT`` in the registry)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            health = requests.get(config.url("ml") + "/health", auth=config.ml_auth, timeout=3).json()
            served = health.get("projects", {}).get(str(project), {})
            if served.get("model_version") == version and served.get("model_loaded"):
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.5)
    raise StackError(f"the ML backend does not serve {version} to Label Studio project {project} after "
                     f"{timeout:.0f} s; see storage/logs/ml.log")


def ensure_ml_auth(config: StackConfig, ls_project_ids: list[int]) -> int:
    """Give the ML backend connections of these Label Studio projects the backend's HTTP Basic credentials (a
    storage linked before the ML backend required authentication); returns how many were updated."""
    if not ls_project_ids:
        return 0
    client = connect(config.url("labelstudio"), config.secrets.ls_token, timeout=30.0)
    try:
        return ensure_ml_basic_auth(client, ls_project_ids, config.url("ml"), config.ml_auth)
    finally:
        client.close()
