"""Reading priority classes: the configured ones, overridden by those operators set over the API."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.db.models import PriorityClassRow
from queue_service.settings import PriorityClass, Settings


def effective(session: Session, *, settings: Settings) -> dict[str, PriorityClass]:
    """Name -> class: settings first, database rows win."""
    classes = dict(settings.priority_classes)
    for row in session.scalars(select(PriorityClassRow)):
        classes[row.name] = PriorityClass(value=row.value, preemptible=row.preemptible, grace_s=row.grace_s,
                                          default_time_limit_s=row.default_time_limit_s,
                                          max_time_limit_s=row.max_time_limit_s,
                                          allowed_projects=row.allowed_projects)
    return classes
