"""What agents report, fenced by attempt: the start claim (admitted → running) and each replica's exit."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from queue_service.billing import ledger
from queue_service.db.clock import db_now
from queue_service.db.models import Allocation, Attempt, Job, Node
from queue_service.errors import Conflict, NotFound, StaleAttempt
from queue_service.lifecycle import allocations, effects
from queue_service.lifecycle.moves import CANCEL, REQUEUE, Who, agent, attempt_of, clear_stop, end_attempt, move
from queue_service.lifecycle.states import AttemptState, Event, JobState, StopCause
from queue_service.lifecycle.stopping import lose_attempt
from queue_service.lifecycle.stops import stop_requests
from queue_service.lifecycle.table import IllegalTransition


def fenced(session: Session, *, job_id: str, attempt: int, node_name: str, replica: int) -> tuple[Job, Attempt]:
    """The job and attempt a report is about, or ``StaleAttempt`` if it is not the current one on that node."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    state = job.state
    if attempt != job.attempt:
        raise StaleAttempt(f"attempt {attempt} of job {job_id} is stale (current attempt: {job.attempt})",
                           state=state)
    if job.state == JobState.QUEUED:  # requeued: no attempt is current until the next admission
        raise StaleAttempt(f"attempt {attempt} of job {job_id} is over; the job is queued again", state=state)
    row = attempt_of(session, job, attempt)
    if row is None:
        raise StaleAttempt(f"job {job_id} has no attempt {attempt}", state=state)
    if row.ended_at is not None and str(replica) not in (row.exits or {}):
        raise StaleAttempt(f"attempt {attempt} of job {job_id} has ended ({row.reason or row.state})", state=state)
    on_node = session.scalar(
        select(func.count()).select_from(Allocation).join(Node, Node.id == Allocation.node_id)
        .where(Allocation.job_id == job_id, Allocation.attempt == attempt, Allocation.replica == replica)
        .where(Node.name == node_name)
    )
    if not on_node:
        raise StaleAttempt(f"replica {replica} of job {job_id} attempt {attempt} is not allocated on {node_name}",
                           state=state)
    return job, row


def claim_start(session: Session, *, job_id: str, attempt: int, node_name: str, replica: int = 0) -> Job:
    """The agent asks to start a replica: admitted → running (the first replica), refused unless still wanted."""
    job, row = fenced(session, job_id=job_id, attempt=attempt, node_name=node_name, replica=replica)
    state = JobState(job.state)
    if state.final or job.cancel_requested:
        raise Conflict(f"job {job_id} is {job.state}; not starting it", state=state.value)
    if str(replica) in (row.exits or {}):
        raise Conflict(f"replica {replica} of job {job_id} attempt {attempt} has already ended", state=state.value)
    now = db_now(session)
    if state is JobState.ADMITTED:
        move(session, job, Event.START, JobState.RUNNING, agent(node_name), at=now)
        job.started_at = now
        job.reason = ""
    if row.started_at is None:
        row.started_at, row.state = now, AttemptState.RUNNING
    # Billing starts here, in this transaction: a job that never starts costs nothing.
    ledger.open_intervals(session, job=job, attempt=attempt, replica=replica, at=now)
    return job


@dataclass(slots=True)
class ExitOutcome:
    """What an exit report did."""

    job: Job
    finalized: bool  # the attempt is over and its allocation was freed (the job is final, or requeued)
    requeued: bool = False  # the job is queued again (preempted, reclaimed, or its attempt was lost)


_ENDED_AS = {JobState.SUCCEEDED: AttemptState.SUCCEEDED, JobState.FAILED: AttemptState.FAILED,
             JobState.CANCELLED: AttemptState.CANCELLED, JobState.TIMED_OUT: AttemptState.TIMED_OUT}


def _final_state(job: Job, exits: Mapping[str, Mapping[str, Any]]) -> tuple[JobState, str, int | None]:
    """How a finished attempt ends its job, from its replicas' exits (the first failing replica decides)."""
    failed = [(int(r), e) for r, e in exits.items() if e["reason"] != "exited" or e["exit_code"] != 0]
    first = min(failed, key=lambda t: t[0])[1] if failed else None
    if first is None:
        return JobState.SUCCEEDED, "", 0
    code = first["exit_code"]
    reason, message = first["reason"], first.get("message") or ""
    if reason == "timed_out":
        return JobState.TIMED_OUT, f"time limit of {job.time_limit_s} s reached", code
    if reason == "oom_killed":
        return JobState.FAILED, f"killed: out of memory (limit {job.memory_mib} MiB)", code
    if reason == "start_failed":
        return JobState.FAILED, f"could not start: {message}", code
    if reason == "stopped":
        return JobState.FAILED, f"stopped: {message}", code
    return JobState.FAILED, f"exited with code {code}", code


