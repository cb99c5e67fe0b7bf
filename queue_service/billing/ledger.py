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

from sqlalchemy import case, insert, literal, select, update
from sqlalchemy.orm import Session

from queue_service.admission.units import held_equivalents, mig_share
from queue_service.billing import rollups
from queue_service.db.billing_models import UsageInterval
from queue_service.db.clock import db_now  # re-exported: billing's callers read the clock from here
from queue_service.db.models import Allocation, Gpu, Job, Node, Project
from queue_service.db.session import sync_held

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

    One query reads what the rows need (the allocations still without an interval, their node's name,
    GPU model and the project's name) and one statement inserts them: the start claim runs for every
    replica that starts, and three reads and an ORM flush per claim were 18 % of a busy server's time.
    """
    a = Allocation
    rows = session.execute(
        select(a.id, a.node_id, a.kind, a.gpu_uuid, a.slot, a.blocks, a.gpu_memory_mib, a.mig_profile, a.mig_start,
               a.cpus_milli, a.memory_mib, Node.name.label("node_name"), Gpu.model.label("gpu_model"),
               Project.name.label("project_name"))
        .join(Node, Node.id == a.node_id)
        .outerjoin(Gpu, Gpu.uuid == a.gpu_uuid)
        .outerjoin(Project, Project.id == literal(job.project_id))
        .outerjoin(UsageInterval, UsageInterval.allocation_id == a.id)
        .where(a.job_id == job.id, a.attempt == attempt, a.replica == replica, a.released_at.is_(None))
        .where(UsageInterval.id.is_(None))
        .order_by(a.id)
    ).all()
    if not rows:
        return 0
    start = at or db_now(session)
    labels = rollups.labels_key(job.labels)
    session.execute(insert(UsageInterval), [{
        "allocation_id": r.id, "job_id": job.id, "attempt": attempt, "replica": replica,
        "project_id": job.project_id, "project_name": r.project_name or "", "owner_token_id": job.owner_token_id,
        "node_id": r.node_id, "node_name": r.node_name, "kind": r.kind, "gpu_uuid": r.gpu_uuid,
        "gpu_model": r.gpu_model,
        "slot": r.slot or "", "gpus": 1 if r.kind == "gpu" else 0, "blocks": r.blocks if r.kind == "blocks" else 0,
        "gpu_memory_mib": r.gpu_memory_mib, "mig_profile": r.mig_profile, "mig_start": r.mig_start,
        "mig_compute_share": mig_compute_share(r.gpu_model, r.mig_profile), "cpus_milli": r.cpus_milli,
        "memory_mib": r.memory_mib, "started_at": start, "ended_at": None, "workload": job.workload,
        "labels_json": labels,
    } for r in rows])
    return len(rows)


_ROLLED = [getattr(UsageInterval, c) for c in ("id", *rollups.IntervalLike.__annotations__)]  # what rollups read


def close_intervals(session: Session, *, allocation_ids: Iterable[str], at: datetime | None = None) -> int:
    """Close the open intervals of these allocations and add them to the rollups; returns how many were open.

    The end never precedes the start (SQLite's process clock may step back),
    so an interval's length is never negative. The rollup rows
    (``billing.rollups``) are written here, in the same transaction: a closed
    interval is in the rollups exactly when it is closed.

    One ``UPDATE .. RETURNING`` closes them and answers what the rollups read, with the end the database
    wrote (it was a SELECT, the UPDATE and one more SELECT per interval to reload its expired end, on
    every exit). Intervals this session already holds are given the same end.
    """
    ids = list(allocation_ids)
    if not ids:
        return 0
    end = at or db_now(session)
    rows = session.execute(
        update(UsageInterval).where(UsageInterval.allocation_id.in_(ids), UsageInterval.ended_at.is_(None))
        .values(ended_at=case((UsageInterval.started_at > end, UsageInterval.started_at), else_=end))
        .returning(*_ROLLED).execution_options(synchronize_session=False)
    ).all()
    if not rows:
        return 0
    sync_held(session, UsageInterval, "ended_at", ((row.id, row.ended_at) for row in rows))
    rollups.add_closed(session, rows)
    return len(rows)
