"""A job's grace period: how long it has between SIGTERM and SIGKILL. One rule, every path.

The grace is its priority class's ``grace_s`` — the operator's value from
the database when one was set (``gpuq class set NAME --grace S``), else the
configured class's — and ``Settings.default_grace_s`` only for a class that
no longer exists. Time limits (the launch spec), preemption, cancellation,
gang stops and lost attempts all read it here; a reclaim may name its own.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.orm import Session

from queue_service.db.priority_classes import effective
from queue_service.settings import PriorityClass, Settings


def of_class(classes: Mapping[str, PriorityClass], priority_class: str, *, default_s: float) -> float:
    """The rule itself: the class's grace, or ``default_s`` for an unknown class."""
    klass = classes.get(priority_class)
    return klass.grace_s if klass is not None else default_s


def grace_s(session: Session, *, settings: Settings, priority_class: str,
            classes: Mapping[str, PriorityClass] | None = None) -> float:
    """The grace of a job of ``priority_class`` now (pass ``classes`` to read them once per batch)."""
    classes = classes if classes is not None else effective(session, settings=settings)
    return of_class(classes, priority_class, default_s=settings.default_grace_s)