def record_exit(
    session: Session, *, job_id: str, attempt: int, node_name: str, replica: int = 0, exit_code: int | None,
    reason: str, message: str = "", grace_s: Callable[[Job], float], max_retries: int, cause: StopCause | None = None,
    node_fault: bool = False, backoff_s: float = 0.0, backoff_max_s: float = 0.0,
) -> ExitOutcome:
    """Record one replica's end; when the attempt is over, end or requeue the job and free it at once.

    A replica ``lost`` by its node (its container vanished, the engine
    restarted under it, its agent lost contact) is not the job's fault: the
    attempt is lost (requeued, at most ``max_retries`` times). A failed gang
    member has the others stopped; the job ends when they report. ``cause``:
    why the agent stopped it on its own (fence, shutdown, time limit), recorded on the event.
    ``node_fault``: the node failed to start it; the requeued job backs off and prefers other nodes (``back_off``).
    ``grace_s``: the job's grace period, asked only when this exit stops the gang or loses the attempt.
    """
    job, row = fenced(session, job_id=job_id, attempt=attempt, node_name=node_name, replica=replica)
    exits = dict(row.exits or {})
    if str(replica) in exits:  # a duplicate report (at-least-once delivery): nothing new
        return ExitOutcome(job, finalized=JobState(job.state).final)
    state = JobState(job.state)
    if state.final:
        raise IllegalTransition(f"job {job_id} is {state.value}; its exit cannot change that",
                                state=state, event=Event.FINISH)
    now = db_now(session)  # before the first change: its autoflush would write the attempt twice
    exits[str(replica)] = {"exit_code": exit_code, "reason": reason, "message": message[:2000]}
    row.exits = exits
    failed = reason != "exited" or exit_code != 0
    who = agent(node_name)
    if len(exits) < job.replicas:
        if failed:
            _stop_gang(session, job, who, replica=replica, reason=reason, exit_code=exit_code, grace_s=grace_s(job),
                       ended=[int(r) for r in exits], at=now)
        return ExitOutcome(job, finalized=False)
    lost = [e.get("message") or "lost" for _r, e in sorted(exits.items()) if e["reason"] == "lost"]
    if lost:
        target = lose_attempt(session, job=job, reason=f"lost on {node_name}: {lost[0]}", who=who,
                              max_retries=max_retries, grace_s=grace_s(job), at=now, cause=cause)
        if node_fault and target is JobState.QUEUED:
            back_off(session, job, node_name=node_name, base_s=backoff_s, max_s=backoff_max_s, at=now)
        return ExitOutcome(job, finalized=True, requeued=target is JobState.QUEUED)
    if job.stop_action == REQUEUE:
        # Preempted or reclaimed with requeue: back in the queue at its original position
        # (it keeps its submit time); the next admission makes attempt n + 1.
        words = job.stop_reason or "stopped"
        move(session, job, Event.STOPPED, JobState.QUEUED, who, at=now, reason=words,
              cause=StopCause(job.stop_cause) if job.stop_cause else None)
        end_attempt(row, AttemptState.STOPPED, at=now, reason=words)
        allocations.release(session, job_id=job_id, attempt=attempt, at=now)
        job.reason = f"requeued: {words}"
        clear_stop(job)
        effects.queue(session, wake=True)
        return ExitOutcome(job, finalized=True, requeued=True)
    first_code = next((e["exit_code"] for _r, e in sorted(exits.items(), key=lambda t: int(t[0]))
                       if e["reason"] != "exited" or e["exit_code"] != 0), 0)
    if job.stop_action == CANCEL:
        words = job.stop_reason or "cancelled"
        move(session, job, Event.STOPPED, JobState.CANCELLED, who, at=now, reason=words,
              cause=StopCause(job.stop_cause) if job.stop_cause else StopCause.CANCEL)
        target, code = JobState.CANCELLED, first_code
    else:
        target, words, code = _final_state(job, exits)
        cause = StopCause.TIME_LIMIT if target is JobState.TIMED_OUT else (
            StopCause(job.stop_cause) if job.stop_cause else cause)
        move(session, job, Event.FINISH, target, who, at=now, reason=words, cause=cause)
    job.reason, job.exit_code, job.finished_at = words, code, now
    end_attempt(row, _ENDED_AS[target], at=now, reason=words, exit_code=code)
    allocations.release(session, job_id=job_id, attempt=attempt, at=now)
    effects.queue(session, wake=True)  # the capacity is free now: admit the next job at once
    return ExitOutcome(job, finalized=True)


MAX_AVOIDED_NODES = 8  # the most recent nodes that failed a job's launch, which its placement avoids


def back_off(session: Session, job: Job, *, node_name: str, base_s: float, max_s: float, at: datetime) -> float:
    """A requeued job whose node failed its launch: its next try waits, and prefers other nodes. Returns the wait.

    The wait doubles with each attempt the job lost (``base_s``, ``2 base_s``, … at most ``max_s``), so a
    node that fails every launch cannot spend the job's retries in a second; the failing node joins
    ``avoid_nodes``, which placement treats as a soft preference (it falls back to them when nothing
    else fits). The admitter honours ``retry_not_before`` (``lifecycle.gates``).
    """
    lost = session.scalar(
        select(func.count()).select_from(Attempt).where(Attempt.job_id == job.id, Attempt.state == AttemptState.LOST)
    ) or 1
    wait_s = min(max_s, base_s * 2 ** max(0, lost - 1))
    job.retry_not_before = at + timedelta(seconds=wait_s)
    node_id = session.scalar(select(Node.id).where(Node.name == node_name))
    avoided = [n for n in (job.avoid_nodes or []) if n != node_id]
    if node_id is not None:
        avoided.append(node_id)
    job.avoid_nodes = avoided[-MAX_AVOIDED_NODES:]
    job.reason = f"{job.reason}; next try in {wait_s:g} s, preferring another node than {node_name}"
    return wait_s


def _stop_gang(session: Session, job: Job, who: Who, *, replica: int, reason: str, exit_code: int | None,
               grace_s: float, ended: list[int], at: datetime) -> None:
    """A gang member failed: stop the others (the job ends when they report)."""
    words = f"replica {replica} ended ({reason}, code {exit_code}); stopping the others"
    stops = stop_requests(session, job=job, grace_s=grace_s, reason="gang member failed", skip_replicas=ended,
                          live_only=False)
    if job.stop_cause is None:
        move(session, job, Event.STOP, JobState.RUNNING, who, at=at, reason=words, cause=StopCause.GANG)
        job.stop_cause, job.stop_requested_at, job.stop_grace_s = StopCause.GANG, at, grace_s
    job.reason = words
    effects.queue(session, stops=stops)
