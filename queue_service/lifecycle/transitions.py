"""The writers of job, attempt and allocation state: one function per transition of ``table.TABLE``.

Each function checks the table first (an illegal move raises
``IllegalTransition`` before anything is written), then writes the job, its
attempt and its allocations, appends one event (``events.record``) and
queues what must happen after the commit (``effects.queue``). The caller
holds the job row (``FOR UPDATE`` on PostgreSQL) and commits; nothing here
commits, sends or sleeps.

Why a job is stopping is ``jobs.stop_cause`` (a ``StopCause``) and what it
ends as is ``jobs.stop_action`` (``requeue`` or ``cancel``); ``jobs.reason``
is only ever the words a person reads, never read back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from queue_service.billing import ledger
from queue_service.db.base import new_id
from queue_service.db.clock import db_now
from queue_service.db.models import Allocation, Attempt, Job, JobEvent, Node
from queue_service.errors import Conflict, NotFound, StaleAttempt
from queue_service.lifecycle import allocations, effects, events
from queue_service.lifecycle.states import Actor, AttemptState, Event, JobState, StopCause
from queue_service.lifecycle.stops import stop_requests
from queue_service.lifecycle.table import IllegalTransition, check
from workers.messages import StopRequest

log = logging.getLogger(__name__)

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


def _move(session: Session, job: Job, event: Event, target: JobState, who: Who, *, at: datetime,
          reason: str = "", cause: StopCause | None = None) -> None:
    """Check the table, then set the state and append the event: the only assignment of ``jobs.state``."""
    source = JobState(job.state) if job.state is not None else None
    check(event, source, target, who.kind, job_id=job.id or "")
    job.state = target
    events.record(session, job=job, event=event, source=source, target=target, actor=who.label, at=at,
                  reason=reason, cause=cause)


def _attempt(session: Session, job: Job, number: int | None = None) -> Attempt | None:
    return session.scalar(select(Attempt).where(Attempt.job_id == job.id,
                                                Attempt.number == (job.attempt if number is None else number)))


def _end_attempt(row: Attempt | None, state: AttemptState, *, at: datetime, reason: str,
                 exit_code: int | None = None) -> None:
    if row is not None and row.ended_at is None:
        row.ended_at, row.state, row.reason, row.exit_code = at, state, reason[:2000], exit_code


def _clear_stop(job: Job) -> None:
    job.stop_action = job.stop_requested_at = job.stop_grace_s = job.stop_cause = None
    job.cancel_requested = False
    job.stop_reason = ""


# -- submit, hold, release ---------------------------------------------------------------------------------------


def submit(session: Session, *, job: Job, who: Who, at: datetime | None = None, flush: bool = True) -> Job:
    """Queue a validated new job (``job`` built by the caller, without a state)."""
    at = at or db_now(session)
    job.id = job.id or new_id()
    job.attempt = 0
    job.state = None  # type: ignore[assignment]  # new: the table's "(new)" source
    job.submitted_at = job.submitted_at or at
    _move(session, job, Event.SUBMIT, JobState.QUEUED, who, at=at)
    job.reason = "waiting for the next admission cycle"
    session.add(job)
    effects.queue(session, wake=True)
    if flush:  # a batch leaves it to the commit: one multi-row INSERT for all its jobs
        session.flush()
    return job


def hold(session: Session, *, job: Job, who: Who, reason: str = "") -> Job:
    """Hold a queued job: the admitter skips it until it is released."""
    _move(session, job, Event.HOLD, JobState.QUEUED, who, at=db_now(session), reason=reason)
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
    _move(session, job, Event.RELEASE, JobState.QUEUED, who, at=db_now(session), reason=reason)
    job.held = False
    job.reason = "released; waiting for the next cycle"
    effects.queue(session, wake=True)
    return job


# -- admission ---------------------------------------------------------------------------------------------------

ALLOCATION_COLUMNS = ("id", "job_id", "attempt", "replica", "node_id", "kind", "gpu_uuid", "slot", "blocks",
                      "gpu_memory_mib", "mig_profile", "mig_start", "mig_uuid", "cpus_milli", "memory_mib",
                      "created_at")


@dataclass(frozen=True, slots=True)
class ReplicaRows:
    """What one admitted gang member holds: its node and allocation rows (the launch spec reads them)."""

    replica: int
    node_id: str
    rows: list[Allocation]


@dataclass(frozen=True, slots=True)
class Admitted:
    """One job the admission claimed: its new attempt number and each member's rows."""

    job: Job
    attempt: int
    replicas: list[ReplicaRows] = field(default_factory=list)


