"""Pending jobs: approve, deny, and approvals that run out.

A job whose project's approval policy or budget wants a person's yes is
submitted ``pending_approval`` (``submit.submit(needs_approval=...)``).
From there an approver (a project's approver token, or an admin) either
lets it into the queue (``approve``: its place in the queue is its submit
time, as for every job) or refuses it (``deny``: final state ``denied``,
the approver's words are its reason). An approval may carry an end
(``approval_expires_at``): a job still not admitted when it passes goes
back to ``pending_approval`` (``expire``, by the service) so someone looks
again at what it asks against what the cluster holds now — a deny by
default would punish a job for a busy cluster. Once a job has been admitted
its approval is spent: a preempted, requeued job does not ask again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.orm import Session

from queue_service.db.clock import db_now
from queue_service.db.models import Job
from queue_service.lifecycle import effects
from queue_service.lifecycle.moves import SERVICE, Who, move
from queue_service.lifecycle.states import Event, JobState


def approve(session: Session, *, job: Job, who: Who, reason: str = "", expires_at: datetime | None = None) -> Job:
    """pending_approval → queued; ``expires_at``: the approval lapses if the job is not admitted by then."""
    at = db_now(session)
    move(session, job, Event.APPROVE, JobState.QUEUED, who, at=at, reason=reason)
    job.approval_expires_at = expires_at
    job.reason = f"approved by {who.label}" + (f": {reason}" if reason else "") + "; waiting for the next cycle"
    effects.queue(session, wake=True)
    return job


def deny(session: Session, *, job: Job, who: Who, reason: str) -> Job:
    """pending_approval → denied, final; the reason is the approver's."""
    at = db_now(session)
    move(session, job, Event.DENY, JobState.DENIED, who, at=at, reason=reason)
    job.reason, job.finished_at = f"denied by {who.label}: {reason}", at
    return job


def expire(session: Session, *, queued: Mapping[str, Job], now: datetime | None = None) -> dict[str, str]:
    """Queued jobs whose approval ran out before their first admission go back to pending_approval.

    Returns them with why, so the cycle skips them (they are no longer queued).
    """
    lapsed = [j for j in queued.values()
              if j.approval_expires_at is not None and not j.attempt]
    if not lapsed:
        return {}
    now = now or db_now(session)
    out: dict[str, str] = {}
    for job in lapsed:
        if job.approval_expires_at is None or job.approval_expires_at > now:
            continue
        words = f"approval expired at {job.approval_expires_at.isoformat(timespec='seconds')}Z before the job started"
        move(session, job, Event.EXPIRE, JobState.PENDING_APPROVAL, SERVICE, at=now, reason=words)
        job.approval_expires_at = None
        job.reason = f"waiting for approval: {words}"
        out[job.id] = job.reason
    return out
