"""Priority classes: the configured ones, overridden by those operators set over the API."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.auth import Principal
from queue_service.db.base import utcnow
from queue_service.db.models import PriorityClassRow
from queue_service.services import audit
from queue_service.settings import PriorityClass, Settings


def effective(session: Session, *, settings: Settings) -> dict[str, PriorityClass]:
    """Name -> class: settings first, database rows win."""
    classes = dict(settings.priority_classes)
    for row in session.scalars(select(PriorityClassRow)):
        classes[row.name] = PriorityClass(value=row.value, preemptible=row.preemptible, grace_s=row.grace_s)
    return classes


def put(session: Session, *, name: str, klass: PriorityClass, settings: Settings, actor: Principal,
        reason: str = "") -> PriorityClass:
    """Create or change a class; audited with before and after."""
    before = effective(session, settings=settings).get(name)
    row = session.get(PriorityClassRow, name)
    if row is None:
        row = PriorityClassRow(name=name)
        session.add(row)
    row.value, row.preemptible, row.grace_s, row.updated_at = klass.value, klass.preemptible, klass.grace_s, utcnow()
    audit.record(session, actor=actor, action="priority_class.set", target=name, reason=reason,
                 before=before.model_dump() if before else None, after=klass.model_dump())
    return klass
