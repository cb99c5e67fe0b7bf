"""utilization: per-job measured use summed as samples arrive, and the job's idle flag

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_utilization",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("observations", sa.Integer(), nullable=False),
        sa.Column("sampled_s", sa.Float(), nullable=False),
        sa.Column("allocated_equiv_s", sa.Float(), nullable=False),
        sa.Column("busy_equiv_s", sa.Float(), nullable=False),
        sa.Column("share_seconds", sa.JSON(), nullable=False),
        sa.Column("memory_s", sa.Float(), nullable=False),
        sa.Column("memory_mib_s", sa.Float(), nullable=False),
        sa.Column("peak_memory_mib", sa.Integer(), nullable=False),
        sa.Column("allocated_memory_mib", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_job_utilization_project_id", "job_utilization", ["project_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("idle_since", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("idle_since")
    op.drop_index("ix_job_utilization_project_id", table_name="job_utilization")
    op.drop_table("job_utilization")
