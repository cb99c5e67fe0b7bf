"""usage deltas: an exit appends its rollup and job-count additions; the admitter folds them in

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-03

Every exit added to the same hour's rollup row (and a few job-count rows), holding their locks until
its commit, and the exits after it waited: at 1,000 simulated hosts half of an API process's request
threads queued there and heartbeats waited for a free thread. ``usage_rollup_deltas`` and
``usage_job_count_deltas`` have the columns of ``usage_rollups`` and ``usage_job_counts`` and no unique
key: an exit only inserts. ``billing.rollups.fold`` moves them into the summed tables; readers sum both.
Downgrade folds what is left, then drops them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

ROLLUP_SUMS = ["gpu_seconds", "block_seconds", "mig_seconds", "gpu_equivalent_seconds", "gpu_memory_gib_seconds",
               "cpu_seconds", "ram_gib_seconds", "cost"]


def upgrade() -> None:
    op.create_table(
        "usage_rollup_deltas",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("project_name", sa.String(length=64), nullable=False),
        sa.Column("owner_token_id", sa.String(length=32), nullable=False),
        sa.Column("workload", sa.String(length=32), nullable=False),
        sa.Column("labels_hash", sa.String(length=40), nullable=False),
        sa.Column("labels_json", sa.Text(), nullable=False),
        sa.Column("gpu_model", sa.String(length=64), nullable=False),
        sa.Column("shard", sa.Integer(), server_default=sa.text("0"), nullable=False),
        *[sa.Column(name, sa.Float(), nullable=False) for name in ROLLUP_SUMS],
        sa.Column("max_gpu_memory_mib", sa.Integer(), nullable=False),
        sa.Column("intervals", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_rollup_deltas")),
    )
    op.create_index("ix_usage_rollup_deltas_key", "usage_rollup_deltas", ["project_id", "hour"])
    op.create_table(
        "usage_job_count_deltas",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("day", sa.DateTime(), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("owner_token_id", sa.String(length=32), nullable=False),
        sa.Column("workload", sa.String(length=32), nullable=False),
        sa.Column("labels_hash", sa.String(length=40), nullable=False),
        sa.Column("labels_json", sa.Text(), nullable=False),
        sa.Column("prev_day", sa.DateTime(), nullable=False),
        sa.Column("shard", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_job_count_deltas")),
    )
    op.create_index("ix_usage_job_count_deltas_key", "usage_job_count_deltas", ["project_id", "day"])


def downgrade() -> None:
    from sqlalchemy.orm import Session

    from queue_service.billing.rollups import fold

    with Session(bind=op.get_bind()) as session:
        fold(session)
        session.flush()
    op.drop_index("ix_usage_job_count_deltas_key", table_name="usage_job_count_deltas")
    op.drop_table("usage_job_count_deltas")
    op.drop_index("ix_usage_rollup_deltas_key", table_name="usage_rollup_deltas")
    op.drop_table("usage_rollup_deltas")
