"""node faults: launch failures that were the node's, counted to drain a node that keeps failing

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("node_faults", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("last_node_fault_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("last_node_fault_at")
        batch.drop_column("node_faults")
