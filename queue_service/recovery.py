"""Recovery: what happens to an attempt its node lost, and to the nodes that stop heartbeating.

Invariants:

- Postgres is the source of truth; a node is alive while its lease, extended
  by each heartbeat and measured by the database's clock, has not run out.
- A lost attempt is ended (``attempts.state = "lost"``) and its allocations,
  on every node of a gang, are released *in the same transaction* that
  requeues the job, so capacity is never held by an attempt nobody runs.
- The attempt number is the fencing token. A requeued job is ``queued``
  with no current attempt: every report about the lost attempt is refused
  (``lifecycle.transitions.fenced``), and the next admission makes attempt ``n + 1``.
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
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.db.clock import db_now
from queue_service.db.models import LIVE_STATES, Allocation, Job, JobState, Node, NodeStatus
from queue_service.lifecycle import grace, transitions
from queue_service.services import nodes as node_service
from queue_service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Recovered:
    """What one recovery pass did (the stops go out after commit, with the lifecycle's effects)."""

    nodes_down: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def expire(session: Session, *, settings: Settings) -> Recovered:
    """Mark nodes whose lease ran out as down and requeue the attempts that ran on them.

    Idempotent and independent of who marked a node down: any live
    allocation of a live job's current attempt on a down node is lost.
    """
    out = Recovered()
    out.nodes_down = [n.name for n in node_service.expire_leases(session)]
    session.flush()
    now = db_now(session)
    rows = session.execute(
        select(Allocation.job_id, Allocation.attempt, Node.name)
        .join(Node, Node.id == Allocation.node_id)
        .where(Allocation.released_at.is_(None), Node.status == NodeStatus.DOWN)
    ).all()
    first = {job_id: (attempt, node_name) for job_id, attempt, node_name in sorted(rows, reverse=True)}
    locked = lock_jobs(session, first)
    for job_id, (attempt, node_name) in sorted(first.items()):
        job = locked.get(job_id)
        if job is None or job.attempt != attempt or JobState(job.state) not in LIVE_STATES:
            # A leftover of an attempt already over (should not happen): just free it.
            transitions.stop_leftovers(session, job_id=job_id, attempt=attempt)
            continue
        state = transitions.lose_attempt(
            session, job=job, reason=f"node {node_name} stopped heartbeating (lease expired)",
            who=transitions.SERVICE, max_retries=settings.max_retries, at=now,
            grace_s=grace.grace_s(session, settings=settings, priority_class=job.priority_class),
        )
        (out.requeued if state == JobState.QUEUED else out.failed).append(job_id)
    return out


def lock_jobs(session: Session, job_ids: Iterable[str]) -> dict[str, Job]:
    """Lock these jobs' rows all at once, in id order, before any of them is changed.

    Losing an attempt closes its usage intervals, which updates the hour's
    usage rollup row that every exit report updates too. Locking job after
    job, each one lost before the next is locked, held that rollup row while
    waiting for a job an exit report held, as the report waited for the
    rollup row: a deadlock (seen with 100 simulated hosts whose leases ran out).
    """
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    rows = session.scalars(select(Job).where(Job.id.in_(ids)).order_by(Job.id).with_for_update()
                           .execution_options(populate_existing=True))
    return {job.id: job for job in rows}
