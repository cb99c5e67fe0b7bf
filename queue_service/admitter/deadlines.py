"""When the admitter must look again on its own, with no wake: the timer of an idle admitter.

A cycle is woken by every commit that could change its answer (a submit, an
exit, a node registering, a cancel: ``lifecycle.effects``). What no commit
announces is time passing:

- while any job is queued, admitted or running, the regular tick
  (``admission_interval_s``) stays: approvals lapse, launches and stops are
  re-sent after ``resend_after_s``, attempts of vanished processes are lost,
  and a skipped or failed cycle is retried;
- with none, the only deadline left is the first node lease to run out (that
  node is marked down on time, by the database's clock), and a recovery tick
  of at most ``IDLE_TICK_S`` for whatever another replica or a direct write
  changed without a wake.

So an idle server runs one short cycle per lease (a heartbeat pushes the
deadline on: the cycle finds it moved and sleeps again) instead of one per
``admission_interval_s``.
"""

from __future__ import annotations

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from queue_service.db.clock import db_now
from queue_service.db.models import Job, JobState, Node, NodeStatus

IDLE_TICK_S = 60.0  # nothing queued or running: the longest the admitter sleeps without a wake
DEADLINE_SLACK_S = 0.05  # wake this long after a lease runs out, so the expiry check (``<``) sees it expired
BUSY_STATES = (JobState.QUEUED, JobState.ADMITTED, JobState.RUNNING)


def any_busy(session: Session) -> bool:
    """Is any job queued, admitted or running (an index lookup on ``jobs.state``)?"""
    return bool(session.scalar(select(exists().where(Job.state.in_([s.value for s in BUSY_STATES])))))


def first_lease_end_s(session: Session) -> float | None:
    """Seconds until the first lease of a node not yet down runs out (database clock); None without such a node."""
    first = session.scalar(select(func.min(Node.lease_expires_at)).where(Node.status != NodeStatus.DOWN))
    if first is None:
        return None
    return (first - db_now(session)).total_seconds()


def idle_wait_s(session: Session) -> float | None:
    """How long the admitter may sleep without a wake; None while jobs are live (the regular tick then)."""
    if any_busy(session):
        return None
    lease_end_s = first_lease_end_s(session)
    if lease_end_s is None:
        return IDLE_TICK_S
    return min(IDLE_TICK_S, max(0.0, lease_end_s) + DEADLINE_SLACK_S)
