"""Reconcile: read annotations through Label Studio's API so that a lost webhook never loses a label.

Label Studio delivers webhooks once, with a 1 s timeout and no retry. Reconcile pages through the project's tasks
with their annotations and upserts every annotation (the same idempotent path as webhooks); records Label Studio
no longer holds are marked deleted, but only those first seen before the reconcile started (an annotation that
arrived by webhook meanwhile may not be in the pages read yet).

- **Incremental** (the periodic one): only tasks whose ``updated_at`` (Label Studio's clock; creating, updating or
  deleting an annotation sets it) is after the project's cursor minus ``VL4POSE_RECONCILE_OVERLAP_S``, read by keyset
  paging (``VL4POSE_RECONCILE_PAGE_SIZE`` tasks a request, ``updated_at`` order), so a page never shifts while tasks
  change. An annotation missing from a task read is deleted.
- **Full** (a project's first reconcile, every ``VL4POSE_RECONCILE_FULL_HOURS``, or asked for): every task by id
  keyset; also catches what does not touch ``updated_at`` (bulk deletions, deleted tasks): a recorded annotation
  whose task lies between two tasks read, or after the last, and is not among them, is deleted.

Memory and transactions are per page, whatever the project size. One reconcile of a project runs at a time: a
lease in the ``project`` row (``reconcile_owner``/``reconcile_until``, renewed every page, expires if its process
dies); a second one raises :class:`ReconcileBusy` (a transient error: a job retries it later).

One bad item never stops a reconcile: each annotation is written in its own savepoint, and one that is malformed
(or fails for any reason other than the infrastructure's) is recorded as a failed inbox event
(:func:`backend.services.inbox.record_failed_item`, shown on the dashboard) while the rest are counted.
Infrastructure errors (database, Label Studio) stop the reconcile; the next one starts again.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import Counter
from typing import Any

from sqlalchemy import or_, select, update

from backend.config import Settings
from backend.db import Database
from backend.errors import TransientError
from backend.jobs.context import owner_id
from backend.models import AnnotationRecord, AnnotationStatus, Project, Round, utcnow
from backend.services.annotations import mark_deleted, parse_time, upsert_annotation
from backend.services.base import Services
from backend.services.events import describe, is_infrastructure
from backend.services.inbox import record_failed_item
from backend.services.labelstudio import LabelStudio
from backend.services.rounds import check_budget, refresh_stats
from vl4pose.errors import DataError, VL4PoseError


log = logging.getLogger(__name__)

LS_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


class ReconcileBusy(TransientError):
    """Another process is reconciling this project right now."""


def ls_time(value: dt.datetime) -> str:
    """A naive UTC datetime as Label Studio's Data Manager filters want it."""
    return value.strftime(LS_TIME)


def _lease_owner() -> str:
    return f"{owner_id()}:{threading.get_ident()}"


def _lease_s(settings: Settings) -> float:
    """How long a reconcile's lease lasts without renewal (seconds)."""
    return max(120.0, 4 * settings.label_studio_timeout_s)


def _take_lease(db: Database, project_id: int, owner: str, seconds: float) -> None:
    now = utcnow()
    with db.session() as session:
        taken = session.execute(
            update(Project)
            .where(
                Project.id == project_id,
                or_(Project.reconcile_until.is_(None), Project.reconcile_until < now, Project.reconcile_owner == owner),
            )
            .values(reconcile_owner=owner, reconcile_until=now + dt.timedelta(seconds=seconds))
        ).rowcount
        if taken != 1:
            project = session.get(Project, project_id)
            if project is None:
                raise DataError(f"project {project_id} is not linked")
            raise ReconcileBusy(
                f"project {project_id} is being reconciled by {project.reconcile_owner} "
                f"(lease until {project.reconcile_until:%H:%M:%S} UTC); try again later"
            )


def _release_lease(db: Database, project_id: int, owner: str, **values: Any) -> None:
    with db.session() as session:
        session.execute(
            update(Project)
            .where(Project.id == project_id, Project.reconcile_owner == owner)
            .values(reconcile_owner=None, reconcile_until=None, **values)
        )


