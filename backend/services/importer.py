"""Creating Label Studio tasks for link items, skipping images the project already has.

``local-files``: tasks point at ``/data/local-files/?d=<path>`` (a Local Files import storage is added
for each folder; Label Studio serves the files from its ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``).
Existing labels travel inside the task import as annotations. ``upload``: the files are uploaded
(Label Studio keeps a copy) and existing labels are added afterwards as annotations.
"""

from __future__ import annotations

import logging
import urllib.parse
from pathlib import Path

from backend.config import Settings
from backend.services.labelstudio import LabelStudio
from backend.services.sources import Item, annotation_results, local_files_url


log = logging.getLogger(__name__)

UPLOAD_CHUNK = 20


def _existing(ls: LabelStudio, ls_project_id: int, image_key: str) -> tuple[set[str], set[str]]:
    """URLs and uploaded file names already in the project."""
    urls, names = set(), set()
    for task in ls.list_tasks(ls_project_id):
        url = (task.get("data") or {}).get(image_key)
        if isinstance(url, str):
            urls.add(url)
            name = Path(urllib.parse.urlparse(url).path).name
            if url.startswith("/data/upload/") and "-" in name:
                names.add(name.split("-", 1)[1])
    return urls, names


def import_items(
    ls: LabelStudio,
    settings: Settings,
    ls_project_id: int,
    items: list[Item],
    config: dict,
    mode: str,
    with_annotations: bool,
) -> tuple[int, int]:
    """Create the tasks; returns (tasks created, annotations created). ``settings``: the local-files root and how many
    tasks one import request holds."""
    if not items:
        return 0, 0
    key = config["image_key"]
    urls, names = _existing(ls, ls_project_id, key)
    if mode == "local-files":
        return _import_local(ls, settings, ls_project_id, items, config, urls, with_annotations)
    todo = [i for i in items if i.path.name not in names]
    return _upload(ls, ls_project_id, todo, config, with_annotations)


def _import_local(
    ls: LabelStudio,
    settings: Settings,
    ls_project_id: int,
    items: list[Item],
    config: dict,
    existing: set[str],
    with_annotations: bool,
) -> tuple[int, int]:
    root = Path(settings.label_studio_files_root)
    storages = {s.get("path", "").rstrip("/") for s in ls.local_storages(ls_project_id)}
    for folder in sorted({str(i.path.parent) for i in items}):
        if not any(folder == s or folder.startswith(s + "/") for s in storages if s):
            ls.add_local_storage(ls_project_id, folder, f"vl4pose {Path(folder).name}")
            storages.add(folder)
    tasks, annotations = [], 0
    for item in items:
        url = local_files_url(item.path, root)
        if url is None or url in existing:
            continue
        task: dict = {"data": {config["image_key"]: url}}
        if with_annotations and item.labelled:
            task["annotations"] = [{"result": annotation_results(item, config)}]
            annotations += 1
        tasks.append(task)
    chunk = settings.import_chunk
    created = 0
    for start in range(0, len(tasks), chunk):
        created += len(ls.import_tasks(ls_project_id, tasks[start : start + chunk]))
    log.info(
        "imported %d tasks (%d with annotations) into Label Studio project %d", created, annotations, ls_project_id
    )
    return created, annotations


def _upload(
    ls: LabelStudio, ls_project_id: int, items: list[Item], config: dict, with_annotations: bool
) -> tuple[int, int]:
    created, annotations = 0, 0
    for start in range(0, len(items), UPLOAD_CHUNK):
        chunk = items[start : start + UPLOAD_CHUNK]
        task_ids = ls.upload_files(ls_project_id, [i.path for i in chunk])
        created += len(task_ids)
        if not with_annotations:
            continue
        for item, task_id in zip(chunk, task_ids):
            if item.labelled:
                ls.create_annotation(task_id, annotation_results(item, config))
                annotations += 1
    log.info(
        "uploaded %d images (%d with annotations) into Label Studio project %d", created, annotations, ls_project_id
    )
    return created, annotations
