"""Billing tables: the usage ledger, the price catalogue, measured GPU samples.

Invariants:

- one ledger interval per allocation (``uq_usage_intervals_allocation``):
  it opens when the replica holding the allocation is claimed to start and
  closes when the allocation is released, in the same transaction as that
  change, so the ledger cannot drift from the allocations;
- ledger rows copy what they bill (project, owner, node, GPU model, what
  was held): a job, node or GPU deleted later does not change a bill;
- price rows are only inserted, each effective from a moment not in the
  past, so a closed period is always priced by the rows it was priced by.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from queue_service.db.base import Base, utcnow


class UsageInterval(Base):
    """What one allocation held, from its start to its release (``ended_at`` NULL: still running)."""

    __tablename__ = "usage_intervals"
    __table_args__ = (
        Index("uq_usage_intervals_allocation", "allocation_id", unique=True),
        Index("ix_usage_intervals_project_time", "project_id", "started_at"),
        Index("ix_usage_intervals_open", "ended_at", "gpu_uuid"),
        Index("ix_usage_intervals_job", "job_id", "attempt"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    allocation_id: Mapped[str] = mapped_column(String(32))  # no FK: the ledger outlives job deletion
    job_id: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    replica: Mapped[int] = mapped_column(Integer, default=0)
    project_id: Mapped[str] = mapped_column(String(32))
    project_name: Mapped[str] = mapped_column(String(64))
    owner_token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    node_id: Mapped[str] = mapped_column(String(32))
    node_name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # gpu | mig | blocks | cpu
    gpu_uuid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    gpu_model: Mapped[str | None] = mapped_column(String(64), nullable=True)
    slot: Mapped[str] = mapped_column(String(32), default="")
    gpus: Mapped[int] = mapped_column(Integer, default=0)  # whole GPUs held (0 or 1 per allocation)
    blocks: Mapped[int] = mapped_column(Integer, default=0)
    gpu_memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    mig_profile: Mapped[str | None] = mapped_column(String(32), nullable=True)
    mig_start: Mapped[int | None] = mapped_column(Integer, nullable=True)
    mig_compute_share: Mapped[float] = mapped_column(Float, default=0.0)  # compute slices / GPU slices
    cpus_milli: Mapped[int] = mapped_column(Integer, default=0)
    memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # rollups (revision 0011): the job's workload class and labels, copied like the project (canonical JSON)
    workload: Mapped[str] = mapped_column(String(32), default="batch", server_default=text("'batch'"))
    labels_json: Mapped[str] = mapped_column(Text, default="{}", server_default=text("'{}'"))


class GpuPrice(Base):
    """One effective-dated price list for one GPU model; the newest row not after ``t`` applies at ``t``.

    Prices are per hour in the catalogue's single currency. ``None`` means "the
    default": a block hour is 1/100 of the GPU hour, a MIG profile hour is its
    compute share of the GPU hour, memory, CPU and RAM are free.
    """

    __tablename__ = "gpu_prices"
    __table_args__ = (Index("ix_gpu_prices_model_from", "gpu_model", "effective_from"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    gpu_model: Mapped[str] = mapped_column(String(64))  # model key, or "*" for nodes without GPUs (CPU/RAM)
    effective_from: Mapped[datetime] = mapped_column(DateTime)
    gpu_hour: Mapped[float] = mapped_column(Float, default=0.0)
    block_hour: Mapped[float | None] = mapped_column(Float, nullable=True)
    gpu_memory_gib_hour: Mapped[float | None] = mapped_column(Float, nullable=True)
    mig_profile_hour: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # profile -> price
    cpu_hour: Mapped[float | None] = mapped_column(Float, nullable=True)
    ram_gib_hour: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    note: Mapped[str] = mapped_column(Text, default="")


class GpuSample(Base):
    """A job's measured use of one GPU (or MIG device) over ``window_s`` ending at ``at`` (service clock)."""

    __tablename__ = "gpu_samples"
    __table_args__ = (
        Index("ix_gpu_samples_job", "job_id", "at"),
        Index("ix_gpu_samples_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    replica: Mapped[int] = mapped_column(Integer, default=0)
    project_id: Mapped[str] = mapped_column(String(32))
    node_id: Mapped[str] = mapped_column(String(32))
    gpu_uuid: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime)
    window_s: Mapped[float] = mapped_column(Float)
    sm_percent: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: NVML cannot say (MIG)
    memory_used_mib: Mapped[int] = mapped_column(Integer, default=0)


# --- usage rollups (revision 0011): what closed intervals held, summed per UTC hour and reporting key -------------


class _RollupColumns:
    """The columns of a rollup row: its key and its sums (``UsageRollup``, ``UsageRollupDelta``)."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hour: Mapped[datetime] = mapped_column(DateTime)  # the bucket's start, a whole UTC hour
    project_id: Mapped[str] = mapped_column(String(32))
    project_name: Mapped[str] = mapped_column(String(64))
    owner_token_id: Mapped[str] = mapped_column(String(32), default="")  # "" for none
    workload: Mapped[str] = mapped_column(String(32), default="batch")
    labels_hash: Mapped[str] = mapped_column(String(40), default="")  # sha1 of labels_json: the key (indexable)
    labels_json: Mapped[str] = mapped_column(Text, default="{}")
    gpu_model: Mapped[str] = mapped_column(String(64), default="")  # "" for none (CPU-only)
    # A key's rows for one hour are split by job (``rollups.shard``): concurrent exits of different jobs update
    # different rows instead of queueing on one (revision 0020). Readers sum over it like any other key part.
    shard: Mapped[int] = mapped_column(Integer, server_default="0")
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    block_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    mig_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_equivalent_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_memory_gib_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    ram_gib_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    max_gpu_memory_mib: Mapped[int] = mapped_column(Integer, default=0)  # largest per-device allocation
    intervals: Mapped[int] = mapped_column(Integer, default=0)  # interval pieces summed here


class UsageRollup(_RollupColumns, Base):
    """Closed ledger intervals summed per UTC hour and key (``billing.rollups``), folded in from the deltas.

    Key: hour, project, owner token, workload class, labels (canonical JSON, keyed by its hash) and GPU model
    (the price key: a model's price list prices it; the cost is summed already split where a list changed).
    Every quantity is a resource-second sum, so any set of whole hours and keys adds up exactly; open
    intervals are never here.
    """

    __tablename__ = "usage_rollups"
    __table_args__ = (
        Index("uq_usage_rollups_key", "project_id", "hour", "owner_token_id", "workload", "labels_hash",
              "gpu_model", "shard", unique=True),
    )


class UsageRollupDelta(_RollupColumns, Base):
    """One transaction's additions to ``usage_rollups``, appended and never updated (revision 0021).

    Every exit of a busy cluster added to the same hour's rollup row, and waited for the exits before it
    to commit (1,000 simulated hosts: half of an API process's request threads queued on that row, and
    heartbeats waited for a free thread). An exit now appends its sums here; the admitter's loop folds
    them into ``usage_rollups`` now and then (``rollups.fold``: delete-returning and add, in one
    transaction), and readers sum both tables in one statement (``rollups.rollup_rows``).
    """

    __tablename__ = "usage_rollup_deltas"
    __table_args__ = (Index("ix_usage_rollup_deltas_key", "project_id", "hour"),)


class UsageJobDay(Base):
    """A job held something (a closed interval of positive length) on this UTC day: distinct-job counts."""

    __tablename__ = "usage_job_days"
    __table_args__ = (
        Index("uq_usage_job_days_key", "project_id", "day", "job_id", "gpu_model", unique=True),
        Index("ix_usage_job_days_job", "job_id", "day"),  # a job's days, read when its intervals close (0018)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    day: Mapped[datetime] = mapped_column(DateTime)  # UTC midnight
    project_id: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str] = mapped_column(String(32))
    gpu_model: Mapped[str] = mapped_column(String(64), default="")
    owner_token_id: Mapped[str] = mapped_column(String(32), default="")
    workload: Mapped[str] = mapped_column(String(32), default="batch")
    labels_json: Mapped[str] = mapped_column(Text, default="{}")


NO_PREVIOUS_DAY = datetime(1970, 1, 1)  # usage_job_counts.prev_day of a job's first day (a key column: no NULL)


class _JobCountColumns:
    """The columns of a job-count row (``UsageJobCount``, ``UsageJobCountDelta``)."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    day: Mapped[datetime] = mapped_column(DateTime)
    project_id: Mapped[str] = mapped_column(String(32))
    owner_token_id: Mapped[str] = mapped_column(String(32), default="")
    workload: Mapped[str] = mapped_column(String(32), default="batch")
    labels_hash: Mapped[str] = mapped_column(String(40), default="")
    labels_json: Mapped[str] = mapped_column(Text, default="{}")
    prev_day: Mapped[datetime] = mapped_column(DateTime)
    shard: Mapped[int] = mapped_column(Integer, server_default="0")  # split by job, as ``UsageRollup.shard``
    jobs: Mapped[int] = mapped_column(Integer, default=0)


class UsageJobCount(_JobCountColumns, Base):
    """Jobs per (UTC day, project, owner, workload, labels, previous day the job held something): distinct counts.

    A job is counted once on each day it held something, under the last earlier day it did
    (``NO_PREVIOUS_DAY`` for its first). Distinct jobs on day d are that day's rows summed; distinct jobs
    in whole days ``[d0, d1)`` are the rows of those days whose previous day is before d0 summed (each
    job's first day in the window). Derived from ``usage_job_days`` (``billing.rollups``).
    """

    __tablename__ = "usage_job_counts"
    __table_args__ = (
        Index("uq_usage_job_counts_key", "project_id", "day", "owner_token_id", "workload", "labels_hash",
              "prev_day", "shard", unique=True),
    )


class UsageJobCountDelta(_JobCountColumns, Base):
    """One transaction's additions to ``usage_job_counts``, appended (revision 0021; as ``UsageRollupDelta``)."""

    __tablename__ = "usage_job_count_deltas"
    __table_args__ = (Index("ix_usage_job_count_deltas_key", "project_id", "day"),)
