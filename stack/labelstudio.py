"""Label Studio as the stack sees it: a real Label Studio 1.23.2 started and stopped from its own virtualenv
(``.lsvenv``), bound to 127.0.0.1, and every call the stack makes to its API.

Used by the product's start script and by the integration tests. Label Studio runs as a subprocess
and only talks HTTP: our code never imports it. The stack calls its API through the coordinator's adapter
(:class:`backend.services.labelstudio.LabelStudio`: timeouts, errors that say what failed, messages without
the token), opened by :func:`connect`; the few calls the coordinator never makes (the label stream's next task,
an annotation started from a prediction, the ML backend connection's credentials, the counts and listings the
benchmarks and ``scripts/load_and_faults.py`` read) are the functions below. Their failures are the adapter's
errors (:mod:`backend.services.labelstudio_client`), both :class:`~backend.errors.CoordinatorError`:
``LabelStudioUnavailable`` (unreachable, timed out, 5xx; a ``TransientError``) and ``LabelStudioError`` (refused,
or an answer that is not JSON or not of the expected shape).
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from backend.errors import CoordinatorError
from backend.services.labelstudio import LabelStudio, LabelStudioError as AdapterError
from stack.process import free_port, port_is_free, stop_process_group

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VENV = REPO / ".lsvenv"
BATCHED_PREDICTION_IMPORT = "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short"
"""Label Studio 1.23's feature flag (off by default) for its batched prediction import. Off, every
``POST /api/projects/<id>/import/predictions`` recounts the predictions of *every* task of the project, so a call
slows down as the project grows (docs/RESULTS.md, "Label Studio's prediction import"); on, it recounts only
the tasks it touched. On, Label Studio also skips its per-prediction label-config check (off, a malformed prediction
is dropped and logged): the coordinator builds its predictions from the project's own label config."""


class LabelStudioError(RuntimeError):
    """Label Studio could not be started or did not become ready."""


