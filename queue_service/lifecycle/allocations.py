"""Releasing allocations: the one place ``allocations.released_at`` is written.

The usage ledger's intervals close in the same transaction as the release,
so the bill can never drift from what was held.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.billing import ledger
from queue_service.db.clock import db_now
from queue_service.db.models import Allocation


def release(session: Session, *, job_id: str, attempt: int | None = None, at: datetime | None = None) -> int:
    """Mark the job's live allocations (of ``attempt``, or any) released; returns how many were live."""
    query = select(Allocation).where(Allocation.job_id == job_id, Allocation.released_at.is_(None))
    if attempt is not None:
        query = query.where(Allocation.attempt == attempt)
    now = at or db_now(session)
    rows = session.scalars(query).all()
    for row in rows:
        row.released_at = now
    ledger.close_intervals(session, allocation_ids=[row.id for row in rows])
    return len(rows)