def reconcile(
    services: Services, project_id: int, close_rounds: bool = True, full: bool | None = None
) -> dict[str, Any]:
    """Sync one project's annotations from Label Studio; returns counts (``annotations`` read, ``changed``,
    ``deleted``, ``failed``, ``tasks`` read, ``pages``, ``mode``). Raises on Label Studio errors and
    :class:`ReconcileBusy` while another reconcile of the project runs. ``full``: None decides by itself."""
    owner = _lease_owner()
    _take_lease(services.db, project_id, owner, _lease_s(services.settings))
    cursor_value: str | None = None
    full_at: dt.datetime | None = None
    try:
        with services.db.session() as session:
            project = session.get(Project, project_id)
            session.expunge(project)
        every = dt.timedelta(hours=services.settings.reconcile_full_hours)
        if full is None:
            full = (
                project.reconcile_cursor is None
                or project.reconciled_full_at is None
                or utcnow() - project.reconciled_full_at > every
            )
        started = utcnow()
        pager = _Pager(services.db, services.ls(), services.settings, project, started, full)
        counts = pager.run()
        cursor_value = pager.cursor or project.reconcile_cursor
        full_at = started if full else project.reconciled_full_at
    finally:
        _release_lease(
            services.db,
            project_id,
            owner,
            **({"reconcile_cursor": cursor_value, "reconciled_full_at": full_at} if cursor_value or full_at else {}),
        )
    if counts["changed"] or counts["deleted"]:
        log.info("project %d reconciled: %s", project_id, counts)
    if close_rounds:
        check_budget(services.db, services.jobs, project_id)
    return counts


