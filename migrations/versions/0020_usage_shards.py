"""usage shards: rollup and job-count keys split by job, so concurrent exits do not queue on one row

Revision ID: 0020
Revises: 0018 (no 0019: the number was held for a report index that was not needed)
Create Date: 2026-12-02

Every exit of a busy cluster added to the same hour's rollup row and the same day's first-day job
count (one project, owner, workload and labels), holding both row locks until its commit; the other
exits waited for them. A ``shard`` column (``rollups.shard``: a digest of the job id) joins both keys.
Readers sum over it. Rows already there stay in shard 0 (rollups are sums: any split adds up); the
job counts are derived again from the job-days (``rollups.rebuild_job_counts``), so a job's later
re-link subtracts from the shard that counted it. The downgrade folds the shards back into one row per key.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0018"
branch_labels = None
depends_on = None

ROLLUP_KEY = ["project_id", "hour", "owner_token_id", "workload", "labels_hash", "gpu_model"]
COUNT_KEY = ["project_id", "day", "owner_token_id", "workload", "labels_hash", "prev_day"]
ROLLUP_SUMS = ["gpu_seconds", "block_seconds", "mig_seconds", "gpu_equivalent_seconds", "gpu_memory_gib_seconds",
               "cpu_seconds", "ram_gib_seconds", "cost", "intervals"]


def upgrade() -> None:
    for table, index, key in (("usage_rollups", "uq_usage_rollups_key", ROLLUP_KEY),
                              ("usage_job_counts", "uq_usage_job_counts_key", COUNT_KEY)):
        op.drop_index(index, table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("shard", sa.Integer(), server_default=sa.text("0"), nullable=False))
        op.create_index(index, table, [*key, "shard"], unique=True)
    from queue_service.billing.rollups import rebuild_job_counts

    rebuild_job_counts(op.get_bind())


def _fold_rollups() -> None:
    """One row per unsharded key: each key's shards summed into its lowest id, the others deleted."""
    key = ", ".join(ROLLUP_KEY)
    same = " AND ".join(f"o.{c} = usage_rollups.{c}" for c in ROLLUP_KEY)
    sums = ", ".join(f"{c} = (SELECT sum(o.{c}) FROM usage_rollups o WHERE {same})" for c in ROLLUP_SUMS)
    first = f"SELECT min(id) FROM usage_rollups GROUP BY {key}"
    op.execute(f"UPDATE usage_rollups SET {sums}, max_gpu_memory_mib = "
               f"(SELECT max(o.max_gpu_memory_mib) FROM usage_rollups o WHERE {same}) WHERE id IN ({first})")
    op.execute(f"DELETE FROM usage_rollups WHERE id NOT IN ({first})")


def downgrade() -> None:
    _fold_rollups()
    op.execute("DELETE FROM usage_job_counts")
    for table, index, key in (("usage_rollups", "uq_usage_rollups_key", ROLLUP_KEY),
                              ("usage_job_counts", "uq_usage_job_counts_key", COUNT_KEY)):
        op.drop_index(index, table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("shard")
        op.create_index(index, table, key, unique=True)
    from queue_service.billing.rollups import rebuild_job_counts

    rebuild_job_counts(op.get_bind())
