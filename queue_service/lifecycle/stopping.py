"""Taking capacity back: cancel, stop (preempt, reclaim, gang), and attempts their node lost."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from queue_service.db.clock import db_now
from queue_service.db.models import Attempt, Job
from queue_service.lifecycle import allocations, effects
from queue_service.lifecycle.moves import CANCEL, REQUEUE, Who, attempt_of, clear_stop, end_attempt, move
from queue_service.lifecycle.states import AttemptState, Event, JobState, StopCause
from queue_service.lifecycle.stops import stop_requests
from queue_service.lifecycle.table import IllegalTransition
from workers.messages import StopRequest

log = logging.getLogger(__name__)


def cancel(session: Session, *, job: Job, who: Who, grace_s: float) -> Job:
    """Cancel in any live state: a job not yet started ends at once, a running one is stopped.

    A final job is returned unchanged (cancelling twice is not an error).
    """
    state = JobState(job.state)
    if state.final:
        return job
    if state is JobState.RUNNING:
        return request_stop(session, job=job, who=who, cause=StopCause.CANCEL, requeue=False,
                            reason=f"cancel requested by {who.label}", grace_s=grace_s)
    words = f"cancelled by {who.label}"
    now = db_now(session)
    stops = stop_requests(session, job=job, grace_s=grace_s, reason="cancelled") if state is JobState.ADMITTED else []
    move(session, job, Event.CANCEL, JobState.CANCELLED, who, at=now, reason=words, cause=StopCause.CANCEL)
    job.reason, job.finished_at = words, now
    if state is JobState.ADMITTED:
        # Not started: the agent's start claim will be refused, so free it now.
        allocations.release(session, job_id=job.id, at=now)
        end_attempt(attempt_of(session, job), AttemptState.CANCELLED, at=now, reason="cancelled before start")
    effects.queue(session, stops=stops, wake=True)
    return job


def request_stop(
    session: Session, *, job: Job, who: Who, cause: StopCause, requeue: bool, reason: str, grace_s: float,
) -> Job:
    """Take a live job's capacity back: an admitted job at once, a running one after SIGTERM + grace.

    ``requeue``: the job goes back to the queue at its original position (it
    keeps its submit time) once its attempt ended; otherwise it ends cancelled.
    A job already stopping keeps its first cause (a second stop re-sends nothing).
    """
    state = JobState(job.state)
    if state not in (JobState.ADMITTED, JobState.RUNNING):
        raise IllegalTransition(f"job {job.id} is {state.value}; only admitted or running jobs can be stopped",
                                state=state, event=Event.STOP)
    now = db_now(session)
    if cause is StopCause.PREEMPT:
        job.preemptions += 1
    stops = stop_requests(session, job=job, grace_s=grace_s, reason=reason)
    if state is JobState.ADMITTED:  # not started: the agent's start claim will be refused
        target = JobState.QUEUED if requeue else JobState.CANCELLED
        move(session, job, Event.STOPPED, target, who, at=now, reason=reason, cause=cause)
        allocations.release(session, job_id=job.id, attempt=job.attempt, at=now)
        end_attempt(attempt_of(session, job), AttemptState.STOPPED, at=now, reason=reason)
        if requeue:
            job.reason = f"requeued: {reason}"
        else:
            job.reason, job.finished_at = reason, now
        effects.queue(session, stops=stops, wake=True)
        return job
    if job.stop_action is not None and (requeue or job.stop_action == CANCEL):
        return job  # already stopping (its first stop stands; the reconciler re-sends it)
    # Not stopping yet, or stopping to be requeued and now cancelled: the cancel wins.
    move(session, job, Event.STOP, JobState.RUNNING, who, at=now, reason=reason, cause=cause)
    job.stop_cause, job.stop_reason = cause, reason
    job.stop_action = REQUEUE if requeue else CANCEL
    job.stop_requested_at, job.stop_grace_s = now, grace_s
    job.cancel_requested = not requeue
    job.reason = f"{reason}; stopping (grace {grace_s:g} s)"
    row = attempt_of(session, job)
    if row is not None:
        row.stop_sent_at = now
    effects.queue(session, stops=stops)
    return job


# -- lost attempts ----------------------------------------------------------------------------------------------


LOST = AttemptState.LOST.value  # attempts.state of an attempt its node lost


def lose_attempt(
    session: Session, *, job: Job, reason: str, who: Who, max_retries: int, grace_s: float,
    at: datetime | None = None, cause: StopCause | None = None,
) -> JobState:
    """End the job's current attempt as lost, free it everywhere, then requeue (or fail after ``max_retries``).

    The caller holds the job row. Every node of the attempt is told to stop
    what it may still run (a gang's healthy members, a node that comes back).
    A job whose cancel was already requested ends cancelled instead.
    """
    now = at or db_now(session)
    number = job.attempt
    stops = stop_requests(session, job=job, grace_s=grace_s, reason=f"attempt lost: {reason}")
    allocations.release(session, job_id=job.id, attempt=number, at=now)
    end_attempt(attempt_of(session, job, number), AttemptState.LOST, at=now, reason=reason)
    lost = session.scalar(
        select(func.count()).select_from(Attempt).where(Attempt.job_id == job.id, Attempt.state == LOST)
    ) or 0
    if job.stop_action == CANCEL:
        words = job.stop_reason or "cancelled"
        move(session, job, Event.LOSE, JobState.CANCELLED, who, at=now, reason=reason,
             cause=cause or StopCause.NODE_LOST)
        job.reason, job.finished_at = words, now
    elif lost > max_retries:
        move(session, job, Event.LOSE, JobState.FAILED, who, at=now, reason=reason, cause=cause or StopCause.NODE_LOST)
        job.finished_at = now
        job.reason = f"{reason}; not retried: {lost} attempts lost (max_retries={max_retries})"
    else:
        move(session, job, Event.LOSE, JobState.QUEUED, who, at=now, reason=reason, cause=cause or StopCause.NODE_LOST)
        job.reason = f"requeued: {reason} (retry {lost} of {max_retries})"
    clear_stop(job)
    log.warning("job %s attempt %s lost (%s): now %s", job.id, number, reason, job.state)
    effects.queue(session, stops=stops, wake=True)
    return JobState(job.state)


def stop_leftovers(session: Session, *, job_id: str, attempt: int) -> None:
    """Free allocations of an attempt that is no longer current (should not happen; repaired quietly)."""
    allocations.release(session, job_id=job_id, attempt=attempt)


def resend_stops(session: Session, *, job: Job, grace_s: float) -> list[StopRequest]:
    """The stop requests of a job that is stopping, for the reconciler to send again."""
    return stop_requests(session, job=job, grace_s=grace_s, reason=job.stop_reason or "stopping")
