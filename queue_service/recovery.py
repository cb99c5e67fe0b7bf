"""Recovery: what happens to an attempt its node lost, and to the nodes that stop heartbeating.

Invariants:

- Postgres is the source of truth; a node is alive while its lease, extended
  by each heartbeat and measured by the database's clock, has not run out.
- A lost attempt is ended (``attempts.state = "lost"``) and its allocations,
  on every node of a gang, are released *in the same transaction* that
  requeues the job, so capacity is never held by an attempt nobody runs.
- The attempt number is the fencing token. A requeued job is ``queued``
  with no current attempt: every report about the lost attempt is refused
  (``reports._fenced``), and the next admission makes attempt ``n + 1``.
- Retries are bounded: a job whose attempts were lost more than
  ``max_retries`` times is *failed* with the reason (not held), so a job that
  kills its host cannot take the cluster down one node at a time.
- A node whose lease expired may come back: its agent re-registers and is
  told (heartbeat ``stale``) to stop whatever it still runs of a lost attempt.
  Agents self-fence before the lease runs out (``workers.agent``), so the
  old and the new attempt never run at the same time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from queue_service.db.models import LIVE_STATES, Allocation, Attempt, Job, JobState, Node, NodeStatus
from queue_service.services import nodes as node_service
from queue_service.services.jobs import release_allocations
from workers.messages import StopRequest

log = logging.getLogger(__name__)

LOST = "lost"  # attempts.state of an attempt its node lost


@dataclass(slots=True)
class Recovered:
    """What one recovery pass did; ``stops`` are sent after commit."""

    nodes_down: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    stops: list[StopRequest] = field(default_factory=list)


def lose_attempt(
    session: Session, *, job: Job, reason: str, max_retries: int, now: datetime | None = None, grace_s: float = 10.0,
) -> tuple[JobState, list[StopRequest]]:
    """End the job's current attempt as lost, free it everywhere, then requeue (or fail after ``max_retries``).

    The caller holds the job row (``FOR UPDATE`` on PostgreSQL) and commits.
    Returns the job's new state and stop commands for every node of the attempt.
    """
    now = now or node_service.db_now(session)
    number = job.attempt
    row = session.scalar(select(Attempt).where(Attempt.job_id == job.id, Attempt.number == number))
    nodes = session.execute(
        select(Allocation.replica, Node.name)
        .join(Node, Node.id == Allocation.node_id)
        .where(Allocation.job_id == job.id, Allocation.attempt == number, Allocation.released_at.is_(None))
    ).all()
    stops = [StopRequest(job.id, number, name, grace_s, f"attempt lost: {reason}", replica)
             for replica, name in sorted(set(nodes))]
    release_allocations(session, job_id=job.id, attempt=number)
    if row is not None:
        row.ended_at, row.state, row.reason = now, LOST, reason[:2000]
    lost = session.scalar(
        select(func.count()).select_from(Attempt).where(Attempt.job_id == job.id, Attempt.state == LOST)
    ) or 0
    if job.cancel_requested:
        job.state, job.finished_at = JobState.CANCELLED, now
        job.reason = job.reason.replace("; stopping", "") or "cancelled"
    elif lost > max_retries:
        job.state, job.finished_at = JobState.FAILED, now
        job.reason = f"{reason}; not retried: {lost} attempts lost (max_retries={max_retries})"
    else:
        job.state = JobState.QUEUED
        job.reason = f"requeued: {reason} (retry {lost} of {max_retries})"
    log.warning("job %s attempt %s lost (%s): now %s", job.id, number, reason, job.state)
    return JobState(job.state), stops


def expire(session: Session, *, max_retries: int, grace_s: float = 10.0) -> Recovered:
    """Mark nodes whose lease ran out as down and requeue the attempts that ran on them.

    Idempotent and independent of who marked a node down: any live
    allocation of a live job's current attempt on a down node is lost.
    """
    out = Recovered()
    out.nodes_down = [n.name for n in node_service.expire_leases(session)]
    session.flush()
    now = node_service.db_now(session)
    rows = session.execute(
        select(Allocation.job_id, Allocation.attempt, Node.name)
        .join(Node, Node.id == Allocation.node_id)
        .where(Allocation.released_at.is_(None), Node.status == NodeStatus.DOWN)
    ).all()
    seen: set[str] = set()
    for job_id, attempt, node_name in sorted(rows):
        if job_id in seen:
            continue
        seen.add(job_id)
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.attempt != attempt or JobState(job.state) not in LIVE_STATES:
            # A leftover of an attempt already over (should not happen): just free it.
            release_allocations(session, job_id=job_id, attempt=attempt)
            continue
        state, stops = lose_attempt(
            session, job=job, reason=f"node {node_name} stopped heartbeating (lease expired)",
            max_retries=max_retries, now=now, grace_s=grace_s,
        )
        out.stops += stops
        (out.requeued if state == JobState.QUEUED else out.failed).append(job_id)
    return out
