"""The usage ledger: allocations -> intervals, written in the allocation change's own transaction.

An interval opens when an agent's start claim for a replica is accepted
(``services.reports.claim_start``) and closes when the allocation is
released (``services.jobs.release_allocations``): finish, cancel,
preemption, requeue all go through that one function. Both calls take the
caller's session, so the ledger row commits or rolls back with the
allocation row; it cannot drift from it. A job that never started has
allocations but no interval, so it costs nothing.

Clock: the database's. PostgreSQL answers ``clock_timestamp()`` (the wall
clock at the statement, not the transaction's start), so every API replica
stamps intervals on one clock and a slot freed by one transaction is
re-opened by a later one at a later time: intervals on a slot never
overlap. SQLite has no server clock; the service process's
``utcnow()`` stands in (one process writes an embedded SQLite). Agents'
clocks are never used.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from queue_service.admission.units import held_equivalents, mig_share
from queue_service.billing import rollups
from queue_service.db.billing_models import UsageInterval
from queue_service.db.clock import db_now  # re-exported: billing's callers read the clock from here
from queue_service.db.models import Allocation, Gpu, Job, Node, Project

__all__ = ["close_intervals", "db_now", "gpu_equivalents", "mig_compute_share", "open_intervals"]


def mig_compute_share(gpu_model: str | None, mig_profile: str | None) -> float:
    """The MIG share stored on an interval (``units.mig_share``: 3g on a 7-slice GPU 3/7); 0 without a profile."""
    return mig_share(mig_profile, gpu_model) if mig_profile else 0.0


def gpu_equivalents(row: UsageInterval) -> float:
    """How much of one GPU the interval holds (``units.held_equivalents``, the quota and metrics unit)."""
    return held_equivalents(row.kind, blocks=row.blocks, mig_profile=row.mig_profile, gpu_model=row.gpu_model)


def open_intervals(session: Session, *, job: Job, attempt: int, replica: int, at: datetime | None = None) -> int:
    """Open one interval per live allocation of the replica that has none yet; returns how many.

    Idempotent: a repeated start claim (at-least-once delivery) opens nothing
    new, because an allocation already in the ledger is skipped (and the
    unique index on ``allocation_id`` refuses a racing duplicate).
    """
    rows = session.execute(
        select(Allocation, Node.name, Gpu.model)
        .join(Node, Node.id == Allocation.node_id)
        .outerjoin(Gpu, Gpu.uuid == Allocation.gpu_uuid)
        .where(Allocation.job_id == job.id, Allocation.attempt == attempt, Allocation.replica == replica)
        .where(Allocation.released_at.is_(None))
    ).all()
    if not rows:
        return 0
    known = set(session.scalars(
        select(UsageInterval.allocation_id).where(UsageInterval.allocation_id.in_([a.id for a, _, _ in rows]))
    ))
    fresh = [(a, node, model) for a, node, model in rows if a.id not in known]
    if not fresh:
        return 0
    project_name = session.scalar(select(Project.name).where(Project.id == job.project_id)) or ""
    start = at or db_now(session)
    for alloc, node_name, gpu_model in fresh:
        session.add(UsageInterval(
            allocation_id=alloc.id, job_id=job.id, attempt=attempt, replica=replica,
            project_id=job.project_id, project_name=project_name, owner_token_id=job.owner_token_id,
            node_id=alloc.node_id, node_name=node_name, kind=alloc.kind, gpu_uuid=alloc.gpu_uuid,
            gpu_model=gpu_model, slot=alloc.slot or "", gpus=1 if alloc.kind == "gpu" else 0,
            blocks=alloc.blocks if alloc.kind == "blocks" else 0, gpu_memory_mib=alloc.gpu_memory_mib,
            mig_profile=alloc.mig_profile, mig_start=alloc.mig_start,
            mig_compute_share=mig_compute_share(gpu_model, alloc.mig_profile),
            cpus_milli=alloc.cpus_milli, memory_mib=alloc.memory_mib, started_at=start, ended_at=None,
            workload=job.workload, labels_json=rollups.labels_key(job.labels),
        ))
    session.flush()
    return len(fresh)


def close_intervals(session: Session, *, allocation_ids: Iterable[str], at: datetime | None = None) -> int:
    """Close the open intervals of these allocations and add them to the rollups; returns how many were open.

    The end never precedes the start (SQLite's process clock may step back),
    so an interval's length is never negative. The rollup rows
    (``billing.rollups``) are written here, in the same transaction: a closed
    interval is in the rollups exactly when it is closed.
    """
    ids = list(allocation_ids)
    if not ids:
        return 0
    end = at or db_now(session)
    rows = list(session.scalars(
        select(UsageInterval).where(UsageInterval.allocation_id.in_(ids), UsageInterval.ended_at.is_(None))
        .order_by(UsageInterval.id)
    ))
    if not rows:
        return 0
    # One statement for the close (the ledger's own table, never lifecycle state); the loaded rows are
    # synchronised from it ("fetch"), so the rollups see the ends the database wrote.
    session.execute(
        update(UsageInterval).where(UsageInterval.id.in_([r.id for r in rows]))
        .values(ended_at=case((UsageInterval.started_at > end, UsageInterval.started_at), else_=end))
        .execution_options(synchronize_session="fetch")
    )
    rollups.add_closed(session, rows)
    return len(rows)
