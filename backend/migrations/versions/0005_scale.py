"""scale: rank shards are jobs with a parent; incremental reconcile keeps a cursor and a lease per project

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch.create_index("ix_job_parent_id", ["parent_id"])
    with op.batch_alter_table("project") as batch:
        batch.add_column(sa.Column("reconcile_cursor", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("reconciled_full_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("reconcile_owner", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("reconcile_until", sa.DateTime(), nullable=True))


def downgrade() -> None:
    # plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): recreating ``project`` would cascade-delete its jobs
    with op.batch_alter_table("project", recreate="never") as batch:
        batch.drop_column("reconcile_until")
        batch.drop_column("reconcile_owner")
        batch.drop_column("reconciled_full_at")
        batch.drop_column("reconcile_cursor")
    with op.batch_alter_table("job", recreate="never") as batch:
        batch.drop_index("ix_job_parent_id")
        batch.drop_column("parent_id")
