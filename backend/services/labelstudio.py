"""The Label Studio adapter: every call the coordinator makes to Label Studio goes through here.

Built on ``label-studio-sdk`` 2.1.2; the few endpoints the SDK does not wrap well (paged task listing,
the synchronous JSON export, file upload, image download) use the SDK's own authentication headers
over httpx. The connection, its error translation (:class:`LabelStudioUnavailable`: worth retrying;
:class:`LabelStudioError`: fix the request) and downloads are :class:`LabelStudioClient`'s
(:mod:`backend.services.labelstudio_client`); this module holds the calls themselves.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backend.services.labelstudio_client import LabelStudioClient, LabelStudioError

log = logging.getLogger(__name__)

WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
PAGE_SIZE = 1000
# Label Studio's ``include`` applies to nested objects too: the annotation fields reconcile reads must be named
TASK_WITH_ANNOTATIONS = (
    "id,updated_at,data,annotations,result,was_cancelled,created_at,task,project,parent_prediction,"
    "parent_annotation,completed_by,ground_truth,lead_time"
)


class LabelStudio(LabelStudioClient):
    """The coordinator's calls to one Label Studio server: projects, tasks, predictions, Data Manager views, the ML
    backend connection and webhooks."""

    # -- projects -----------------------------------------------------------------------------------
    def whoami(self) -> dict:
        return self.request_json("check the API token", "GET", "/api/current-user/whoami")

    def create_project(self, title: str, label_config: str) -> int:
        project = self.call("create a project", self.sdk.projects.create, title=title[:50], label_config=label_config)
        return int(project.id)

    def project(self, project_id: int) -> dict:
        return self.request_json(f"read project {project_id}", "GET", f"/api/projects/{project_id}/")

    def update_project(self, project_id: int, **fields: Any) -> None:
        self.call(f"update project {project_id}", self.sdk.projects.update, id=project_id, **fields)

    # -- tasks and storage --------------------------------------------------------------------------
    def local_storages(self, project_id: int) -> list[dict]:
        return self.request_json(
            "list local storages", "GET", "/api/storages/localfiles/", params={"project": project_id}
        )

    def add_local_storage(self, project_id: int, path: str, title: str) -> int:
        storage = self.call(
            "add a local-files storage",
            self.sdk.import_storage.local.create,
            project=project_id,
            path=str(Path(path).resolve()),  # Label Studio compares it to its (resolved) document root
            title=title[:64],
            use_blob_urls=False,
        )
        return int(storage.id)

    def import_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        """Create tasks (``{"data": {...}, "annotations": [...]?}``); returns their ids in order."""
        response = self.call(
            "import tasks", self.sdk.projects.import_tasks, id=project_id, request=tasks, return_task_ids=True
        )
        return [int(t) for t in (response.task_ids or [])]

    def create_annotation(self, task_id: int, result: list[dict]) -> int:
        annotation = self.call(f"annotate task {task_id}", self.sdk.annotations.create, id=task_id, result=result)
        return int(annotation.id)

    def upload_files(self, project_id: int, paths: list[Path]) -> list[int]:
        """Upload image files as new tasks; returns the task ids (one per file, in order)."""
        handles = [open(p, "rb") for p in paths]
        try:
            files = {
                f"file{i}": (p.name, h, "application/octet-stream") for i, (p, h) in enumerate(zip(paths, handles))
            }
            body = self.request_json(
                "upload images",
                "POST",
                f"/api/projects/{project_id}/import",
                params={"return_task_ids": "true"},
                files=files,
            )
        finally:
            for handle in handles:
                handle.close()
        return [int(t) for t in body.get("task_ids", [])]

    def list_tasks(self, project_id: int) -> Iterator[dict]:
        """Every task of a project (``id``, ``data``, ``total_annotations``, ``cancelled_annotations``...)."""
        page = 1
        while True:
            response = self._http_tasks_page(project_id, page)
            if response is None:
                return
            yield from response["tasks"]
            if page * PAGE_SIZE >= int(response.get("total", 0)):
                return
            page += 1

    def _http_tasks_page(self, project_id: int, page: int) -> dict | None:
        try:
            return self.request_json(
                "list tasks",
                "GET",
                "/api/tasks/",
                params={"project": project_id, "fields": "task_only", "page": page, "page_size": PAGE_SIZE},
            )
        except LabelStudioError as exc:
            if exc.ls_status == 404:  # past the last page
                return None
            raise

    def task_page(self, project_id: int, page: int, page_size: int) -> tuple[list[dict], int]:
        """One page (1-based) of a project's tasks in id order with only ``id``, ``data``, ``total_annotations`` and
        ``cancelled_annotations`` (no predictions: pages stay small whatever the project); ``([], total)`` past the
        end."""
        try:
            body = self.request_json(
                "list tasks",
                "GET",
                "/api/tasks/",
                params={
                    "project": project_id,
                    "fields": "task_only",
                    "include": "id,data,total_annotations,cancelled_annotations",
                    "page": page,
                    "page_size": page_size,
                    "query": json.dumps({"ordering": ["tasks:id"]}),
                },
            )
        except LabelStudioError as exc:
            if exc.ls_status == 404:  # past the last page
                return [], 0
            raise
        return list(body.get("tasks") or []), int(body.get("total") or 0)

    def tasks_after(self, project_id: int, key: str, after: int | str | None, page_size: int) -> list[dict]:
        """Keyset paging through a project's tasks with their annotations (``id``, ``updated_at``, ``data``,
        ``annotations``): the first ``page_size`` tasks whose ``key`` (``id`` or ``updated_at``, Label Studio's clock,
        ``%Y-%m-%dT%H:%M:%S.%fZ``) is greater than ``after``, in ``key`` order. Tasks changing while a caller pages
        are never skipped (a page offset would shift). Annotations carry the fields in :data:`TASK_WITH_ANNOTATIONS`
        (no predictions: pages stay small)."""
        kind = "Number" if key == "id" else "Datetime"
        items = [] if after is None else [{"filter": f"filter:tasks:{key}", "operator": "greater", "type": kind,
                                            "value": after}]
        query = {"filters": {"conjunction": "and", "items": items}, "ordering": [f"tasks:{key}", "tasks:id"]}
        body = self.request_json(
            "list changed tasks",
            "GET",
            "/api/tasks/",
            params={
                "project": project_id,
                "fields": "all",
                "include": TASK_WITH_ANNOTATIONS,
                "page": 1,
                "page_size": page_size,
                "query": json.dumps(query),
            },
        )
        return list(body.get("tasks") or [])

    def export_annotated(self, project_id: int) -> list[dict]:
        """All annotated tasks with their annotations (Label Studio's synchronous JSON export)."""
        data = self.request_json(
            "export annotations",
            "GET",
            f"/api/projects/{project_id}/export",
            params={"exportType": "JSON", "download_all_tasks": "false"},
        )
        if not isinstance(data, list):
            raise LabelStudioError(f"the export of project {project_id} is not a list of tasks")
        return data

    def import_predictions(self, project_id: int, predictions: list[dict]) -> int:
        """Bulk-create predictions ``{"task", "result", "score", "model_version"}``; returns the count."""
        response = self.request(
            "import predictions", "POST", f"/api/projects/{project_id}/import/predictions", json=predictions
        )
        body = self.decode_json("import predictions", response) if response.content else {}
        return int(body.get("created", len(predictions))) if isinstance(body, dict) else len(predictions)

    def model_versions(self, project_id: int) -> dict[str, int]:
        """The model versions of a project's predictions with their prediction counts."""
        body = self.request_json("list model versions", "GET", f"/api/projects/{project_id}/model-versions/")
        return {str(k): int(v or 0) for k, v in body.items()} if isinstance(body, dict) else {}

    def delete_predictions(self, project_id: int, model_version: str, timeout: float | None = None) -> int:
        """Delete every prediction of one model version in one request (``DELETE /api/projects/<id>/model-versions/``,
        Label Studio 1.23); returns how many were deleted. Label Studio clears the project's ``model_version`` when it
        is this version (or an ML backend's title): never call it for the version the queue uses. ``timeout``: this
        request's deadline in seconds (None: the adapter's)."""
        body = self.request_json(
            f"delete the predictions of {model_version}",
            "DELETE",
            f"/api/projects/{project_id}/model-versions/",
            json={"model_version": model_version},
            **({"timeout": timeout} if timeout is not None else {}),
        )
        return int(body.get("deleted_predictions", 0)) if isinstance(body, dict) else 0

    # -- Data Manager views --------------------------------------------------------------------------
    def views(self, project_id: int) -> list[dict]:
        found = self.request_json("list Data Manager views", "GET", "/api/dm/views/", params={"project": project_id})
        return [{"id": v["id"], "title": (v.get("data") or {}).get("title"), "data": v.get("data") or {}} for v in found]

    def add_view(self, project_id: int, title: str, ordering: list[str]) -> int:
        """A Data Manager tab; its ordering is also the order of "Label All Tasks" (Label Studio's DM queue)."""
        view = self.request_json(
            "add a Data Manager view",
            "POST",
            "/api/dm/views/",
            json={"project": project_id, "data": {"title": title, "ordering": ordering}},
        )
        return int(view["id"])

    # -- ML backend and webhooks --------------------------------------------------------------------
    def ml_backends(self, project_id: int) -> list[dict]:
        backends = self.call("list ML backends", self.sdk.ml.list, project=project_id)
        return [{"id": b.id, "url": b.url, "title": b.title} for b in backends]

    def add_ml_backend(self, project_id: int, url: str, title: str, basic_auth: tuple[str, str] | None = None) -> int:
        """Connect the ML backend (interactive); with ``basic_auth`` Label Studio sends it HTTP Basic credentials."""
        auth: dict[str, Any] = {}
        if basic_auth:
            auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": basic_auth[0], "basic_auth_pass": basic_auth[1]}
        backend = self.call(
            "connect the ML backend",
            self.sdk.ml.create,
            project=project_id,
            url=url,
            title=title,
            is_interactive=True,
            **auth,
        )
        return int(backend.id)

    def set_ml_backend_auth(self, backend_id: int, basic_auth: tuple[str, str]) -> None:
        """Give an already connected ML backend HTTP Basic credentials (e.g. after an upgrade turned auth on)."""
        self.request(
            "set the ML backend's credentials",
            "PATCH",
            f"/api/ml/{backend_id}",
            json={"auth_method": "BASIC_AUTH", "basic_auth_user": basic_auth[0], "basic_auth_pass": basic_auth[1]},
        )

    def webhooks(self, project_id: int) -> list[dict]:
        hooks = self.call("list webhooks", self.sdk.webhooks.list, project=str(project_id))
        return [{"id": h.id, "url": h.url, "project": h.project} for h in hooks]

    def add_webhook(self, project_id: int, url: str, headers: dict[str, str]) -> int:
        hook = self.call(
            "register the coordinator's webhook",
            self.sdk.webhooks.create,
            project=project_id,
            url=url,
            send_payload=True,
            send_for_all_actions=False,
            actions=list(WEBHOOK_ACTIONS),
            headers=headers,
            is_active=True,
        )
        return int(hook.id)

    def update_webhook(self, webhook_id: int, url: str, headers: dict[str, str]) -> None:
        self.call(
            "update the coordinator's webhook",
            self.sdk.webhooks.update,
            id=webhook_id,
            url=url,
            headers=headers,
            actions=list(WEBHOOK_ACTIONS),
            send_payload=True,
            send_for_all_actions=False,
            is_active=True,
        )