def admit(session: Session, *, placements: Sequence[tuple[Job, list[ReplicaRows]]], at: datetime) -> list[Admitted]:
    """queued → admitted for each job, in bulk: one conditional UPDATE, then attempts, allocations, events.

    The UPDATE only claims jobs still queued, so a cancel that committed since
    the snapshot wins; the partial unique index refuses a slice held twice
    (the caller's whole transaction rolls back).
    """
    if not placements:
        return []
    for job, _replicas in placements:
        check(Event.ADMIT, JobState(job.state), JobState.ADMITTED, Actor.ADMITTER, job_id=job.id)
    claimed: set[str] = set()
    ids = [job.id for job, _ in placements]
    for chunk in (ids[i:i + 500] for i in range(0, len(ids), 500)):
        claimed.update(session.scalars(
            update(Job)
            .where(Job.id.in_(chunk), Job.state == JobState.QUEUED)
            .values(state=JobState.ADMITTED, attempt=Job.attempt + 1, admitted_at=at, reason="starting")
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        ).all())
    attempts: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    out: list[Admitted] = []
    for job, replicas in placements:
        if job.id not in claimed:
            continue
        number = job.attempt + 1
        # The UPDATE bypassed the ORM: bring the loaded object up to date without another SELECT.
        job.state, job.attempt, job.admitted_at, job.reason = JobState.ADMITTED, number, at, "starting"
        attempts.append({"id": new_id(), "job_id": job.id, "number": number, "created_at": at,
                         "node_id": replicas[0].node_id if replicas else None, "launch_sent_at": at,
                         "exits": {}, "state": AttemptState.ADMITTED, "reason": ""})
        for member in replicas:
            for row in member.rows:
                row.id, row.job_id, row.attempt, row.created_at = row.id or new_id(), job.id, number, at
                rows.append({c: getattr(row, c) for c in ALLOCATION_COLUMNS})
        event_rows.append({"job_id": job.id, "attempt": number, "at": at, "event": Event.ADMIT.value,
                           "from_state": JobState.QUEUED.value, "to_state": JobState.ADMITTED.value,
                           "actor": ADMITTER.label, "cause": None, "reason": ""})
        out.append(Admitted(job, number, list(replicas)))
    if attempts:
        session.execute(insert(Attempt), attempts)
        session.execute(insert(Allocation), rows)
        session.execute(insert(JobEvent), event_rows)
    return out


def set_wait_reasons(jobs: Mapping[str, Job], reasons: Mapping[str, str]) -> None:
    """Why each job still waits, in words (``jobs.reason`` of queued jobs); unchanged ones are not rewritten."""
    for job_id, reason in reasons.items():
        job = jobs[job_id]
        if JobState(job.state) is JobState.QUEUED and job.reason != reason:
            job.reason = reason


