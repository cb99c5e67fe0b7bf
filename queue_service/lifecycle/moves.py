"""The one move every transition makes: check the table, set the state, append the event.

``move`` is the only assignment of ``jobs.state`` in gpuq (a test walks the
code to keep it so); the helpers beside it end attempts and clear a stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.db.models import Attempt, Job
from queue_service.lifecycle import effects, events
from queue_service.lifecycle.states import Actor, AttemptState, Event, JobState, StopCause
from queue_service.lifecycle.table import check

REQUEUE, CANCEL = "requeue", "cancel"  # jobs.stop_action: what a stopped job becomes


@dataclass(frozen=True, slots=True)
class Who:
    """Who causes a transition: the table's actor kind and the label the event row keeps."""

    kind: Actor
    label: str


ADMITTER = Who(Actor.ADMITTER, "admitter")
SERVICE = Who(Actor.SERVICE, "service")


def agent(node_name: str) -> Who:
    """The agent of ``node_name``."""
    return Who(Actor.AGENT, f"agent:{node_name}")


def move(session: Session, job: Job, event: Event, target: JobState, who: Who, *, at: datetime,
          reason: str = "", cause: StopCause | None = None) -> None:
    """Check the table, then set the state and append the event: the only assignment of ``jobs.state``."""
    source = JobState(job.state) if job.state is not None else None
    check(event, source, target, who.kind, job_id=job.id or "")
    job.state = target
    events.record(session, job=job, event=event, source=source, target=target, actor=who.label, at=at,
                  reason=reason, cause=cause)
    effects.note_move(session, effects.Moved(job, source.value if source else None, target.value, who.label,
                                             reason))


def attempt_of(session: Session, job: Job, number: int | None = None) -> Attempt | None:
    return session.scalar(select(Attempt).where(Attempt.job_id == job.id,
                                                Attempt.number == (job.attempt if number is None else number)))


def end_attempt(row: Attempt | None, state: AttemptState, *, at: datetime, reason: str,
                 exit_code: int | None = None) -> None:
    if row is not None and row.ended_at is None:
        row.ended_at, row.state, row.reason, row.exit_code = at, state, reason[:2000], exit_code


def clear_stop(job: Job) -> None:
    job.stop_action = job.stop_requested_at = job.stop_grace_s = job.stop_cause = None
    job.cancel_requested = False
    job.stop_reason = ""
