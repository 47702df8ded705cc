"""Dataset export: every submitted annotation of a project, the latest per task (or as it stood after a round),
in image pixels, as COCO, LSP or Label Studio JSON with the images and a provenance file.

Three ways in, one code path (:func:`export_dataset`): ``python -m backend export`` runs it directly; the API
and the dashboard submit an ``export`` job (:mod:`backend.jobs.export`) whose zip is then downloaded. Inputs are
checked before any work, and the result is written under a temporary name beside the target and moved into
place with ``os.replace`` at the end: a failed export leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import urllib.parse
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from backend.db import Database
from backend.errors import Conflict, CoordinatorError, NotFound, TransientError
from backend.models import AnnotationRecord, JobKind, Project, Round
from backend.services.annotations import keypoints_from_json
from backend.services.base import JobQueue, Services
from backend.services.export_formats import FORMATS, ExportItem, ExportSet, check_format, write
from backend.services.history import latest_per_task, versions_as_of
from backend.services.images import ImageStore
from backend.services.reconcile import reconcile
from vl4pose.data.sample import image_size
from vl4pose.errors import ImageError
from vl4pose.skeletons import get_skeleton


log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
IMAGE_CHUNK = 64


def check_request(db: Database, project_id: int, fmt: str, round_number: int | None) -> None:
    """Validate an export request cheaply (project, format vs skeleton, round, at least one annotation)."""
    collect(db, project_id, fmt, round_number)


def check_out(out: Path) -> None:
    """The output path must not exist and its folder must."""
    if out.exists() or out.is_symlink():
        raise Conflict(f"{out} already exists; choose a new --out path or remove it first")
    if not out.parent.is_dir():
        raise CoordinatorError(f"folder {out.parent} does not exist; create it or choose another --out path")


def collect(db: Database, project_id: int, fmt: str, round_number: int | None) -> ExportSet:
    """The annotations to export (images not yet fetched).

    Raises:
        NotFound: no such project. CoordinatorError: unknown format, a skeleton the format cannot hold, a round
        the project never had, or nothing to export.
    """
    with db.session() as session:
        project = session.get(Project, project_id)
        if project is None:
            raise NotFound(f"project {project_id} does not exist; `python -m backend status` lists the projects")
        skeleton = get_skeleton(project.skeleton)
        check_format(fmt, skeleton)
        latest_round = session.scalar(
            select(Round.number).where(Round.project_id == project_id).order_by(Round.number.desc()).limit(1)
        )
        if round_number is not None and not 0 <= round_number <= (latest_round or 0):
            raise CoordinatorError(
                f"project {project_id} has rounds 0..{latest_round or 0} (0: labels from before round 1); "
                f"round {round_number} does not exist"
            )
        versions = latest_per_task(versions_as_of(session, project_id, round_number))
        records = {
            r.annotation_id: r
            for r in session.scalars(
                select(AnnotationRecord).where(
                    AnnotationRecord.project_id == project_id,
                    AnnotationRecord.annotation_id.in_([v.annotation_id for v in versions]),
                )
            )
        }
        numbers = dict(session.execute(select(Round.id, Round.number).where(Round.project_id == project_id)).all())
        k = skeleton.num_keypoints
        items, empty = [], 0
        for v in versions:
            visibility = np.zeros(k, dtype=np.int64)
            visibility[: len(v.visibility)] = np.asarray(v.visibility[:k], dtype=np.int64)
            keypoints = keypoints_from_json(v.keypoints, k)
            visibility[~np.isfinite(keypoints).all(axis=1)] = 0
            if not visibility.any():
                empty += 1
                continue
            record = records.get(v.annotation_id)
            items.append(
                ExportItem(
                    task_id=v.task_id,
                    annotation_id=v.annotation_id,
                    image_url=v.image_url,
                    keypoints=keypoints,
                    visibility=visibility,
                    round=numbers.get(record.round_id, 0) if record and record.round_id else v.round_number,
                    served_model_version=v.served_model_version,
                    accepted=v.accepted,
                    holdout=bool(record.holdout) if record else False,
                    updated_at=v.updated_at,
                )
            )
        info = {"id": project.id, "ls_project_id": project.ls_project_id, "title": project.title}
        export = ExportSet(info, skeleton, dict(project.label_config), fmt, round_number, items,
                           {"empty_annotations": empty})
    if not items:
        when = f" up to round {round_number}" if round_number is not None else ""
        raise CoordinatorError(
            f"project {project_id} has no submitted annotation with keypoints{when}; label some tasks in Label "
            "Studio (and run `python -m backend reconcile` if webhooks were lost) before exporting"
        )
    return export


def _image_name(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    query = urllib.parse.parse_qs(parsed.query)
    name = Path(query["d"][0] if "d" in query else urllib.parse.unquote(parsed.path)).name
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "image"


def fetch_images(images: ImageStore, export: ExportSet, progress: Progress) -> None:
    """Find (or download) every item's image, read its size and give it a unique file name.

    Raises:
        TransientError: Label Studio is unreachable (a job retries). CoordinatorError: images that cannot be
        read, named, with what to check.
    """
    items = export.items
    missing: list[str] = []
    for start in range(0, len(items), IMAGE_CHUNK):
        chunk = items[start : start + IMAGE_CHUNK]
        for item, found in zip(chunk, images.get_many([i.image_url for i in chunk])):
            if isinstance(found, TransientError):
                raise found
            if isinstance(found, CoordinatorError) or not item.image_url:
                missing.append(f"task {item.task_id} ({found if isinstance(found, Exception) else 'no image URL'})")
                continue
            try:
                item.source, item.size = found, image_size(found)
            except ImageError as exc:
                missing.append(f"task {item.task_id} ({exc})")
        progress(0.05 + 0.75 * min(len(items), start + IMAGE_CHUNK) / len(items), "reading images")
    if missing:
        raise CoordinatorError(
            f"{len(missing)} image(s) cannot be read, e.g. {missing[:3]}; check VL4POSE_LABEL_STUDIO_FILES_ROOT "
            "and that Label Studio serves them, then export again"
        )
    names = Counter(_image_name(item.image_url) for item in items)
    for item in items:
        name = _image_name(item.image_url)
        item.name = name if names[name] == 1 else f"{item.task_id}-{name}"
        if not Path(name).suffix:
            item.name += item.source.suffix if item.source else ""


def export_dataset(
    services: Services,
    project_id: int,
    fmt: str,
    out: Path,
    round_number: int | None = None,
    progress: Progress | None = None,
    sync: bool = True,
) -> dict[str, Any]:
    """Export a project's labelled dataset to ``out``: a new folder, or a ``.zip`` file.

    Args:
        fmt: ``coco``, ``lsp`` (``lsp14`` projects only) or ``labelstudio``.
        round_number: export the dataset as it stood after this round (None: now).
        progress: called with (fraction in [0, 1], stage).
        sync: read Label Studio's annotations first (reconcile) when exporting the current state.

    Returns:
        ``{"out", "format", "round", "annotations", "files", "seconds", "outcomes", "skipped"}``.
    """
    started = time.monotonic()
    out = Path(out)
    report = progress or (lambda fraction, stage: None)
    check_out(out)
    collect(services.db, project_id, fmt, round_number)  # fail fast, before talking to Label Studio
    if sync and round_number is None:
        report(0.01, "reading annotations from Label Studio")
        reconcile(services, project_id, close_rounds=False)
    export = collect(services.db, project_id, fmt, round_number)
    report(0.05, f"{len(export.items)} annotations; reading images")
    fetch_images(services.images, export, report)
    report(0.8, "writing files")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        files = write(export, tmp)
        if out.suffix.lower() == ".zip":
            archive = tmp.with_name(tmp.name + ".zip")
            try:
                _zip(tmp, archive)
                os.replace(archive, out)
            finally:
                archive.unlink(missing_ok=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.monotonic() - started
    provenance_counts = Counter("no suggestion" if i.accepted is None else "accepted" if i.accepted else "corrected"
                                for i in export.items)
    log.info("exported %d annotations of project %d as %s to %s in %.1f s", len(export.items), project_id, fmt,
             out, seconds)
    report(1.0, f"exported {len(export.items)} annotations")
    return {
        "out": str(out),
        "format": fmt,
        "round": round_number,
        "annotations": len(export.items),
        "files": files,
        "seconds": round(seconds, 2),
        "outcomes": dict(provenance_counts),
        "skipped": export.skipped,
    }


def _zip(folder: Path, archive: Path) -> None:
    """Zip a folder's files (JPEGs stored, the rest deflated)."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stored = path.suffix.lower() in (".jpg", ".jpeg", ".png")
                zf.write(path, path.relative_to(folder).as_posix(),
                         compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)


def export_file_name(project_id: int, fmt: str, round_number: int | None) -> str:
    """``project-3-coco.zip`` / ``project-3-coco-round-2.zip``."""
    suffix = f"-round-{round_number}" if round_number is not None else ""
    return f"project-{project_id}-{fmt}{suffix}.zip"


def submit_export(db: Database, jobs: JobQueue, project_id: int, fmt: Any, round_number: Any = None) -> int:
    """Validate a request and queue an ``export`` job; returns its id (the zip is in its payload when done)."""
    if not isinstance(fmt, str):
        raise CoordinatorError(f"'format' must be one of {list(FORMATS)}")
    if round_number is not None and (isinstance(round_number, bool) or not isinstance(round_number, int)):
        raise CoordinatorError("'round' must be an integer round number or null")
    check_request(db, project_id, fmt, round_number)
    return jobs.submit(JobKind.EXPORT, project_id, None, {"format": fmt, "round": round_number})


def export_path(job_dir: Path, payload: dict) -> Path:
    """Where an export job writes its zip (inside the job's folder ``job_dir``)."""
    name = export_file_name(int(payload.get("project_id", 0)), payload["format"], payload.get("round"))
    return job_dir / name