# -- what agents report: fenced by attempt -----------------------------------------------------------------------


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
    row = _attempt(session, job, attempt)
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
        _move(session, job, Event.START, JobState.RUNNING, agent(node_name), at=now)
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
    reason: str, message: str = "", grace_s: float, max_retries: int,
) -> ExitOutcome:
    """Record one replica's end; when the attempt is over, end or requeue the job and free it at once.

    A replica ``lost`` by its node (its container vanished, the engine
    restarted under it, its agent lost contact) is not the job's fault: the
    attempt is lost (requeued, at most ``max_retries`` times). A failed gang
    member has the others stopped; the job ends when they report.
    """
    job, row = fenced(session, job_id=job_id, attempt=attempt, node_name=node_name, replica=replica)
    exits = dict(row.exits or {})
    if str(replica) in exits:  # a duplicate report (at-least-once delivery): nothing new
        return ExitOutcome(job, finalized=JobState(job.state).final)
    state = JobState(job.state)
    if state.final:
        raise IllegalTransition(f"job {job_id} is {state.value}; its exit cannot change that",
                                state=state, event=Event.FINISH)
    exits[str(replica)] = {"exit_code": exit_code, "reason": reason, "message": message[:2000]}
    row.exits = exits
    failed = reason != "exited" or exit_code != 0
    now = db_now(session)
    who = agent(node_name)
    if len(exits) < job.replicas:
        if failed:
            _stop_gang(session, job, who, replica=replica, reason=reason, exit_code=exit_code, grace_s=grace_s,
                       ended=[int(r) for r in exits], at=now)
        return ExitOutcome(job, finalized=False)
    lost = [e.get("message") or "lost" for _r, e in sorted(exits.items()) if e["reason"] == "lost"]
    if lost:
        target = lose_attempt(session, job=job, reason=f"lost on {node_name}: {lost[0]}", who=who,
                              max_retries=max_retries, grace_s=grace_s, at=now)
        return ExitOutcome(job, finalized=True, requeued=target is JobState.QUEUED)
    if job.stop_action == REQUEUE:
        # Preempted or reclaimed with requeue: back in the queue at its original position
        # (it keeps its submit time); the next admission makes attempt n + 1.
        words = job.stop_reason or "stopped"
        _move(session, job, Event.STOPPED, JobState.QUEUED, who, at=now, reason=words,
              cause=StopCause(job.stop_cause) if job.stop_cause else None)
        _end_attempt(row, AttemptState.STOPPED, at=now, reason=words)
        allocations.release(session, job_id=job_id, attempt=attempt, at=now)
        job.reason = f"requeued: {words}"
        _clear_stop(job)
        effects.queue(session, wake=True)
        return ExitOutcome(job, finalized=True, requeued=True)
    first_code = next((e["exit_code"] for _r, e in sorted(exits.items(), key=lambda t: int(t[0]))
                       if e["reason"] != "exited" or e["exit_code"] != 0), 0)
    if job.stop_action == CANCEL:
        words = job.stop_reason or "cancelled"
        _move(session, job, Event.STOPPED, JobState.CANCELLED, who, at=now, reason=words,
              cause=StopCause(job.stop_cause) if job.stop_cause else StopCause.CANCEL)
        target, code = JobState.CANCELLED, first_code
    else:
        target, words, code = _final_state(job, exits)
        cause = StopCause.TIME_LIMIT if target is JobState.TIMED_OUT else (
            StopCause(job.stop_cause) if job.stop_cause else None)
        _move(session, job, Event.FINISH, target, who, at=now, reason=words, cause=cause)
    job.reason, job.exit_code, job.finished_at = words, code, now
    _end_attempt(row, _ENDED_AS[target], at=now, reason=words, exit_code=code)
    allocations.release(session, job_id=job_id, attempt=attempt, at=now)
    effects.queue(session, wake=True)  # the capacity is free now: admit the next job at once
    return ExitOutcome(job, finalized=True)


def _stop_gang(session: Session, job: Job, who: Who, *, replica: int, reason: str, exit_code: int | None,
               grace_s: float, ended: list[int], at: datetime) -> None:
    """A gang member failed: stop the others (the job ends when they report)."""
    words = f"replica {replica} ended ({reason}, code {exit_code}); stopping the others"
    stops = stop_requests(session, job=job, grace_s=grace_s, reason="gang member failed", skip_replicas=ended,
                          live_only=False)
    if job.stop_cause is None:
        _move(session, job, Event.STOP, JobState.RUNNING, who, at=at, reason=words, cause=StopCause.GANG)
        job.stop_cause, job.stop_requested_at, job.stop_grace_s = StopCause.GANG, at, grace_s
    job.reason = words
    effects.queue(session, stops=stops)


