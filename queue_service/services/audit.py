"""The append-only audit log: one row per operator or admin action."""

from __future__ import annotations

from typing import Any

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
