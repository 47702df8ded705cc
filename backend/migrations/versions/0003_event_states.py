"""webhook events get a state (pending, done, ignored, failed, dismissed) and an attempt count, so that one
malformed event is failed on its own instead of blocking the inbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_event") as batch:
        batch.add_column(sa.Column("state", sa.String(length=16), nullable=False, server_default="done"))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE webhook_event SET state = 'pending' WHERE NOT processed")
    op.execute("UPDATE webhook_event SET state = 'ignored' WHERE processed AND error IS NOT NULL")
    op.create_index("ix_webhook_event_state", "webhook_event", ["state"])


def downgrade() -> None:
    op.drop_index("ix_webhook_event_state", table_name="webhook_event")
    with op.batch_alter_table("webhook_event") as batch:
        batch.drop_column("attempts")
        batch.drop_column("state")