# -- stopping: cancel, preempt, reclaim ---------------------------------------------------------------------------


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
    _move(session, job, Event.CANCEL, JobState.CANCELLED, who, at=now, reason=words, cause=StopCause.CANCEL)
    job.reason, job.finished_at = words, now
    if state is JobState.ADMITTED:
        # Not started: the agent's start claim will be refused, so free it now.
        allocations.release(session, job_id=job.id, at=now)
        _end_attempt(_attempt(session, job), AttemptState.CANCELLED, at=now, reason="cancelled before start")
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
        _move(session, job, Event.STOPPED, target, who, at=now, reason=reason, cause=cause)
        allocations.release(session, job_id=job.id, attempt=job.attempt, at=now)
        _end_attempt(_attempt(session, job), AttemptState.STOPPED, at=now, reason=reason)
        if requeue:
            job.reason = f"requeued: {reason}"
        else:
            job.reason, job.finished_at = reason, now
        effects.queue(session, stops=stops, wake=True)
        return job
    if job.stop_action is not None and (requeue or job.stop_action == CANCEL):
        return job  # already stopping (its first stop stands; the reconciler re-sends it)
    # Not stopping yet, or stopping to be requeued and now cancelled: the cancel wins.
    _move(session, job, Event.STOP, JobState.RUNNING, who, at=now, reason=reason, cause=cause)
    job.stop_cause, job.stop_reason = cause, reason
    job.stop_action = REQUEUE if requeue else CANCEL
    job.stop_requested_at, job.stop_grace_s = now, grace_s
    job.cancel_requested = not requeue
    job.reason = f"{reason}; stopping (grace {grace_s:g} s)"
    row = _attempt(session, job)
    if row is not None:
        row.stop_sent_at = now
    effects.queue(session, stops=stops)
    return job


# -- lost attempts ----------------------------------------------------------------------------------------------


LOST = AttemptState.LOST.value  # attempts.state of an attempt its node lost


def lose_attempt(
    session: Session, *, job: Job, reason: str, who: Who, max_retries: int, grace_s: float,
    at: datetime | None = None,
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
    _end_attempt(_attempt(session, job, number), AttemptState.LOST, at=now, reason=reason)
    lost = session.scalar(
        select(func.count()).select_from(Attempt).where(Attempt.job_id == job.id, Attempt.state == LOST)
    ) or 0
    if job.stop_action == CANCEL:
        words = job.stop_reason or "cancelled"
        _move(session, job, Event.LOSE, JobState.CANCELLED, who, at=now, reason=reason, cause=StopCause.NODE_LOST)
        job.reason, job.finished_at = words, now
    elif lost > max_retries:
        _move(session, job, Event.LOSE, JobState.FAILED, who, at=now, reason=reason, cause=StopCause.NODE_LOST)
        job.finished_at = now
        job.reason = f"{reason}; not retried: {lost} attempts lost (max_retries={max_retries})"
    else:
        _move(session, job, Event.LOSE, JobState.QUEUED, who, at=now, reason=reason, cause=StopCause.NODE_LOST)
        job.reason = f"requeued: {reason} (retry {lost} of {max_retries})"
    _clear_stop(job)
    log.warning("job %s attempt %s lost (%s): now %s", job.id, number, reason, job.state)
    effects.queue(session, stops=stops, wake=True)
    return JobState(job.state)


def stop_leftovers(session: Session, *, job_id: str, attempt: int) -> None:
    """Free allocations of an attempt that is no longer current (should not happen; repaired quietly)."""
    allocations.release(session, job_id=job_id, attempt=attempt)


def resend_stops(session: Session, *, job: Job, grace_s: float) -> list[StopRequest]:
    """The stop requests of a job that is stopping, for the reconciler to send again."""
    return stop_requests(session, job=job, grace_s=grace_s, reason=job.stop_reason or "stopping")
