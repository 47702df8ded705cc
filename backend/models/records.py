"""The tables of what happens to a project: annotations as Label Studio reports them (latest state and append-only
history), the webhook inbox, and background jobs."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.models.base import Base, enum_column, utcnow


class AnnotationStatus(str, enum.Enum):
    SUBMITTED = "submitted"
    CANCELLED = "cancelled"
    DELETED = "deleted"


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
    status: Mapped[AnnotationStatus] = mapped_column(enum_column(AnnotationStatus), default=AnnotationStatus.SUBMITTED)
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
    status: Mapped[AnnotationStatus] = mapped_column(enum_column(AnnotationStatus))
    updated_at: Mapped[dt.datetime | None]
    image_url: Mapped[str] = mapped_column(String(1000), default="")
    keypoints: Mapped[list[Any]] = mapped_column(default=list)
    visibility: Mapped[list[Any]] = mapped_column(default=list)
    served_model_version: Mapped[str | None] = mapped_column(String(64))
    accepted: Mapped[bool | None] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(16), default="webhook")
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class EventState(str, enum.Enum):
    """pending: waiting to be processed (again, after an infrastructure error); done: applied; ignored: not for a
    linked project or an action the coordinator does not use; failed: malformed (bad data), see ``error``;
    dismissed: a failed or stuck event a user chose to drop."""

    PENDING = "pending"
    DONE = "done"
    IGNORED = "ignored"
    FAILED = "failed"
    DISMISSED = "dismissed"


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
    state: Mapped[EventState] = mapped_column(enum_column(EventState), default=EventState.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


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


class Job(Base):
    """A unit of background work run by a worker through the queue; its state is the truth for the UI.

    ``parent_id``: the job that created this one as a part (a ``rank_shard`` of a ``rank`` job; an id, no foreign key).
    """

    __tablename__ = "job"

    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(Integer, index=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("round.id", ondelete="SET NULL"))
    kind: Mapped[JobKind] = mapped_column(enum_column(JobKind))
    state: Mapped[JobState] = mapped_column(enum_column(JobState), default=JobState.QUEUED, index=True)
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
