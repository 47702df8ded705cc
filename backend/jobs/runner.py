"""Jobs: database-tracked units of work (train, evaluate, rank, export) executed by huey workers.

The ``job`` row is the truth; the huey message only says "run job N". Running a job:

1. **claim** it with one conditional UPDATE (queued/retrying, or running with a stale heartbeat), so a
   duplicate message or a second worker never runs it twice;
2. run its handler in ``<storage>/jobs/<id>/`` with a heartbeat thread and progress reports;
3. on :class:`~backend.errors.TransientError` (Label Studio unreachable) mark it ``retrying`` and let huey
   run it again after ``VL4POSE_JOB_RETRY_DELAY_S`` (up to ``VL4POSE_JOB_RETRIES`` times); on any other
   error mark it ``failed`` with a readable reason; on success mark it ``done`` and submit follow-ups.

A worker killed mid-job leaves the row ``running``; :meth:`JobRunner.recover` (at worker start and every
minute) re-queues jobs whose owner process is gone or whose heartbeat is stale. Handlers are written to
be re-run: training resumes from its ``state.pt``, publishing is idempotent by version name, ranking
skips what it already stored.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping

from huey.exceptions import RetryTask
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from backend.errors import CoordinatorError, NotFound, TransientError
from backend.jobs.context import Handler, JobContext, Waiting, owner_id, owner_is_dead
from backend.models import Job, JobKind, JobState, utcnow
from backend.services.base import Services
from vl4pose.errors import VL4PoseError

log = logging.getLogger(__name__)


class JobRunner:
    """Creates, runs, retries and recovers jobs for one process."""

    def __init__(self, services: Services, handlers: Mapping[JobKind, Handler]) -> None:
        """``handlers``: one per job kind (:func:`backend.runtime.job_handlers`); jobs enqueue through
        ``services.tasks.run_job``."""
        self.services = services
        self.settings = services.settings
        self.handlers: dict[JobKind, Handler] = dict(handlers)

    # -- creating -----------------------------------------------------------------------------------
    def create(
        self,
        session: Session,
        kind: JobKind,
        project_id: int | None,
        round_id: int | None = None,
        payload: dict | None = None,
        parent_id: int | None = None,
    ) -> Job:
        """A queued job row inside the caller's transaction; call :meth:`enqueue` after the commit."""
        job = Job(
            kind=kind,
            project_id=project_id,
            round_id=round_id,
            parent_id=parent_id,
            payload=payload or {},
            state=JobState.QUEUED,
            heartbeat_at=utcnow(),
        )
        session.add(job)
        session.flush()
        return job

    def submit(
        self, kind: JobKind, project_id: int | None, round_id: int | None = None, payload: dict | None = None
    ) -> int:
        with self.services.db.session() as session:
            job_id = self.create(session, kind, project_id, round_id, payload).id
        self.enqueue(job_id)
        return job_id

    def enqueue(self, job_id: int) -> None:
        self.services.tasks.run_job(job_id)

    def retry(self, job_id: int) -> int:
        """Run a failed job again (training starts afresh with a new snapshot of the labels)."""
        with self.services.db.session() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise NotFound(f"job {job_id} does not exist")
            if job.state != JobState.FAILED:
                raise CoordinatorError(f"job {job_id} is {job.state.value}; only failed jobs can be retried")
            job.state, job.error, job.progress, job.heartbeat_at = JobState.QUEUED, None, 0.0, utcnow()
            job.stage = "queued again by hand"
            kind = job.kind
        self.handlers[kind].reset(self.services, job_id)
        self.enqueue(job_id)
        return job_id

    # -- running ------------------------------------------------------------------------------------
    def _claim(self, job_id: int, me: str) -> Job | None:
        now = utcnow()
        stale = now - dt.timedelta(seconds=self.settings.job_stale_s)
        claimable = or_(
            Job.state.in_([JobState.QUEUED, JobState.RETRYING]),
            and_(Job.state == JobState.RUNNING, or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale)),
        )
        with self.services.db.session() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, claimable)
                .values(state=JobState.RUNNING, owner=me, attempts=Job.attempts + 1, heartbeat_at=now, started_at=now)
            )
            if result.rowcount != 1:
                return None
            return session.get(Job, job_id)

    def run(self, job_id: int) -> None:
        """Run one job (called by the huey task)."""
        job = self._claim(job_id, owner_id())
        if job is None:
            log.info("job %d is not claimable (done, failed, or running elsewhere); skipped", job_id)
            return
        ctx = JobContext(
            self.services,
            job.id,
            job.kind,
            job.project_id,
            job.round_id,
            dict(job.payload),
            job.attempts,
            parent_id=job.parent_id,
        )
        handler = self.handlers[job.kind]
        stop = self._heartbeat(job_id)
        try:
            handler.run(ctx)
        except Waiting as exc:
            stop()
            self._wait(ctx, exc)
            return
        except TransientError as exc:
            stop()
            self._transient(ctx, handler, str(exc))
            return
        except Exception as exc:  # every failure is recorded on the job, none escapes to the worker loop
            stop()
            message = (
                str(exc)
                if isinstance(exc, CoordinatorError) or _is_vl4pose_error(exc)
                else f"unexpected {type(exc).__name__}: {exc}"
            )
            if not isinstance(exc, CoordinatorError) and not _is_vl4pose_error(exc):
                log.exception("job %d (%s) failed", job_id, job.kind.value)
            self._fail(ctx, handler, message)
            return
        stop()
        self._finish(ctx)

    def _heartbeat(self, job_id: int) -> Callable[[], None]:
        done = threading.Event()
        interval = max(0.5, min(15.0, self.settings.job_stale_s / 4))

        def beat() -> None:
            while not done.wait(interval):
                try:
                    with self.services.db.session() as session:
                        session.execute(
                            update(Job)
                            .where(Job.id == job_id, Job.state == JobState.RUNNING)
                            .values(heartbeat_at=utcnow())
                        )
                except Exception:  # a missed heartbeat is not fatal
                    log.warning("heartbeat of job %d failed", job_id, exc_info=True)

        thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
        thread.start()

        def stop() -> None:
            done.set()
            thread.join(timeout=5)

        return stop

    def _wait(self, ctx: JobContext, waiting: Waiting) -> None:
        """Give the thread back: the job is queued again (this claim not counted as an attempt) and huey runs it
        again after the delay; its heartbeat stays fresh so recovery leaves it alone meanwhile."""
        with self.services.db.session() as session:
            session.execute(
                update(Job)
                .where(Job.id == ctx.job_id, Job.state == JobState.RUNNING, Job.owner == owner_id())
                .values(
                    state=JobState.QUEUED,
                    attempts=Job.attempts - 1,
                    stage=waiting.message[:200],
                    heartbeat_at=utcnow(),
                )
            )
        raise RetryTask(delay=waiting.delay) if waiting.delay > 0 else RetryTask()

    def _transient(self, ctx: JobContext, handler: Handler, message: str) -> None:
        if ctx.attempt > self.settings.job_retries:
            self._fail(ctx, handler, f"gave up after {ctx.attempt} attempts: {message}")
            return
        delay = self.settings.job_retry_delay_s
        log.warning(
            "job %d (%s) attempt %d: %s; retrying in %.0f s", ctx.job_id, ctx.kind.value, ctx.attempt, message, delay
        )
        with self.services.db.session() as session:
            session.execute(
                update(Job)
                .where(Job.id == ctx.job_id)
                .values(
                    state=JobState.RETRYING,
                    error=f"attempt {ctx.attempt} failed, retrying: {message}",
                    heartbeat_at=utcnow(),
                )
            )
        raise RetryTask(delay=delay) if delay > 0 else RetryTask()

    def _fail(self, ctx: JobContext, handler: Handler, message: str) -> None:
        log.error("job %d (%s) failed: %s", ctx.job_id, ctx.kind.value, message)
        with self.services.db.session() as session:
            session.execute(
                update(Job)
                .where(Job.id == ctx.job_id)
                .values(state=JobState.FAILED, error=message, finished_at=utcnow())
            )
        try:
            handler.failed(ctx, message)
        except Exception:
            log.exception("recording the failure of job %d failed", ctx.job_id)

    def _finish(self, ctx: JobContext) -> None:
        with self.services.db.session() as session:
            session.execute(
                update(Job)
                .where(Job.id == ctx.job_id)
                .values(state=JobState.DONE, progress=1.0, error=None, finished_at=utcnow(), payload=dict(ctx.payload))
            )
            created = [self.create(session, f.kind, f.project_id, f.round_id, f.payload).id for f in ctx.followups]
            left = 0
            if ctx.parent_id is not None:
                left = session.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.parent_id == ctx.parent_id, Job.state != JobState.DONE)
                )
        log.info("job %d (%s) done", ctx.job_id, ctx.kind.value)
        for job_id in created:
            self.enqueue(job_id)
        if ctx.parent_id is not None and left:
            self.recover(parent_id=ctx.parent_id)  # a sibling (or the parent) whose worker died goes back in the queue
        if ctx.parent_id is not None and not left:
            self.enqueue(ctx.parent_id)  # the last part done: its parent goes on now, not at its next check

    # -- recovery -----------------------------------------------------------------------------------
    def recover(self, parent_id: int | None = None) -> list[int]:
        """Re-queue jobs whose worker died (a process of this host that is gone) or went silent (no heartbeat for
        ``job_stale_s``), and queued jobs nobody took for that long; ``parent_id``: only that job's parts.
        Returns their ids."""
        now = utcnow()
        stale = now - dt.timedelta(seconds=self.settings.job_stale_s)
        requeued = []
        where = [Job.state.in_([JobState.RUNNING, JobState.QUEUED])]
        if parent_id is not None:  # the parts and the parent itself
            where.append(or_(Job.parent_id == parent_id, Job.id == parent_id))
        with self.services.db.session() as session:
            jobs = session.scalars(select(Job).where(*where)).all()
            for job in jobs:
                silent = job.heartbeat_at is None or job.heartbeat_at < stale
                if job.state == JobState.RUNNING and (owner_is_dead(job.owner) or silent):
                    job.error = f"the worker running this job ({job.owner}) stopped; re-queued"
                elif not (job.state == JobState.QUEUED and silent):
                    continue
                job.state, job.heartbeat_at = JobState.QUEUED, now
                requeued.append(job.id)
        for job_id in requeued:
            log.warning("re-queueing job %d", job_id)
            self.enqueue(job_id)
        return requeued


def _is_vl4pose_error(exc: BaseException) -> bool:
    return isinstance(exc, VL4PoseError)
