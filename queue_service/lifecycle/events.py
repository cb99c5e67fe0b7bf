"""Job events: one append-only row per accepted transition, stamped by the database's clock.

The history a user reads (``GET /v1/jobs/{id}/events``, ``gpuq show``) and
what later features react to. Replaying a job's events from ``submit``
gives its current state (``replay``); a rejected transition writes none.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.db.models import Job, JobEvent
from queue_service.lifecycle import effects
from queue_service.lifecycle.states import Actor, Event, JobState, StopCause
from queue_service.lifecycle.table import check


def record(
    session: Session,
    *,
    job: Job,
    event: Event,
    source: JobState | None,
    target: JobState,
    actor: str,
    at: datetime,
    reason: str = "",
    cause: StopCause | None = None,
) -> JobEvent:
    """Append one event row (flushed with the transaction that made the transition)."""
    row = JobEvent(
        job_id=job.id, attempt=job.attempt or 0, at=at, event=event.value,
        from_state=source.value if source else None, to_state=target.value, actor=actor[:128],
        cause=cause.value if cause else None, reason=reason[:4000],
    )
    session.add(row)
    effects.queue(session, job_events=True)  # webhooks: the sender wakes once this commits
    return row


def mark_idle(session: Session, *, job: Job, idle: bool, at: datetime, reason: str = "") -> JobEvent | None:
    """Set (``idle``) or clear the job's idle flag, ``jobs.idle_since``, with an ``idle`` / ``active`` event.

    No state changes: the event goes from the job's state to the same state
    (the table allows it for running jobs, by the service). Setting a flag that
    is already set, or clearing one that is clear, writes nothing and returns None.
    """
    if (job.idle_since is not None) == idle:
        return None
    event = Event.IDLE if idle else Event.ACTIVE
    source = JobState(job.state)
    check(event, source, source, Actor.SERVICE, job_id=job.id)
    job.idle_since = at if idle else None
    return record(session, job=job, event=event, source=source, target=source, actor="service", at=at, reason=reason)


def for_job(session: Session, *, job_id: str) -> list[JobEvent]:
    """A job's events, oldest first."""
    return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def replay(events: Iterable[JobEvent]) -> JobState | None:
    """The state the events lead to; raises ValueError if one does not start where the last ended."""
    state: JobState | None = None
    for row in events:
        source = JobState(row.from_state) if row.from_state else None
        if source != state:
            raise ValueError(f"event {row.id} ({row.event}) starts at {source}, but the job was {state}")
        state = JobState(row.to_state)
    return state
