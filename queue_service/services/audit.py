"""The append-only audit log: one row per operator or admin action."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.auth import Principal
from queue_service.db.models import AuditEntry


def record(
    session: Session,
    *,
    actor: Principal | str,
    action: str,
    target: str,
    reason: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add one audit row in the caller's transaction (so it commits with the change it describes)."""
    entry = AuditEntry(
        actor=actor.label if isinstance(actor, Principal) else actor,
        action=action,
        target=target,
        reason=reason,
        before=before,
        after=after,
    )
    session.add(entry)
    return entry


def page(session: Session, *, limit: int, before_id: int | None = None, action: str | None = None,
         target: str | None = None) -> tuple[list[AuditEntry], int | None]:
    """Newest first, ``limit`` rows before ``before_id``; returns the rows and the next page's ``before_id``."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    if action:
        query = query.where(AuditEntry.action == action)
    if target:
        query = query.where(AuditEntry.target == target)
    rows = list(session.scalars(query))
    return rows[:limit], rows[limit - 1].id if len(rows) > limit else None