class _Pager:
    """One reconcile's pass over Label Studio's tasks, page by page."""

    def __init__(
        self, db: Database, ls: LabelStudio, settings: Settings, project: Project, started: dt.datetime, full: bool
    ) -> None:
        self.db, self.ls, self.settings = db, ls, settings
        self.project, self.started, self.full = project, started, full
        self.counts: Counter[str] = Counter()
        self.newest: dt.datetime | None = parse_time(project.reconcile_cursor)

    @property
    def cursor(self) -> str | None:
        return ls_time(self.newest) if self.newest is not None else None

    def run(self) -> dict[str, Any]:
        settings, ls = self.settings, self.ls
        size = settings.reconcile_page_size
        key = "id" if self.full else "updated_at"
        after: Any = None
        if not self.full and self.newest is not None:
            after = ls_time(self.newest - dt.timedelta(seconds=settings.reconcile_overlap_s))
        while True:
            page = ls.tasks_after(self.project.ls_project_id, key, after, size)
            tasks = [t for t in page if isinstance(t, dict) and isinstance(t.get("id"), int)]
            last = tasks[-1] if tasks else None
            end = len(page) < size or last is None
            upper = None if end else int(last["id"])
            self._apply(page, tasks, after if self.full else None, upper)
            self.counts["pages"] += 1
            self._renew()
            if end:
                break
            after = int(last["id"]) if self.full else ls_time(parse_time(last.get("updated_at")) or self.started)
        return {"mode": "full" if self.full else "incremental", **{k: int(v) for k, v in self.counts.items()},
                **{k: 0 for k in ("annotations", "changed", "deleted", "failed") if k not in self.counts}}

    def _renew(self) -> None:
        with self.db.session() as session:
            session.execute(
                update(Project)
                .where(Project.id == self.project.id, Project.reconcile_owner == _lease_owner())
                .values(reconcile_until=utcnow() + dt.timedelta(seconds=_lease_s(self.settings)))
            )

    def _apply(self, page: list, tasks: list[dict], lower: int | None, upper: int | None) -> None:
        """Write one page: bad items recorded, new or newer annotations upserted, missing ones deleted.
        Full mode: ``(lower, upper]`` is the id range the page covers (``upper`` None: to the end)."""
        project = self.project
        seen: dict[int, set[int]] = {}
        todo: list[tuple[dict, dict]] = []
        bad: list[tuple[object, object, str]] = []
        for task in page:
            annotations = task.get("annotations") if isinstance(task, dict) else None
            if not isinstance(task, dict) or not isinstance(task.get("id"), int) or not isinstance(
                annotations or [], list
            ):
                bad.append((None, task, "an exported task must be an object with an integer 'id' and an "
                                        "'annotations' list"))
                continue
            stamp = parse_time(task.get("updated_at"))
            if stamp is not None and (self.newest is None or stamp > self.newest):
                self.newest = stamp
            ids = seen.setdefault(task["id"], set())
            for annotation in annotations or []:
                if not isinstance(annotation, dict) or not isinstance(annotation.get("id"), int):
                    bad.append((annotation, task, "an exported annotation must be an object with an integer 'id'"))
                    continue
                ids.add(annotation["id"])
                todo.append(({**annotation, "task": annotation.get("task") or task["id"]}, task))
        self.counts["tasks"] += len(tasks)
        self.counts["annotations"] += sum(len(v) for v in seen.values())
        rounds: set[int] = set()
        with self.db.session() as session:
            current = session.get(Project, project.id)
            for annotation, task, reason in bad:
                self.counts["failed"] += 1
                record_failed_item(session, project.ls_project_id, annotation, task, reason)
            for annotation, task in todo:
                try:
                    with session.begin_nested():
                        record = upsert_annotation(session, current, annotation, task, source="reconcile")
                except Exception as exc:
                    if is_infrastructure(exc):
                        raise
                    if not isinstance(exc, VL4PoseError):
                        log.exception("project %d: annotation %s failed unexpectedly", project.id, annotation["id"])
                    self.counts["failed"] += 1
                    log.warning("project %d: annotation %s not usable: %s", project.id, annotation["id"], describe(exc))
                    record_failed_item(session, project.ls_project_id, annotation, task, describe(exc))
                    continue
                if record is not None:
                    self.counts["changed"] += 1
                    rounds.add(record.round_id)
            gone = self._missing(session, seen, lower, upper)
            if gone:
                rounds |= mark_deleted(session, current, gone)
                self.counts["deleted"] += len(gone)
            for round_id in rounds - {None}:
                refresh_stats(session, session.get(Round, round_id))

    def _missing(self, session, seen: dict[int, set[int]], lower: int | None, upper: int | None) -> list[int]:
        """Recorded annotations (first seen before this reconcile) that the page shows are gone."""
        where = [
            AnnotationRecord.project_id == self.project.id,
            AnnotationRecord.status != AnnotationStatus.DELETED,
            AnnotationRecord.first_seen_at < self.started,
        ]
        if self.full:
            if lower is not None:
                where.append(AnnotationRecord.task_id > lower)
            if upper is not None:
                where.append(AnnotationRecord.task_id <= upper)
        elif seen:
            where.append(AnnotationRecord.task_id.in_(list(seen)))
        else:
            return []
        rows = session.execute(select(AnnotationRecord.annotation_id, AnnotationRecord.task_id).where(*where)).all()
        return [a for a, t in rows if a not in seen.get(t, set())]


def reconcile_all_projects(services: Services) -> dict[int, dict[str, Any] | str]:
    """Reconcile every linked project; a failing (or busy) project is logged and the others still run."""
    with services.db.session() as session:
        project_ids = session.scalars(select(Project.id)).all()
    results: dict[int, dict[str, Any] | str] = {}
    for project_id in project_ids:
        try:
            results[project_id] = reconcile(services, project_id)
        except ReconcileBusy as exc:  # another worker's periodic task got there first
            log.info("reconcile of project %d skipped: %s", project_id, exc)
            results[project_id] = str(exc)
        except Exception as exc:  # one project's failure must not stop the others
            log.warning("reconcile of project %d failed: %s", project_id, exc)
            results[project_id] = str(exc)
    return results
