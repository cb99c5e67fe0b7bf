"""States of jobs and attempts, and why a job is stopping. Pure: imported by the DB models.

A job: ``queued → admitted → running → succeeded | failed | cancelled |
timed_out`` (and back to ``queued`` when it is requeued). A job its project's
approval policy or budget stops at the door starts ``pending_approval``:
approved it is ``queued``, denied it ends ``denied``. An attempt is one
admission of a job; it ends ``succeeded | failed | cancelled | timed_out``
with its job, ``stopped`` when its job was requeued (preemption, reclaim),
or ``lost`` when its node lost it.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """A job's life: queued → admitted → running → a final state."""

    QUEUED = "queued"
    ADMITTED = "admitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    PENDING_APPROVAL = "pending_approval"  # waits for an approver's yes (approval policy or budget)
    DENIED = "denied"  # an approver said no: final, the reason says why

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT,
                          JobState.DENIED})
LIVE_STATES = frozenset({JobState.ADMITTED, JobState.RUNNING})


class AttemptState(StrEnum):
    """One attempt: admitted → running → how it ended."""

    ADMITTED = "admitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    STOPPED = "stopped"  # its job was requeued (preempted, reclaimed)
    LOST = "lost"  # its node lost it (lease expired, agent restarted without it, runtime lost it)

    @property
    def ended(self) -> bool:
        return self not in (AttemptState.ADMITTED, AttemptState.RUNNING)


class StopCause(StrEnum):
    """Why a job is being stopped (``jobs.stop_cause``), so no code reads it back out of a sentence."""

    CANCEL = "cancel"  # a user or operator cancelled it
    PREEMPT = "preempt"  # a higher-ranked job took its capacity
    RECLAIM = "reclaim"  # an operator forced capacity back (or a quota reclaim)
    TIME_LIMIT = "time_limit"  # its time limit ran out
    NODE_LOST = "node_lost"  # its node stopped heartbeating, or its agent came back without it
    FENCE = "fence"  # its agent lost contact with the service and stopped it
    SHUTDOWN = "shutdown"  # its agent is shutting down
    GANG = "gang"  # another member of its gang ended


class Actor(StrEnum):
    """Who may cause a transition (the table's last column)."""

    USER = "user"  # a member (or admin) acting on a job they may touch
    OPERATOR = "operator"  # an operator or admin action (audited separately)
    ADMITTER = "admitter"  # the admission cycle
    AGENT = "agent"  # a node agent's report
    SERVICE = "service"  # the service's own recovery (lease expiry, adoption)
    APPROVER = "approver"  # a project's approver or an admin deciding a pending job


class Event(StrEnum):
    """What happened to a job (``job_events.event``)."""

    SUBMIT = "submit"
    ADMIT = "admit"
    START = "start"
    FINISH = "finish"  # the attempt ended by itself: succeeded, failed, timed out
    CANCEL = "cancel"  # a job that never started is cancelled at once
    STOP = "stop"  # a stop was requested (cancel a running job, preempt, reclaim, gang)
    STOPPED = "stopped"  # a stopped attempt ended: the job is requeued or ends cancelled
    LOSE = "lose"  # the attempt was lost: requeued, or failed after max_retries
    HOLD = "hold"
    RELEASE = "release"
    IDLE = "idle"  # the job's GPUs sat idle (services.idle's rule): jobs.idle_since set, no state change
    ACTIVE = "active"  # busy again after an idle event: the flag cleared
    APPROVE = "approve"  # an approver let a pending job into the queue
    DENY = "deny"  # an approver refused it: final
    EXPIRE = "expire"  # an approval ran out before the job was first admitted: it waits for approval again
