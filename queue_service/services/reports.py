"""What agents report: a start claim, an exit, log output. Every report is fenced by attempt.

The state changes are the lifecycle's (``lifecycle.transitions.claim_start``
and ``record_exit``); this module adds what the service knows around them:
the job's grace period and the retry bound.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from queue_service.db.models import Allocation, Job, LogChunk, Node
from queue_service.errors import NotFound, StaleAttempt
from queue_service.lifecycle import grace, transitions
from queue_service.lifecycle.states import StopCause
from queue_service.lifecycle.transitions import ExitOutcome
from queue_service.settings import Settings

__all__ = ["ExitOutcome", "append_logs", "claim_start", "report_exit"]


def claim_start(session: Session, *, job_id: str, attempt: int, node_name: str, replica: int = 0) -> Job:
    """The agent asks to start; refused (Conflict) unless the attempt is still wanted."""
    return transitions.claim_start(session, job_id=job_id, attempt=attempt, node_name=node_name, replica=replica)


def report_exit(
    session: Session, *, settings: Settings, job_id: str, attempt: int, node_name: str, replica: int = 0,
    exit_code: int | None, reason: str, message: str = "", stop_cause: str | None = None, node_fault: bool = False,
) -> ExitOutcome:
    """Record one replica's end (``lifecycle.transitions.record_exit``); ``stop_cause``: why its agent stopped it;
    ``node_fault``: the node failed to start it (the requeued job backs off and prefers other nodes)."""
    def grace_s(job: Job) -> float:  # read only when the exit stops a gang or loses the attempt, not every exit
        return grace.grace_s(session, settings=settings, priority_class=job.priority_class)

    return transitions.record_exit(
        session, job_id=job_id, attempt=attempt, node_name=node_name, replica=replica, exit_code=exit_code,
        reason=reason, message=message, grace_s=grace_s, max_retries=settings.max_retries,
        cause=StopCause(stop_cause) if stop_cause else None,
        node_fault=node_fault, backoff_s=settings.node_fault_backoff_s, backoff_max_s=settings.node_fault_backoff_max_s,
    )


def append_logs(
    session: Session, *, job_id: str, attempt: int, stream: str, offset: int, data: bytes, max_bytes: int,
    node_name: str | None = None, replica: int = 0,
) -> int:
    """Store output at a byte offset, idempotently (resent chunks are trimmed); returns the new end.

    With ``node_name``, only the node that holds that attempt's replica, while it still holds it, may
    write its output: an attempt that is over (the job finished, or was requeued) takes no more
    (StaleAttempt, 409). Agents ship an attempt's last output before they report its exit.
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
        .where(Node.name == node_name, Allocation.released_at.is_(None))
    ):
        raise StaleAttempt(f"replica {replica} of job {job_id} attempt {attempt} is not live on {node_name} "
                           f"(over, or allocated elsewhere)", state=job.state)
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
