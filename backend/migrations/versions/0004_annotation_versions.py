"""append-only annotation history (annotation_version) for dataset exports, backfilled from annotation_record

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "annotation_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("annotation_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("round_number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.Column("image_url", sa.String(length=1000), nullable=False),
        sa.Column("keypoints", sa.JSON(), nullable=False),
        sa.Column("visibility", sa.JSON(), nullable=False),
        sa.Column("served_model_version", sa.String(length=64), nullable=True),
        sa.Column("accepted", sa.Boolean(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_annotation_version_lookup", "annotation_version", ["project_id", "annotation_id", "round_number"]
    )
    _backfill()


def _backfill() -> None:
    """One version per existing annotation (its latest state; earlier states were never kept)."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT a.project_id, a.annotation_id, a.task_id, COALESCE(r.number, 0), a.status, a.updated_at, "
            "a.image_url, a.keypoints, a.served_model_version, a.accepted, a.source, a.first_seen_at "
            "FROM annotation_record a LEFT JOIN round r ON r.id = a.round_id "
            "WHERE a.source != 'tombstone' ORDER BY a.id"
        )
    ).all()
    table = sa.table(
        "annotation_version",
        *(sa.column(name) for name in ("project_id", "annotation_id", "task_id", "round_number", "status",
                                       "updated_at", "image_url", "served_model_version", "accepted", "source",
                                       "recorded_at")),
        sa.column("keypoints", sa.JSON()),
        sa.column("visibility", sa.JSON()),
    )
    values = []
    for project, annotation, task, number, status, updated, url, keypoints, served, accepted, source, seen in rows:
        points = json.loads(keypoints) if isinstance(keypoints, str) else (keypoints or [])
        values.append(
            {
                "project_id": project, "annotation_id": annotation, "task_id": task, "round_number": number,
                "status": status, "updated_at": updated, "image_url": url or "", "keypoints": points,
                "visibility": [0 if p is None else 2 for p in points], "served_model_version": served,
                "accepted": accepted, "source": "migration", "recorded_at": updated or seen,
            }
        )
    if values:
        op.bulk_insert(table, values)


def downgrade() -> None:
    op.drop_index("ix_annotation_version_lookup", table_name="annotation_version")
    op.drop_table("annotation_version")
