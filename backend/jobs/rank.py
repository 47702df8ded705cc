"""The ``rank`` job: score every unlabelled task with a model version and re-order the annotators' queue.

The work is sharded so that any number of workers share it and no process holds the whole project:

1. **list** (this job): Label Studio's tasks are read page by page (``VL4POSE_RANK_SHARD_SIZE`` tasks a page, id
   order, only ids, data and annotation counts); each page's unlabelled tasks become one ``rank_shard`` job
   (:mod:`backend.jobs.rank_shard`), created in the same transaction that records the page as listed, and
   queued at once, so workers score while the listing goes on. A re-run resumes after the last listed page.
2. **wait**: the job hands its thread back (:class:`~backend.jobs.context.Waiting`) and checks again every
   ``VL4POSE_RANK_POLL_S`` seconds; the last shard to finish queues it at once. Each check re-queues shards whose
   worker died or went silent (the database claim and heartbeat, :meth:`backend.jobs.runner.JobRunner.recover`): huey
   never re-delivers a killed worker's message, the ``job`` table does. A failed shard fails the ranking.
3. **finish**: under a joint strategy (``vl4pose_mix``), order the whole round's tasks, make each task's rank its
   prediction score and import them (:mod:`backend.services.queue_order`); set the project's ``model_version``
   (and ``sampling="Uncertainty sampling"``) so the queue serves the lowest score first, make the version current
   in the registry, prune superseded predictions (:mod:`backend.services.pruning`), finish the round and open the
   next one. The project's model version only moves once every shard's predictions are in, so the queue is never
   half re-ranked.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from huey.exceptions import RetryTask
from sqlalchemy import and_, or_, select, update

from backend.errors import CoordinatorError
from backend.jobs.context import Handler, JobContext, Waiting
from backend.models import Job, JobKind, JobState, Project, Round, RoundState, TaskPrediction, utcnow
from backend.services.base import Services
from backend.services.pruning import prune_predictions
from backend.services.queue_order import apply_queue_order, is_joint
from backend.services.rank_shards import import_predictions
from backend.services.ranking import UNCERTAINTY_SAMPLING, shard_states, unlabelled_page
from backend.services.rounds import open_round, reset_round, set_round_state

log = logging.getLogger(__name__)


class RankHandler(Handler):
    """Payload: ``{"version"}``; ``initial: true`` ranks the first round's queue without closing a round.
    Bookkeeping in the payload: ``started`` (epoch seconds), ``pages`` (pages listed), ``shards`` (shard jobs
    created), ``listed`` (the listing is complete), ``listed_tasks`` (tasks on the listed pages)."""

    def run(self, ctx: JobContext) -> None:
        services, version = ctx.services, ctx.payload["version"]
        project = ctx.project()
        if "started" not in ctx.payload:
            ctx.save_payload(started=time.time())
            if not ctx.payload.get("initial"):
                set_round_state(services.db, ctx.round_id, RoundState.RANKING)
        if not ctx.payload.get("listed"):
            self._list(ctx, project, version)
        self._help(ctx)
        states = shard_states(services.db, ctx.job_id)
        total = sum(states.values())
        done = states.get(JobState.DONE, 0)
        if states.get(JobState.FAILED):
            with services.db.session() as session:
                bad = session.scalars(
                    select(Job).where(Job.parent_id == ctx.job_id, Job.state == JobState.FAILED).limit(1)
                ).first()
            raise CoordinatorError(f"rank shard job {bad.id} failed: {bad.error}")
        if done < total:  # the rest run on other workers
            services.jobs.recover(parent_id=ctx.job_id)
            ctx.progress(0.05 + 0.9 * done / max(total, 1), f"scoring tasks with {version}: {done}/{total} shards done")
            raise Waiting(services.settings.rank_poll_s, f"waiting for shards: {done}/{total} done")
        self._finish(ctx, project, version, total)

    def _help(self, ctx: JobContext) -> None:
        """Run this ranking's shards that no worker has taken yet in this thread (each claimed like any job), so a
        ranking never idles a thread while its shards wait in the queue, and a caller without workers (tests,
        benchmarks) ranks everything; shards retrying after a Label Studio outage are taken when their delay is
        over."""
        services = ctx.services
        tried: set[int] = set()
        while True:
            due = utcnow() - dt.timedelta(seconds=services.settings.job_retry_delay_s)
            with services.db.session() as session:
                shard_id = session.scalar(
                    select(Job.id)
                    .where(
                        Job.parent_id == ctx.job_id,
                        Job.id.not_in(tried) if tried else Job.id.is_not(None),
                        or_(
                            Job.state == JobState.QUEUED,
                            and_(Job.state == JobState.RETRYING, Job.heartbeat_at <= due),
                        ),
                    )
                    .order_by(Job.id)
                    .limit(1)
                )
            if shard_id is None:
                return
            try:
                services.jobs.run(shard_id)
            except RetryTask:  # its Label Studio outage: taken again after the retry delay
                pass
            with services.db.session() as session:
                if session.get(Job, shard_id).state != JobState.RETRYING:
                    tried.add(shard_id)
                else:
                    return  # still unreachable: wait (and check again) instead of spinning

    def _list(self, ctx: JobContext, project: Project, version: str) -> None:
        """Turn each page of Label Studio's tasks into a shard job (resumes after the last listed page)."""
        services = ctx.services
        size = services.settings.rank_shard_size
        while True:
            page = int(ctx.payload.get("pages", 0)) + 1
            tasks, seen = unlabelled_page(services.db, services.ls(), project, page, size)
            created: int | None = None
            with services.db.session() as session:
                if tasks:
                    index = int(ctx.payload.get("shards", 0))
                    created = services.jobs.create(
                        session,
                        JobKind.RANK_SHARD,
                        project.id,
                        None,  # the round's jobs are the rank job's: closing a failed round retries that one
                        {"version": version, "index": index, "tasks": [list(t) for t in tasks]},
                        parent_id=ctx.job_id,
                    ).id
                    ctx.payload["shards"] = index + 1
                ctx.payload["pages"] = page if seen else page - 1
                ctx.payload["listed_tasks"] = int(ctx.payload.get("listed_tasks", 0)) + seen
                ctx.payload["listed"] = seen < size
                session.execute(update(Job).where(Job.id == ctx.job_id).values(payload=dict(ctx.payload)))
            if created is not None:
                services.jobs.enqueue(created)
            listed, shards = ctx.payload["listed_tasks"], ctx.payload.get("shards", 0)
            ctx.progress(0.02, f"listing tasks: {listed} read, {shards} shards")
            if ctx.payload["listed"]:
                log.info("job %d: %d tasks listed into %d shards of at most %d", ctx.job_id,
                         ctx.payload["listed_tasks"], ctx.payload.get("shards", 0), size)
                return

    def _finish(self, ctx: JobContext, project: Project, version: str, shards: int) -> None:
        services = ctx.services
        with services.db.session() as session:
            payloads = session.scalars(select(Job.payload).where(Job.parent_id == ctx.job_id)).all()
        ranked = sum(int(p.get("ranked", 0)) for p in payloads)
        failed = sum(int(p.get("failed", 0)) for p in payloads)
        if is_joint(project.strategy):  # rank as score over the whole round, then one import (resumable)
            if not ctx.payload.get("ordered"):
                ctx.progress(0.9, f"putting the queue in {project.strategy} order", force=True)
                ctx.save_payload(ordered=apply_queue_order(services.db, project, version))
            ranked = import_predictions(ctx, project, version, None)
        ctx.progress(0.96, "switching the queue to the new model version", force=True)
        ls = services.ls()
        if ranked:  # Label Studio refuses a model version that no prediction carries
            ls.update_project(project.ls_project_id, model_version=version, sampling=UNCERTAINTY_SAMPLING)
        registry = services.registry()
        previous = ctx.payload.get("previous")
        if "previous" not in ctx.payload:
            previous = registry.current(project.ls_project_id)
            ctx.save_payload(previous=previous if previous != version else None)
            previous = ctx.payload["previous"]
        registry.set_current(version, project.ls_project_id)  # this project's model only
        keep = {version, previous or ""}
        pruned = prune_predictions(services.db, ls, project.id, project.ls_project_id, keep, version,
                                   services.settings.prune_timeout_s)
        ctx.save_payload(pruned=pruned)
        rank_s = time.time() - float(ctx.payload.get("started", time.time()))
        self._finish_round(ctx, project, version, rank_s, ranked, failed, shards, pruned)

    def _finish_round(
        self,
        ctx: JobContext,
        project: Project,
        version: str,
        rank_s: float,
        ranked: int,
        failed: int,
        shards: int,
        pruned: dict,
    ) -> None:
        services = ctx.services
        with services.db.session() as session:
            head = session.scalars(
                select(TaskPrediction.task_id)
                .where(TaskPrediction.project_id == project.id, TaskPrediction.model_version == version)
                .order_by(TaskPrediction.score, TaskPrediction.task_id)
                .limit(project.round_budget)
            ).all()
            round_ = session.get(Round, ctx.round_id) if ctx.round_id else None
            if ctx.payload.get("initial"):
                if round_ is not None and round_.state == RoundState.OPEN:
                    round_.model_version, round_.selected_tasks = version, list(head)
                return
            if round_ is None or round_.state == RoundState.DONE:  # finished by an earlier run of this job
                return
            now = utcnow()
            round_.state, round_.ranked_at = RoundState.DONE, now
            timings = {**(round_.timings or {}), "rank_s": round(rank_s, 2)}
            if round_.closed_at is not None:
                timings["close_to_ranked_s"] = round((now - round_.closed_at).total_seconds(), 2)
            round_.timings = timings
            round_.metrics = {
                **(round_.metrics or {}),
                "ranked_tasks": ranked,
                "unreadable_tasks": failed,
                "rank_shards": shards,
                "pruned_predictions": {k: v for k, v in pruned.items() if k != "error"},
            }
            open_round(session, session.get(Project, project.id), version, list(head))

    def failed(self, ctx: JobContext, message: str) -> None:
        if not ctx.payload.get("initial"):
            set_round_state(ctx.services.db, ctx.round_id, RoundState.FAILED, f"ranking failed: {message}")

    def reset(self, services: Services, job_id: int) -> None:
        """Before a failed ranking is retried by hand: its round goes back to ranking, its failed shards are queued
        again (with no heartbeat, so the next check re-queues them at once); listed pages and done shards stay."""
        reset_round(services.db, job_id, RoundState.RANKING)
        with services.db.session() as session:
            session.execute(
                update(Job)
                .where(Job.parent_id == job_id, Job.state == JobState.FAILED)
                .values(state=JobState.QUEUED, error=None, heartbeat_at=None, stage="queued again with its ranking")
            )
