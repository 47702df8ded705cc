"""initial schema: projects, rounds, model versions, jobs, annotation records, webhook inbox, held-out set

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=16, create_constraint=False)


def _fk_project() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["project_id"], ["project.id"], ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "project",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ls_project_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("skeleton", sa.String(length=32), nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=False),
        sa.Column("round_budget", sa.Integer(), nullable=False),
        sa.Column("validation_policy", sa.String(length=16), nullable=False),
        sa.Column("holdout_fraction", sa.Float(), nullable=False),
        sa.Column("label_config", sa.JSON(), nullable=False),
        sa.Column("image_source", sa.String(length=16), nullable=False),
        sa.Column("ml_backend_id", sa.Integer(), nullable=True),
        sa.Column("webhook_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ls_project_id"),
    )
    op.create_table(
        "webhook_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("ls_project_id", sa.Integer(), nullable=True),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("processed", sa.Boolean(), nullable=False),
        sa.Column("processed_at", sa.DateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_event_processed", "webhook_event", ["processed"])
    op.create_table(
        "holdout_sample",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.String(length=200), nullable=False),
        sa.Column("image", sa.String(length=1000), nullable=False),
        sa.Column("keypoints", sa.JSON(), nullable=False),
        sa.Column("visibility", sa.JSON(), nullable=False),
        sa.Column("box", sa.JSON(), nullable=True),
        _fk_project(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "sample_id"),
    )
    op.create_index("ix_holdout_sample_project_id", "holdout_sample", ["project_id"])
    op.create_table(
        "round",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column(
            "state", _enum("roundstate", "open", "training", "evaluating", "ranking", "done", "failed"), nullable=False
        ),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("selected_tasks", sa.JSON(), nullable=False),
        sa.Column("labelled_count", sa.Integer(), nullable=False),
        sa.Column("accepted_count", sa.Integer(), nullable=False),
        sa.Column("corrected_count", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("close_reason", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("ranked_at", sa.DateTime(), nullable=True),
        _fk_project(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "number"),
    )
    op.create_index("ix_round_project_id", "round", ["project_id"])
    op.create_table(
        "annotation_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=True),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("annotation_id", sa.Integer(), nullable=False),
        sa.Column("status", _enum("annotationstatus", "submitted", "cancelled", "deleted"), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.Column("image_url", sa.String(length=1000), nullable=False),
        sa.Column("keypoints", sa.JSON(), nullable=False),
        sa.Column("keypoint_count", sa.Integer(), nullable=False),
        sa.Column("from_prediction", sa.Integer(), nullable=True),
        sa.Column("served_model_version", sa.String(length=64), nullable=True),
        sa.Column("accepted", sa.Boolean(), nullable=True),
        sa.Column("served_correct", sa.Integer(), nullable=True),
        sa.Column("served_total", sa.Integer(), nullable=True),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(), nullable=False),
        _fk_project(),
        sa.ForeignKeyConstraint(["round_id"], ["round.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "annotation_id"),
    )
    op.create_index("ix_annotation_record_round_id", "annotation_record", ["round_id"])
    op.create_index("ix_annotation_task", "annotation_record", ["project_id", "task_id"])
    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("round_id", sa.Integer(), nullable=True),
        sa.Column("kind", _enum("jobkind", "train", "evaluate", "rank"), nullable=False),
        sa.Column("state", _enum("jobstate", "queued", "running", "retrying", "done", "failed"), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("stage", sa.String(length=200), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        _fk_project(),
        sa.ForeignKeyConstraint(["round_id"], ["round.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_job_project_id", "job", ["project_id"])
    op.create_index("ix_job_state", "job", ["state"])
    op.create_table(
        "model_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=True),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("folder", sa.String(length=500), nullable=False),
        sa.Column("parent", sa.String(length=64), nullable=True),
        sa.Column("train_images", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        _fk_project(),
        sa.ForeignKeyConstraint(["round_id"], ["round.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("version"),
    )
    op.create_index("ix_model_version_project_id", "model_version", ["project_id"])


def downgrade() -> None:
    for table in ("model_version", "job", "annotation_record", "round", "holdout_sample", "webhook_event", "project"):
        op.drop_table(table)