@dataclass
class LabelStudioServer:
    """A Label Studio process with a known admin and legacy API token.

    Attributes:
        data_dir: its ``LABEL_STUDIO_BASE_DATA_DIR`` (SQLite database, uploads, secret key).
        port: the port on 127.0.0.1 (must be free: Label Studio silently moves to another one otherwise).
        username, password, token: admin account created on the first start of ``data_dir``.
        files_root: folder served as local files (``/data/local-files/?d=<path under it>``), or None.
        batched_prediction_import: turn on :data:`BATCHED_PREDICTION_IMPORT` (off only to measure the difference).
    """

    data_dir: Path
    port: int = field(default_factory=free_port)
    username: str = "admin@example.com"
    password: str = "vl4pose-admin"
    token: str = "vl4pose-label-studio-token-0001"
    files_root: Path | None = None
    venv: Path = DEFAULT_VENV
    batched_prediction_import: bool = True
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_"))}
        env.update({
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "LABEL_STUDIO_USERNAME": self.username,
            "LABEL_STUDIO_PASSWORD": self.password,
            "LABEL_STUDIO_USER_TOKEN": self.token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
            "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
            "LABEL_STUDIO_SENTRY_DSN": "",
            "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "",
            "SENTRY_DSN": "",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            BATCHED_PREDICTION_IMPORT: "true" if self.batched_prediction_import else "false",
        })
        if self.files_root is not None:
            env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "true"
            # links resolved, like every storage path we give it (Label Studio compares resolved paths)
            env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(Path(self.files_root).resolve())
        env.pop("VIRTUAL_ENV", None)
        return env

    def start(self, timeout: float = 180.0, log_file: Path | None = None) -> "LabelStudioServer":
        """Start the server and wait until the API answers with the token."""
        executable = self.venv / "bin" / "label-studio"
        if not executable.exists():
            raise LabelStudioError(f"{executable} not found; run `bash scripts/setup.sh` to install Label Studio")
        if not port_is_free(self.port):
            raise LabelStudioError(f"port {self.port} on 127.0.0.1 is busy; choose another port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = open(log_file or self.data_dir / "label-studio.log", "ab")
        self.process = subprocess.Popen(
            [str(executable), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
             "--host", self.url],
            env=self.environment(), stdout=out, stderr=subprocess.STDOUT, cwd=self.data_dir, start_new_session=True,
        )
        out.close()
        self.wait_ready(timeout)
        log.info("Label Studio ready at %s (pid %d)", self.url, self.process.pid)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = connect(self.url, self.token, timeout=2.0)
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise LabelStudioError(f"Label Studio exited with code {self.process.returncode}; "
                                           f"see {self.data_dir / 'label-studio.log'}")
                if answers(client):
                    return
                time.sleep(1.0)
        finally:
            client.close()
        self.stop()
        raise LabelStudioError(f"Label Studio did not answer on {self.url} within {timeout:.0f} s; "
                               f"see {self.data_dir / 'label-studio.log'}")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and every process it started."""
        if self.process is not None:
            stop_process_group(self.process, timeout, kill_wait=5.0)

    def __enter__(self) -> "LabelStudioServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the stack's API calls --------------------------------------------------------------------------------
def connect(url: str, token: str, timeout: float = 60.0) -> LabelStudio:
    """The coordinator's Label Studio adapter for ``url`` with ``token`` (``timeout`` seconds per request)."""
    return LabelStudio(url, token, timeout=timeout)


def answers(client: LabelStudio) -> bool:
    """Label Studio answers its API with the client's token (False while it starts, is down or refuses it)."""
    try:
        client.whoami()
    except (CoordinatorError, ValueError):
        return False
    return True


def _not_found(exc: CoordinatorError) -> bool:
    """A 404 from the adapter."""
    return isinstance(exc, AdapterError) and exc.ls_status == 404


def _shape(what: str, expected: str, body: object) -> AdapterError:
    return AdapterError(f"Label Studio's answer to {what} is not {expected}: {str(body)[:200]!r}")


def next_task(client: LabelStudio, project_id: int) -> dict | None:
    """The next task of the project's label stream (``GET /api/projects/<id>/next/``), None when every task is
    labelled (Label Studio answers 404)."""
    what = "take the next task of the label stream"
    try:
        task = client.request_json(what, "GET", f"/api/projects/{project_id}/next/")
    except CoordinatorError as exc:
        if _not_found(exc):
            return None
        raise
    if not isinstance(task, dict) or "id" not in task:
        raise _shape(what, "a task", task)
    return task


def submit_annotation(client: LabelStudio, task_id: int, result: list[dict], lead_time: float,
                      parent_prediction: int | None = None) -> int:
    """Annotate a task as a person would (``lead_time`` seconds spent; started from ``parent_prediction`` when
    given, which tells an accepted or corrected suggestion from a fresh annotation); returns the annotation id."""
    body: dict = {"result": result, "lead_time": lead_time}
    if parent_prediction is not None:
        body["parent_prediction"] = parent_prediction
    what = f"annotate task {task_id}"
    created = client.request_json(what, "POST", f"/api/tasks/{task_id}/annotations/", json=body)
    try:
        return int(created["id"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        raise _shape(what, "an annotation with an id", created) from None


def ensure_ml_basic_auth(client: LabelStudio, ls_project_ids: list[int], ml_url: str,
                         basic_auth: tuple[str, str]) -> int:
    """Give the ML backend connections (at ``ml_url``) of these projects HTTP Basic credentials when they have
    none (a project linked before the ML backend required them); returns how many were updated. A project whose
    connections cannot be read or changed is skipped (the start goes on; the ML backend answers 401 there)."""
    updated, ml_url = 0, ml_url.rstrip("/")
    for project in ls_project_ids:
        try:
            # the adapter's ml_backends() leaves out auth_method, which this needs
            backends = client.request_json("list ML backends", "GET", "/api/ml/", params={"project": project})
            unauthenticated = [int(b["id"]) for b in backends if str(b.get("url", "")).rstrip("/") == ml_url
                               and b.get("auth_method") != "BASIC_AUTH"]
        except (CoordinatorError, ValueError, TypeError, KeyError, AttributeError):
            continue
        for backend_id in unauthenticated:
            try:
                client.set_ml_backend_auth(backend_id, basic_auth)
            except CoordinatorError:
                continue
            updated += 1
    return updated


def label_config(client: LabelStudio, project_id: int) -> str:
    """The project's labelling config (XML)."""
    what = f"read project {project_id}"
    project = client.request_json(what, "GET", f"/api/projects/{project_id}/")
    if not isinstance(project, dict) or not isinstance(project.get("label_config"), str):
        raise _shape(what, "a project with a label_config", project)
    return project["label_config"]


def prediction_counts(client: LabelStudio, project_id: int, page_size: int = 1000) -> list[int]:
    """Every task's prediction count from Label Studio's own counter (``total_predictions``), the tasks read in
    pages of ``page_size`` with only ``id`` and ``total_predictions``."""
    what, counts, page = "count the predictions per task", [], 1
    while True:
        try:
            body = client.request_json(what, "GET", "/api/tasks/", params={
                "project": project_id, "fields": "task_only", "include": "id,total_predictions", "page": page,
                "page_size": page_size})
        except CoordinatorError as exc:
            if _not_found(exc):  # past the last page
                return counts
            raise
        try:
            tasks = body.get("tasks") or []  # type: ignore[union-attr]
            counts += [int(t["total_predictions"]) for t in tasks]
            total = int(body.get("total") or 0)  # type: ignore[union-attr]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise _shape(what, "a page of tasks with total_predictions", body) from None
        if not tasks or page * page_size >= total:
            return counts
        page += 1


def predictions(client: LabelStudio, project_id: int) -> list[dict]:
    """Every prediction of the project (``GET /api/predictions/?project=<id>``: one request, unpaged)."""
    what = f"list the predictions of project {project_id}"
    listed = client.request_json(what, "GET", "/api/predictions/", params={"project": project_id})
    if not isinstance(listed, list) or not all(isinstance(p, dict) and "task" in p for p in listed):
        raise _shape(what, "a list of predictions", listed)
    return listed


def annotation_ids(client: LabelStudio, project_id: int, page_size: int = 1000) -> set[int]:
    """The ids of every annotation of the project's tasks (submitted or cancelled), the tasks read in id order
    with the adapter's keyset paging (:meth:`~backend.services.labelstudio.LabelStudio.tasks_after`)."""
    ids: set[int] = set()
    after = None
    while True:
        tasks: object = None
        try:
            tasks = client.tasks_after(project_id, "id", after, page_size)
            for task in tasks:
                ids |= {int(a["id"]) for a in task.get("annotations") or []}
            after = int(tasks[-1]["id"]) if tasks else None
        except (KeyError, TypeError, ValueError, AttributeError):
            raise _shape(f"list the annotations of project {project_id}", "tasks with annotation ids",
                         tasks) from None
        if len(tasks) < page_size:
            return ids
