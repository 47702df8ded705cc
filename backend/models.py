"""The coordinator's records (SQLAlchemy 2.0 typed models).

Times are naive UTC datetimes. Keypoints are stored as JSON lists of ``[x, y]`` image pixels with
``null`` for a missing keypoint, in the skeleton's keypoint order (K entries). Schema changes go
through Alembic migrations in ``backend/migrations`` (a test checks that the models and the
migrations agree).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Enum, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, dt.datetime: DateTime()}


def _enum(kind: type[enum.Enum]) -> Enum:
    return Enum(
        kind,
        native_enum=False,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
        create_constraint=False,
    )


class RoundState(str, enum.Enum):
    """open: annotators label, served by ``model_version``; training/evaluating/ranking: the round closed
    and its successor model is being made; done: the next round is open; failed: a job failed (see error)."""

    OPEN = "open"
    TRAINING = "training"
    EVALUATING = "evaluating"
    RANKING = "ranking"
    DONE = "done"
    FAILED = "failed"


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    DONE = "done"
    FAILED = "failed"


class JobKind(str, enum.Enum):
    TRAIN = "train"
    EVALUATE = "evaluate"
    RANK = "rank"
    EXPORT = "export"
    RANK_SHARD = "rank_shard"
    RECONCILE = "reconcile"


class EventState(str, enum.Enum):
    """pending: waiting to be processed (again, after an infrastructure error); done: applied; ignored: not for a
    linked project or an action the coordinator does not use; failed: malformed (bad data), see ``error``;
    dismissed: a failed or stuck event a user chose to drop."""

    PENDING = "pending"
    DONE = "done"
    IGNORED = "ignored"
    FAILED = "failed"
    DISMISSED = "dismissed"


class AnnotationStatus(str, enum.Enum):
    SUBMITTED = "submitted"
    CANCELLED = "cancelled"
    DELETED = "deleted"


class Project(Base):
    """A Label Studio project linked to the coordinator.

    ``validation_policy``: ``share`` (a fixed share of labelled tasks, chosen by task id, is kept out of
    training) or ``ground_truth`` (imported labelled samples in :class:`HoldoutSample`).
    ``label_config``: ``{"from_name", "to_name", "image_key", "labels": [K label strings]}``.
    ``reconcile_cursor``: Label Studio's ``updated_at`` of the last task an incremental reconcile read (its own
    clock); ``reconciled_full_at``: the last full reconcile; ``reconcile_owner``/``reconcile_until``: the lease
    of the process reconciling the project now (one at a time, expires if that process dies).
    """

    __tablename__ = "project"

    id: Mapped[int] = mapped_column(primary_key=True)
    ls_project_id: Mapped[int] = mapped_column(Integer, unique=True)
    title: Mapped[str] = mapped_column(String(200))
    skeleton: Mapped[str] = mapped_column(String(32))
    strategy: Mapped[str] = mapped_column(String(32), default="vl4pose")
    round_budget: Mapped[int] = mapped_column(Integer)
    validation_policy: Mapped[str] = mapped_column(String(16), default="share")
    holdout_fraction: Mapped[float] = mapped_column(Float, default=0.1)
    label_config: Mapped[dict[str, Any]]
    image_source: Mapped[str] = mapped_column(String(16), default="local-files")
    ml_backend_id: Mapped[int | None] = mapped_column(Integer)
    webhook_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    reconcile_cursor: Mapped[str | None] = mapped_column(String(40))
    reconciled_full_at: Mapped[dt.datetime | None]
    reconcile_owner: Mapped[str | None] = mapped_column(String(200))
    reconcile_until: Mapped[dt.datetime | None]

    rounds: Mapped[list[Round]] = relationship(
        back_populates="project", order_by="Round.number", cascade="all, delete-orphan", passive_deletes=True
    )


class Round(Base):
    """One labelling round: the period during which one model version ranks the queue.

    ``selected_tasks``: the task ids at the head of the queue when the round opened (lowest score first).
    ``metrics``: ``served_pck`` (served pre-annotations vs submitted), ``corrections_per_task`` and
    ``no_correction_share`` (correction effort of the served tasks, see :class:`AnnotationRecord`),
    ``unserved_tasks``/``unserved_keypoints_per_task`` (tasks labelled without a suggestion, kept apart),
    ``holdout_pck`` (the version trained after this round on the held-out set) and related counts.
    ``timings``: seconds per stage.
    """

    __tablename__ = "round"
    __table_args__ = (UniqueConstraint("project_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[RoundState] = mapped_column(_enum(RoundState), default=RoundState.OPEN)
    model_version: Mapped[str | None] = mapped_column(String(64))
    budget: Mapped[int] = mapped_column(Integer)
    selected_tasks: Mapped[list[Any]] = mapped_column(default=list)
    labelled_count: Mapped[int] = mapped_column(Integer, default=0)
    accepted_count: Mapped[int] = mapped_column(Integer, default=0)
    corrected_count: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    close_reason: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    opened_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[dt.datetime | None]
    ranked_at: Mapped[dt.datetime | None]

    project: Mapped[Project] = relationship(back_populates="rounds")


class ModelVersion(Base):
    """A published model version (a folder in the model registry)."""

    __tablename__ = "model_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("round.id", ondelete="SET NULL"))
    version: Mapped[str] = mapped_column(String(64), unique=True)
    folder: Mapped[str] = mapped_column(String(500))
    parent: Mapped[str | None] = mapped_column(String(64))
    train_images: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Job(Base):
    """A unit of background work run by a worker through the queue; its state is the truth for the UI.

    ``parent_id``: the job that created this one as a part (a ``rank_shard`` of a ``rank`` job; an id, no foreign key).
    """

    __tablename__ = "job"

    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(Integer, index=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("round.id", ondelete="SET NULL"))
    kind: Mapped[JobKind] = mapped_column(_enum(JobKind))
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.QUEUED, index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str] = mapped_column(String(200), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    owner: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]


class AnnotationRecord(Base):
    """The latest known state of one Label Studio annotation.

    ``keypoints``: K ``[x, y]`` pixels or null. ``served_model_version``: the version whose prediction the
    annotator started from (or that served the round). ``accepted``: the submitted pose equals the served
    pre-annotation (None without one). ``served_correct``/``served_total``: PCK@0.2 counts of the served
    pose against the submitted one (``served_total`` is None exactly when no suggestion was served).
    ``corrections``: the correction effort of a submitted annotation, keypoints the annotator touched relative
    to the served suggestion = served keypoints moved beyond 0.2 x torso of the submitted pose (the rule of
    ``served_correct``; 1 px when the submitted pose has no torso) + keypoints added that the suggestion lacked
    + suggested keypoints deleted (0 = accepted without correction; :mod:`backend.services.served`). Without a
    served suggestion it is the number of submitted keypoints (labelled from scratch); those records have
    ``served_total`` None and are counted apart. None for cancelled annotations and for served records stored
    before migration 0006 until Label Studio reports them again (only submitted records count in the figures).
    ``holdout``: kept out of training (validation policy ``share``).
    """

    __tablename__ = "annotation_record"
    __table_args__ = (
        UniqueConstraint("project_id", "annotation_id"),
        Index("ix_annotation_task", "project_id", "task_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("round.id", ondelete="SET NULL"), index=True)
    task_id: Mapped[int] = mapped_column(Integer)
    annotation_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[AnnotationStatus] = mapped_column(_enum(AnnotationStatus), default=AnnotationStatus.SUBMITTED)
    updated_at: Mapped[dt.datetime | None]
    image_url: Mapped[str] = mapped_column(String(1000), default="")
    keypoints: Mapped[list[Any]] = mapped_column(default=list)
    keypoint_count: Mapped[int] = mapped_column(Integer, default=0)
    from_prediction: Mapped[int | None] = mapped_column(Integer)
    served_model_version: Mapped[str | None] = mapped_column(String(64))
    accepted: Mapped[bool | None] = mapped_column(Boolean)
    served_correct: Mapped[int | None] = mapped_column(Integer)
    served_total: Mapped[int | None] = mapped_column(Integer)
    corrections: Mapped[int | None] = mapped_column(Integer)
    holdout: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(16), default="webhook")
    error: Mapped[str | None] = mapped_column(Text)
    first_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WebhookEvent(Base):
    """The inbox: every accepted webhook body, stored before it is processed.

    ``state`` (:class:`EventState`) says what became of it; ``processed`` is True once it is no longer pending.
    ``error``: why it failed or was ignored, or (still pending) why the last attempt could not run.
    ``attempts``: processing attempts (an infrastructure error leaves the event pending and counts one).
    """

    __tablename__ = "webhook_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    action: Mapped[str] = mapped_column(String(64))
    ls_project_id: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[dict[str, Any]]
    processed: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    processed_at: Mapped[dt.datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    state: Mapped[EventState] = mapped_column(_enum(EventState), default=EventState.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class HoldoutSample(Base):
    """A ground-truth sample of the fixed held-out set (validation policy ``ground_truth``)."""

    __tablename__ = "holdout_sample"
    __table_args__ = (UniqueConstraint("project_id", "sample_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    sample_id: Mapped[str] = mapped_column(String(200))
    image: Mapped[str] = mapped_column(String(1000))
    keypoints: Mapped[list[Any]]
    visibility: Mapped[list[Any]]
    box: Mapped[list[Any] | None] = mapped_column(JSON)


class TaskPrediction(Base):
    """The prediction a model version made for an unlabelled task (what the queue is ranked by).

    ``keypoints``: K refined ``[x, y]`` pixels; ``placed``: K bools; ``confidence``: K floats in [0, 1].
    """

    __tablename__ = "task_prediction"
    __table_args__ = (
        UniqueConstraint("project_id", "task_id", "model_version"),
        Index("ix_task_prediction_rank", "project_id", "model_version", "score"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    task_id: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    log_likelihood: Mapped[float] = mapped_column(Float)
    image_url: Mapped[str] = mapped_column(String(1000))
    image_size: Mapped[list[Any]]
    keypoints: Mapped[list[Any]]
    placed: Mapped[list[Any]]
    confidence: Mapped[list[Any]]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AnnotationVersion(Base):
    """Append-only history of :class:`AnnotationRecord`: one row every time an annotation is stored, updated
    or deleted (rows are never changed). Dataset exports read it, ``--round R`` included.

    ``round_number``: the project's latest round when the version was stored (0 before the first round), so
    "the dataset after round R" is the last version of each annotation with ``round_number <= R``.
    ``keypoints``: K ``[x, y]`` pixels or null; ``visibility``: K ints (0 not labelled, 1 occluded, 2 visible).
    """

    __tablename__ = "annotation_version"
    __table_args__ = (Index("ix_annotation_version_lookup", "project_id", "annotation_id", "round_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    annotation_id: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[int] = mapped_column(Integer)
    round_number: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[AnnotationStatus] = mapped_column(_enum(AnnotationStatus))
    updated_at: Mapped[dt.datetime | None]
    image_url: Mapped[str] = mapped_column(String(1000), default="")
    keypoints: Mapped[list[Any]] = mapped_column(default=list)
    visibility: Mapped[list[Any]] = mapped_column(default=list)
    served_model_version: Mapped[str | None] = mapped_column(String(64))
    accepted: Mapped[bool | None] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(16), default="webhook")
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
