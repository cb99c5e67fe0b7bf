"""The one fan-out that turns "stop this job's attempt" into stop requests, one per replica and node."""

from __future__ import annotations

from collections.abc import Container

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.db.models import Allocation, Job, Node
from workers.messages import StopRequest


def stop_requests(
    session: Session, *, job: Job, grace_s: float, reason: str, attempt: int | None = None,
    skip_replicas: Container[int] = (), live_only: bool = True,
) -> list[StopRequest]:
    """Stop requests for every replica of the attempt (default: the current one), in replica order.

    ``skip_replicas``: members that already ended (a gang stops only the
    others). ``live_only=False`` also reaches replicas whose allocations were
    released in this transaction (a job requeued the moment its node was lost).
    """
    number = job.attempt if attempt is None else attempt
    query = (
        select(Allocation.replica, Node.name).join(Node, Node.id == Allocation.node_id)
        .where(Allocation.job_id == job.id, Allocation.attempt == number)
    )
    if live_only:
        query = query.where(Allocation.released_at.is_(None))
    pairs = sorted({(r, n) for r, n in session.execute(query)})
    return [StopRequest(job.id, number, node_name, grace_s, reason, replica)
            for replica, node_name in pairs if replica not in skip_replicas]
