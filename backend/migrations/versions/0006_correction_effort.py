"""correction effort: keypoints an annotator touched relative to the served suggestion, per annotation record

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

Records stored before this revision get the figure when Label Studio next reports them (an update, or a full
reconcile); until then the served ones are left out of the per-round means. Records without a served suggestion
are filled in here (their figure is their number of submitted keypoints).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("annotation_record") as batch:
        batch.add_column(sa.Column("corrections", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE annotation_record SET corrections = keypoint_count "
        "WHERE status = 'submitted' AND served_total IS NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("annotation_record", recreate="never") as batch:
        batch.drop_column("corrections")
