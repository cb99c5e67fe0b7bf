"""The database's clock: the one "now" that every replica, the admitter and the ledger agree on.

Tests that need months to pass (a budget that renews on the 1st, an approval
that expires) set the clock with :func:`frozen_at`: while the block runs,
``db_now`` answers that moment on every backend. Production never calls it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import cast

from sqlalchemy import text
from sqlalchemy.orm import Session

from queue_service.db.base import utcnow

_frozen: list[datetime] = []  # a stack: the innermost ``frozen_at`` wins


def db_now(session: Session) -> datetime:
    """Naive UTC "now" by the database's clock (PostgreSQL); the service's clock on SQLite (one host)."""
    if _frozen:
        return _frozen[-1]
    if session.get_bind().dialect.name == "postgresql":
        return cast(datetime, session.scalar(text("SELECT clock_timestamp() AT TIME ZONE 'UTC'")))
    return utcnow()


@contextmanager
def frozen_at(at: datetime) -> Iterator[None]:
    """Tests only: ``db_now`` answers ``at`` (naive UTC) until the block ends."""
    _frozen.append(at)
    try:
        yield
    finally:
        _frozen.pop()
