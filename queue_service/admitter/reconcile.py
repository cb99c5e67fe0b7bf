"""Reconciliation: the database is the truth, the broker only the doorbell.

1. nodes whose lease expired (database clock) are marked down and their
   attempts lost: requeued, or failed after ``max_retries`` (``recovery``);
2. admitted attempts whose launch went out more than ``resend_after_s``
   ago get it again (a flushed or restarted Redis delays, never loses);
3. stops of jobs still stopping (cancel, preempt, reclaim) likewise.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.admitter.launch import launch_spec
from queue_service.db.clock import db_now
from queue_service.db.models import Allocation, Attempt, Job, JobState, Node
from queue_service.db.priority_classes import effective
from queue_service.lifecycle import effects, transitions
from queue_service.lifecycle.grace import of_class
from queue_service.recovery import Recovered, expire
from queue_service.settings import Settings
from workers.messages import LaunchSpec, StopRequest


def reconcile(session: Session, *, settings: Settings) -> tuple[Recovered, int]:
    """One pass in the caller's transaction; returns what recovery did and how many commands it queued."""
    recovered = expire(session, settings=settings)
    now = db_now(session)
    cutoff = now - timedelta(seconds=settings.resend_after_s)
    classes = effective(session, settings=settings)
    node_names = dict(session.execute(select(Node.id, Node.name)).all())
    launches: list[LaunchSpec] = []
    # SKIP LOCKED: an attempt whose start claim (or exit) holds its job right now is not waited for (it is
    # being answered; the next pass sees it again if it still waits); under load this pass waited on claim
    # after claim while holding the rows it had taken, and the claims waited on it.
    waiting = session.execute(
        select(Job, Attempt)
        .join(Attempt, (Attempt.job_id == Job.id) & (Attempt.number == Job.attempt))
        .where(Job.state == JobState.ADMITTED, Attempt.launch_sent_at < cutoff)
        .order_by(Job.id)
        .with_for_update(skip_locked=True)
    ).all()
    rows_of = _allocations(session, [job.id for job, _attempt in waiting])
    for job, attempt in waiting:
        rows = [r for r in rows_of.get(job.id, []) if r.attempt == job.attempt]
        for replica in sorted({r.replica for r in rows}):
            mine = [r for r in rows if r.replica == replica]
            if str(replica) not in (attempt.exits or {}):
                launches.append(launch_spec(job, job.attempt, replica, node_names[mine[0].node_id], mine,
                                            classes=classes, settings=settings))
        attempt.launch_sent_at = now
    stops: list[StopRequest] = []
    stopping = session.execute(
        select(Job, Attempt)
        .join(Attempt, (Attempt.job_id == Job.id) & (Attempt.number == Job.attempt))
        .where(Job.state == JobState.RUNNING, Job.stop_action.is_not(None), Attempt.stop_sent_at < cutoff)
        .order_by(Job.id)
        .with_for_update(skip_locked=True)
    ).all()
    for job, attempt in stopping:
        grace_s = job.stop_grace_s if job.stop_grace_s is not None else of_class(
            classes, job.priority_class, default_s=settings.default_grace_s)
        stops.extend(transitions.resend_stops(session, job=job, grace_s=grace_s))
        attempt.stop_sent_at = now
    effects.queue(session, launches=launches, stops=stops, wake=bool(recovered.requeued or recovered.failed))
    return recovered, len(launches) + len(stops)


def _allocations(session: Session, job_ids: list[str]) -> dict[str, list[Allocation]]:
    """These jobs' allocation rows, by job, in one query (one per job was a round trip each)."""
    out: dict[str, list[Allocation]] = {}
    if job_ids:
        for row in session.scalars(select(Allocation).where(Allocation.job_id.in_(job_ids))
                                   .order_by(Allocation.job_id, Allocation.replica)):
            out.setdefault(row.job_id, []).append(row)
    return out
