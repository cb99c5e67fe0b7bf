"""Priority classes: the configured ones, overridden by those operators set over the API."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.auth import Principal
from queue_service.db.base import utcnow
from queue_service.db.models import PriorityClassRow, Project
from queue_service.db.priority_classes import effective
from queue_service.errors import InvalidRequest
from queue_service.lifecycle import effects
from queue_service.services import audit
from queue_service.settings import PriorityClass, Settings

__all__ = ["effective", "put"]


def put(session: Session, *, name: str, klass: PriorityClass, settings: Settings, actor: Principal,
        reason: str = "") -> PriorityClass:
    """Create or change a class; audited with before and after. ``allowed_projects`` must name known projects."""
    if klass.allowed_projects:
        known = set(session.scalars(select(Project.name).where(Project.name.in_(klass.allowed_projects))))
        unknown = sorted(set(klass.allowed_projects) - known)
        if unknown:
            raise InvalidRequest(f"unknown project(s): {', '.join(unknown)}", field="allowed_projects")
    before = effective(session, settings=settings).get(name)
    row = session.get(PriorityClassRow, name)
    if row is None:
        row = PriorityClassRow(name=name)
        session.add(row)
    row.value, row.preemptible, row.grace_s, row.updated_at = klass.value, klass.preemptible, klass.grace_s, utcnow()
    row.default_time_limit_s, row.max_time_limit_s = klass.default_time_limit_s, klass.max_time_limit_s
    row.allowed_projects = None if klass.allowed_projects is None else sorted(set(klass.allowed_projects))
    audit.record(session, actor=actor, action="priority_class.set", target=name, reason=reason,
                 before=before.model_dump() if before else None, after=klass.model_dump())
    effects.queue(session, wake=True)  # jobs of that class are re-ranked from the next cycle
    return klass
