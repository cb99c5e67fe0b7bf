"""The database's clock: the one "now" that every replica, the admitter and the ledger agree on."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import text
from sqlalchemy.orm import Session

from queue_service.db.base import utcnow


def db_now(session: Session) -> datetime:
    """Naive UTC "now" by the database's clock (PostgreSQL); the service's clock on SQLite (one host)."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(datetime, session.scalar(text("SELECT clock_timestamp() AT TIME ZONE 'UTC'")))
    return utcnow()
