"""governance: a job's workload class, labels and volumes; workload classes and coexistence rules set over the API;
a project's allowed images and volumes

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("workload", sa.String(32), server_default=sa.text("'batch'"), nullable=False))
        batch.add_column(sa.Column("labels", sa.JSON(), server_default=sa.text("'{}'"), nullable=False))
        batch.add_column(sa.Column("volumes", sa.JSON(), server_default=sa.text("'[]'"), nullable=False))
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("allowed_images", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("allowed_volumes", sa.JSON(), server_default=sa.text("'[]'"), nullable=False))
    op.create_table(
        "workload_classes",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("priority_class", sa.String(32), nullable=True),
        sa.Column("preemptible", sa.Boolean(), nullable=True),
        sa.Column("default_time_limit_s", sa.Integer(), nullable=True),
        sa.Column("max_time_limit_s", sa.Integer(), nullable=True),
        sa.Column("may_share_gpu", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "coexistence_rules",
        sa.Column("scope", sa.String(8), primary_key=True),
        sa.Column("table", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("coexistence_rules")
    op.drop_table("workload_classes")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("allowed_volumes")
        batch.drop_column("allowed_images")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("volumes")
        batch.drop_column("labels")
        batch.drop_column("workload")
