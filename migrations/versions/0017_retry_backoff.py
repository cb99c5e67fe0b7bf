"""infrastructure retries (a job's next try after a node fault, the nodes it avoids) and --output/--error patterns

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("retry_not_before", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("avoid_nodes", sa.JSON(), server_default=sa.text("'[]'"), nullable=False))
        batch.add_column(sa.Column("output_path", sa.Text(), nullable=True))
        batch.add_column(sa.Column("error_path", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("error_path")
        batch.drop_column("output_path")
        batch.drop_column("avoid_nodes")
        batch.drop_column("retry_not_before")
