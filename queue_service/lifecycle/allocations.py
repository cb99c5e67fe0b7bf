"""Releasing allocations: the one place ``allocations.released_at`` is written.

The usage ledger's intervals close in the same transaction as the release,
so the bill can never drift from what was held.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from queue_service.billing import ledger
from queue_service.db.clock import db_now
from queue_service.db.models import Allocation
from queue_service.db.session import sync_held


def release(session: Session, *, job_id: str, attempt: int | None = None, at: datetime | None = None) -> int:
    """Mark the job's live allocations (of ``attempt``, or any) released; returns how many were live.

    One ``UPDATE .. RETURNING`` (every exit and requeue comes here); allocations this session holds are
    given the same ``released_at``.
    """
    now = at or db_now(session)
    which = [Allocation.job_id == job_id, Allocation.released_at.is_(None)]
    if attempt is not None:
        which.append(Allocation.attempt == attempt)
    ids = list(session.scalars(update(Allocation).where(*which).values(released_at=now).returning(Allocation.id)
                               .execution_options(synchronize_session=False)))
    sync_held(session, Allocation, "released_at", ((allocation_id, now) for allocation_id in ids))
    ledger.close_intervals(session, allocation_ids=ids, at=now)  # the same clock reading
    return len(ids)
