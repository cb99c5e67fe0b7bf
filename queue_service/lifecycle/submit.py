"""Queued jobs: submit, hold, release, and the words that say why each still waits."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.orm import Session

from queue_service.db.base import new_id
from queue_service.db.clock import db_now
from queue_service.db.models import Job
from queue_service.lifecycle import effects
from queue_service.lifecycle.moves import Who, move
from queue_service.lifecycle.states import Event, JobState
from queue_service.lifecycle.table import IllegalTransition


def submit(session: Session, *, job: Job, who: Who, at: datetime | None = None, flush: bool = True,
           needs_approval: str = "") -> Job:
    """Queue a validated new job (``job`` built by the caller, without a state).

    ``needs_approval``: why its project's approval policy or budget wants an
    approver's yes first; the job then starts ``pending_approval`` with that
    reason, and the admitter does not see it until it is approved.
    """
    at = at or db_now(session)
    job.id = job.id or new_id()
    job.attempt = 0
    job.state = None  # type: ignore[assignment]  # new: the table's "(new)" source
    job.submitted_at = job.submitted_at or at
    if needs_approval:
        move(session, job, Event.SUBMIT, JobState.PENDING_APPROVAL, who, at=at, reason=needs_approval)
        job.reason = f"waiting for approval: {needs_approval}"
    else:
        move(session, job, Event.SUBMIT, JobState.QUEUED, who, at=at)
        job.reason = "waiting for the next admission cycle"
        effects.queue(session, wake=True)
    session.add(job)
    if flush:  # a batch leaves it to the commit: one multi-row INSERT for all its jobs
        session.flush()
    return job


def hold(session: Session, *, job: Job, who: Who, reason: str = "") -> Job:
    """Hold a queued job: the admitter skips it until it is released."""
    move(session, job, Event.HOLD, JobState.QUEUED, who, at=db_now(session), reason=reason)
    job.held = True
    job.reason = f"held by {who.label}" + (f": {reason}" if reason else "")
    return job


def release_hold(session: Session, *, job: Job, who: Who, reason: str = "") -> Job:
    """Release a held job (a queued job that is not held is released as a no-op event)."""
    source = JobState(job.state)
    if source is not JobState.QUEUED:
        if not job.held:
            return job  # nothing held: releasing a running job changes nothing
        raise IllegalTransition(f"job {job.id} is {source.value}; only queued jobs can be released",
                                state=source, event=Event.RELEASE)
    move(session, job, Event.RELEASE, JobState.QUEUED, who, at=db_now(session), reason=reason)
    job.held = False
    job.reason = "released; waiting for the next cycle"
    effects.queue(session, wake=True)
    return job


def set_wait_reasons(jobs: Mapping[str, Job], reasons: Mapping[str, str]) -> None:
    """Why each job still waits, in words (``jobs.reason`` of queued jobs); unchanged ones are not rewritten."""
    for job_id, reason in reasons.items():
        job = jobs[job_id]
        if JobState(job.state) is JobState.QUEUED and job.reason != reason:
            job.reason = reason
