"""The tables of a linked project's labelling rounds: projects, rounds, model versions, the held-out set and the
predictions that rank the queue."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.models.base import Base, enum_column, utcnow


class RoundState(str, enum.Enum):
    """open: annotators label, served by ``model_version``; training/evaluating/ranking: the round closed
    and its successor model is being made; done: the next round is open; failed: a job failed (see error)."""

    OPEN = "open"
    TRAINING = "training"
    EVALUATING = "evaluating"
    RANKING = "ranking"
    DONE = "done"
    FAILED = "failed"


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
    state: Mapped[RoundState] = mapped_column(enum_column(RoundState), default=RoundState.OPEN)
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
