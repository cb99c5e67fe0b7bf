"""usage rollups: closed intervals summed per hour and key, job-days for distinct jobs, workload and labels on intervals

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

The upgrade backfills the rollups from every closed interval already in the
ledger (priced by the catalogue, split where a list changed), so reports
read the same figures before and after it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_INTERVAL_COLUMNS = ("id", "job_id", "project_id", "project_name", "owner_token_id", "workload", "labels_json", "kind",
                     "gpu_model", "gpus", "blocks", "gpu_memory_mib", "mig_profile", "mig_compute_share",
                     "cpus_milli", "memory_mib", "started_at", "ended_at")
_PRICE_COLUMNS = ("id", "gpu_model", "effective_from", "gpu_hour", "block_hour", "gpu_memory_gib_hour",
                  "mig_profile_hour", "cpu_hour", "ram_gib_hour")


def upgrade() -> None:
    with op.batch_alter_table("usage_intervals") as batch:
        batch.add_column(sa.Column("workload", sa.String(length=32), server_default=sa.text("'batch'"),
                                   nullable=False))
        batch.add_column(sa.Column("labels_json", sa.Text(), server_default=sa.text("'{}'"), nullable=False))
    op.create_table(
        "usage_rollups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("project_name", sa.String(length=64), nullable=False),
        sa.Column("owner_token_id", sa.String(length=32), nullable=False),
        sa.Column("workload", sa.String(length=32), nullable=False),
        sa.Column("labels_hash", sa.String(length=40), nullable=False),
        sa.Column("labels_json", sa.Text(), nullable=False),
        sa.Column("gpu_model", sa.String(length=64), nullable=False),
        *[sa.Column(name, sa.Float(), nullable=False) for name in (
            "gpu_seconds", "block_seconds", "mig_seconds", "gpu_equivalent_seconds", "gpu_memory_gib_seconds",
            "cpu_seconds", "ram_gib_seconds", "cost")],
        sa.Column("max_gpu_memory_mib", sa.Integer(), nullable=False),
        sa.Column("intervals", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_rollups")),
    )
    op.create_index("uq_usage_rollups_key", "usage_rollups",
                    ["project_id", "hour", "owner_token_id", "workload", "labels_hash", "gpu_model"], unique=True)
    op.create_table(
        "usage_job_days",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("day", sa.DateTime(), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("gpu_model", sa.String(length=64), nullable=False),
        sa.Column("owner_token_id", sa.String(length=32), nullable=False),
        sa.Column("workload", sa.String(length=32), nullable=False),
        sa.Column("labels_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_job_days")),
    )
    op.create_index("uq_usage_job_days_key", "usage_job_days", ["project_id", "day", "job_id", "gpu_model"],
                    unique=True)
    _backfill()


def _backfill() -> None:
    """Roll up the closed intervals already there (columns named here, so later revisions cannot break it)."""
    from queue_service.billing.pricebook import PriceBook
    from queue_service.billing.rollups import backfill

    bind = op.get_bind()
    intervals = sa.table("usage_intervals", *[sa.column(c) for c in _INTERVAL_COLUMNS])
    prices = sa.table("gpu_prices", *[sa.column(c) for c in _PRICE_COLUMNS])
    book = PriceBook(list(bind.execute(sa.select(prices)).all()))  # type: ignore[arg-type]

    def page(after: int, limit: int) -> list:
        return list(bind.execute(sa.select(intervals).where(intervals.c.ended_at.is_not(None),
                                                            intervals.c.id > after)
                                 .order_by(intervals.c.id).limit(limit)))

    backfill(bind, page, book)


def downgrade() -> None:
    op.drop_index("uq_usage_job_days_key", table_name="usage_job_days")
    op.drop_table("usage_job_days")
    op.drop_index("uq_usage_rollups_key", table_name="usage_rollups")
    op.drop_table("usage_rollups")
    with op.batch_alter_table("usage_intervals") as batch:
        batch.drop_column("labels_json")
        batch.drop_column("workload")
