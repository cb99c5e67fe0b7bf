"""Workload classes: what a job declares it is (training, inference, ...), and the defaults that come with it.

The configured classes (``Settings.workload_classes``), overridden by those an admin sets over the API.
``apply`` is the one place a submission meets its class.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from queue_service.errors import InvalidRequest
from queue_service.settings import Settings, WorkloadClass


def effective(session: Session, *, settings: Settings) -> dict[str, WorkloadClass]:
    """Name -> class: settings first, database rows win."""
    del session  # rows set over the API come with the REST routes
    return dict(settings.workload_classes)


def require(name: str | None, *, classes: dict[str, WorkloadClass], settings: Settings) -> tuple[str, WorkloadClass]:
    """The job's workload class (its own, else the service's default); unknown: 422 naming ``workload``."""
    chosen = name or settings.default_workload
    klass = classes.get(chosen)
    if klass is None:
        known = ", ".join(sorted(classes))
        raise InvalidRequest(f"unknown workload class {chosen!r} (known: {known})", field="workload")
    return chosen, klass

