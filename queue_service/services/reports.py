"""What agents report: a start claim, an exit, log output. Every report is fenced by attempt."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from queue_service.billing import ledger
from queue_service.db.base import utcnow
from queue_service.db.models import FINAL_STATES, Allocation, Attempt, Job, JobState, LogChunk, Node
from queue_service.errors import Conflict, NotFound, StaleAttempt
from queue_service.services.jobs import release_allocations
from workers.messages import StopRequest


@dataclass(slots=True)
class ExitOutcome:
    job: Job
    finalized: bool  # the attempt is over and its allocation was freed (the job is final, or requeued)
    stops: list[StopRequest] = field(default_factory=list)  # other gang members to stop
    requeued: bool = False  # the attempt was lost by the infrastructure and the job queued again


def _fenced(session: Session, *, job_id: str, attempt: int, node_name: str, replica: int) -> tuple[Job, Attempt]:
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    if attempt != job.attempt:
        raise StaleAttempt(f"attempt {attempt} of job {job_id} is stale (current attempt: {job.attempt})")
    if job.state == JobState.QUEUED:  # requeued: no attempt is current until the next admission
        raise StaleAttempt(f"attempt {attempt} of job {job_id} is over; the job is queued again")
    row = session.scalar(select(Attempt).where(Attempt.job_id == job_id, Attempt.number == attempt))
    if row is None:
        raise StaleAttempt(f"job {job_id} has no attempt {attempt}")
    if row.ended_at is not None and str(replica) not in (row.exits or {}):
        raise StaleAttempt(f"attempt {attempt} of job {job_id} has ended ({row.reason or row.state})")
    on_node = session.scalar(
        select(func.count())
        .select_from(Allocation)
        .join(Node, Node.id == Allocation.node_id)
        .where(Allocation.job_id == job_id, Allocation.attempt == attempt, Allocation.replica == replica)
        .where(Node.name == node_name)
    )
    if not on_node:
        raise StaleAttempt(f"replica {replica} of job {job_id} attempt {attempt} is not allocated on {node_name}")
    return job, row


def claim_start(session: Session, *, job_id: str, attempt: int, node_name: str, replica: int = 0) -> Job:
    """The agent asks to start; refused (Conflict) unless the attempt is still wanted."""
    job, row = _fenced(session, job_id=job_id, attempt=attempt, node_name=node_name, replica=replica)
    if JobState(job.state) in FINAL_STATES or job.cancel_requested:
        raise Conflict(f"job {job_id} is {job.state}; not starting it")
    if str(replica) in (row.exits or {}):
        raise Conflict(f"replica {replica} of job {job_id} attempt {attempt} has already ended")
    now = utcnow()
    if job.state == JobState.ADMITTED:
        job.state = JobState.RUNNING
        job.started_at = now
        job.reason = ""
    if row.started_at is None:
        row.started_at = now
        row.state = JobState.RUNNING
    # Billing starts here, in this transaction: a job that never starts costs nothing.
    ledger.open_intervals(session, job=job, attempt=attempt, replica=replica)
    return job


def _final_state(job: Job, exits: dict[str, dict]) -> tuple[JobState, str, int | None]:
    failed = [(int(r), e) for r, e in exits.items() if e["reason"] != "exited" or e["exit_code"] != 0]
    first = min(failed, key=lambda t: t[0])[1] if failed else None
    code = first["exit_code"] if first else 0
    if job.cancel_requested:
        return JobState.CANCELLED, job.reason.replace("; stopping", "") or "cancelled", code
    if first is None:
        return JobState.SUCCEEDED, "", 0
    reason, message = first["reason"], first.get("message") or ""
    if reason == "timed_out":
        return JobState.TIMED_OUT, f"time limit of {job.time_limit_s} s reached", code
    if reason == "oom_killed":
        return JobState.FAILED, f"killed: out of memory (limit {job.memory_mib} MiB)", code
    if reason == "start_failed":
        return JobState.FAILED, f"could not start: {message}", code
    if reason == "lost":
        return JobState.FAILED, f"lost by its node: {message}", code
    if reason == "stopped":
        return JobState.FAILED, f"stopped: {message}", code
    return JobState.FAILED, f"exited with code {code}", code


def report_exit(
    session: Session,
    *,
    job_id: str,
    attempt: int,
    node_name: str,
    replica: int = 0,
    exit_code: int | None,
    reason: str,
    message: str = "",
    grace_s: float = 10.0,
    max_retries: int = 3,
) -> ExitOutcome:
    """Record one replica's end; when the attempt is over, finish the job and free it at once.

    An attempt whose replica was ``lost`` (its container vanished, the Docker
    engine restarted under it, its agent lost contact with the service) is
    not the job's fault: the job is requeued, at most ``max_retries`` times.
    """
    job, row = _fenced(session, job_id=job_id, attempt=attempt, node_name=node_name, replica=replica)
    exits = dict(row.exits or {})
    if str(replica) in exits:  # a duplicate report (at-least-once delivery): nothing new
        return ExitOutcome(job, finalized=JobState(job.state) in FINAL_STATES)
    exits[str(replica)] = {"exit_code": exit_code, "reason": reason, "message": message[:2000]}
    row.exits = exits
    failed = reason != "exited" or exit_code != 0
    stops: list[StopRequest] = []
    if len(exits) < job.replicas and not failed:
        return ExitOutcome(job, finalized=False)
    if len(exits) < job.replicas:
        # A gang member failed: stop the others; the job ends when they report.
        nodes = session.execute(
            select(Allocation.replica, Node.name)
            .join(Node, Node.id == Allocation.node_id)
            .where(Allocation.job_id == job_id, Allocation.attempt == attempt)
        ).all()
        for other, other_node in sorted(set(nodes)):
            if str(other) not in exits:
                stops.append(StopRequest(job_id, attempt, other_node, grace_s, "gang member failed", other))
        if JobState(job.state) not in FINAL_STATES:
            job.reason = f"replica {replica} ended ({reason}, code {exit_code}); stopping the others"
        return ExitOutcome(job, finalized=False, stops=stops)
    lost = [e.get("message") or "lost" for _r, e in sorted(exits.items()) if e["reason"] == "lost"]
    if lost and JobState(job.state) not in FINAL_STATES:
        from queue_service.recovery import lose_attempt

        state, stops = lose_attempt(session, job=job, reason=f"lost on {node_name}: {lost[0]}",
                                    max_retries=max_retries, grace_s=grace_s)
        return ExitOutcome(job, finalized=True, requeued=state == JobState.QUEUED)
    now = utcnow()
    if job.stop_action == "requeue" and JobState(job.state) not in FINAL_STATES:
        # Preempted or reclaimed with requeue: back in the queue at its original position
        # (it keeps its submit time); the next admission makes attempt n + 1.
        row.ended_at, row.state, row.reason = now, "stopped", job.reason
        release_allocations(session, job_id=job_id, attempt=attempt)
        job.state = JobState.QUEUED
        job.reason = "requeued: " + job.reason.split("; stopping")[0]
        job.stop_action = job.stop_requested_at = job.stop_grace_s = None
        return ExitOutcome(job, finalized=True, requeued=True)
    if JobState(job.state) not in FINAL_STATES:
        state, why, code = _final_state(job, exits)
        job.state, job.reason, job.exit_code, job.finished_at = state, why, code, now
    row.ended_at, row.state, row.exit_code = now, job.state, job.exit_code
    row.reason = job.reason
    release_allocations(session, job_id=job_id, attempt=attempt)
    return ExitOutcome(job, finalized=True)


def append_logs(
    session: Session, *, job_id: str, attempt: int, stream: str, offset: int, data: bytes, max_bytes: int,
    node_name: str | None = None, replica: int = 0,
) -> int:
    """Store output at a byte offset, idempotently (resent chunks are trimmed); returns the new end.

    With ``node_name``, only the node that holds that attempt's replica may write its output.
    """
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    if attempt > job.attempt or attempt < 1:
        raise StaleAttempt(f"job {job_id} has no attempt {attempt}")
    if node_name is not None and not session.scalar(
        select(func.count())
        .select_from(Allocation)
        .join(Node, Node.id == Allocation.node_id)
        .where(Allocation.job_id == job_id, Allocation.attempt == attempt, Allocation.replica == replica)
        .where(Node.name == node_name)
    ):
        raise StaleAttempt(f"replica {replica} of job {job_id} attempt {attempt} is not allocated on {node_name}")
    end = session.scalar(
        select(func.max(LogChunk.offset + func.length(LogChunk.data))).where(
            LogChunk.job_id == job_id, LogChunk.attempt == attempt, LogChunk.stream == stream
        )
    ) or 0
    if offset + len(data) <= end:
        return end
    if offset < end:
        data, offset = data[end - offset :], end
    if offset >= max_bytes:
        return end
    data = data[: max_bytes - offset]
    session.add(LogChunk(job_id=job_id, attempt=attempt, stream=stream, offset=offset, data=data))
    return offset + len(data)
