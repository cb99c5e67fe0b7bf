"""usage job counts: distinct jobs per day by each job's previous day (reports count jobs in a sum, not a DISTINCT)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02

The upgrade derives the counts from the job-days already there (``rollups.rebuild_job_counts``), so
reports count the same jobs before and after it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_job_counts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("day", sa.DateTime(), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("owner_token_id", sa.String(length=32), nullable=False),
        sa.Column("workload", sa.String(length=32), nullable=False),
        sa.Column("labels_hash", sa.String(length=40), nullable=False),
        sa.Column("labels_json", sa.Text(), nullable=False),
        sa.Column("prev_day", sa.DateTime(), nullable=False),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_job_counts")),
    )
    op.create_index("uq_usage_job_counts_key", "usage_job_counts",
                    ["project_id", "day", "owner_token_id", "workload", "labels_hash", "prev_day"], unique=True)
    op.create_index("ix_usage_job_days_job", "usage_job_days", ["job_id", "day"])
    from queue_service.billing.rollups import rebuild_job_counts

    rebuild_job_counts(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_usage_job_days_job", table_name="usage_job_days")
    op.drop_index("uq_usage_job_counts_key", table_name="usage_job_counts")
    op.drop_table("usage_job_counts")
