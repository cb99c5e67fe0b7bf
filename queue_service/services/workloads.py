"""Workload classes: what a job declares it is (training, inference, ...), and the defaults that come with it.

The configured classes (``Settings.workload_classes``), overridden by those an admin sets over the API
(audited). :func:`apply` is the one place a submission meets its class: the priority class it gets when it
names none, whether that class must be preemptible, and its default and maximum time limit. Whether the class
may share a GPU is the coexistence rules' business (:mod:`queue_service.services.coexistence`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.auth import Principal
from queue_service.db.base import utcnow
from queue_service.db.governance_models import WorkloadClassRow
from queue_service.errors import InvalidRequest
from queue_service.lifecycle import effects
from queue_service.services import audit
from queue_service.settings import PriorityClass, Settings, WorkloadClass

__all__ = ["Applied", "apply", "effective", "put", "require"]


def effective(session: Session, *, settings: Settings) -> dict[str, WorkloadClass]:
    """Name -> class: settings first, database rows win."""
    classes = dict(settings.workload_classes)
    for row in session.scalars(select(WorkloadClassRow)):
        classes[row.name] = WorkloadClass(priority_class=row.priority_class, preemptible=row.preemptible,
                                          default_time_limit_s=row.default_time_limit_s,
                                          max_time_limit_s=row.max_time_limit_s, may_share_gpu=row.may_share_gpu)
    return classes


def require(name: str | None, *, classes: dict[str, WorkloadClass], settings: Settings) -> tuple[str, WorkloadClass]:
    """The job's workload class (its own, else the service's default); unknown: 422 naming ``workload``."""
    chosen = name or settings.default_workload
    klass = classes.get(chosen)
    if klass is None:
        known = ", ".join(sorted(classes))
        raise InvalidRequest(f"unknown workload class {chosen!r} (known: {known})", field="workload")
    return chosen, klass


@dataclass(frozen=True, slots=True)
class Applied:
    """What a workload class decided for one submission."""

    workload: str
    priority_class: str  # the job's own, else the class's, else the service's default
    time_limit_s: int | None  # asked, else the workload's default (the priority class's comes after)
    max_time_limit_s: int | None  # the workload's ceiling, checked after the priority class's default


def apply(workload: str | None, *, priority_class: str | None, time_limit_s: int | None,
          classes: dict[str, WorkloadClass], priority_classes: dict[str, PriorityClass],
          settings: Settings) -> Applied:
    """The workload class's defaults for one submission; 422 naming the field when the job contradicts it."""
    name, klass = require(workload, classes=classes, settings=settings)
    chosen = priority_class or klass.priority_class or settings.default_priority_class
    pclass = priority_classes.get(chosen)
    if pclass is not None and klass.preemptible is not None and pclass.preemptible != klass.preemptible:
        must = "a preemptible" if klass.preemptible else "a non-preemptible"
        raise InvalidRequest(f"workload {name!r} runs in {must} priority class; {chosen!r} is "
                             f"{'' if pclass.preemptible else 'not '}preemptible", field="priority_class")
    asked = time_limit_s if time_limit_s is not None else klass.default_time_limit_s
    if asked is not None and klass.max_time_limit_s is not None and asked > klass.max_time_limit_s:
        raise InvalidRequest(f"time_limit_s may be at most {klass.max_time_limit_s} for workload {name!r}",
                             field="time_limit_s")
    return Applied(workload=name, priority_class=chosen, time_limit_s=asked, max_time_limit_s=klass.max_time_limit_s)


def bounded(limit_s: int | None, applied: Applied) -> int | None:
    """The time limit once the priority class had its say: a job of a class with a ceiling never runs unbounded."""
    if applied.max_time_limit_s is None:
        return limit_s
    return applied.max_time_limit_s if limit_s is None else min(limit_s, applied.max_time_limit_s)


def put(session: Session, *, name: str, klass: WorkloadClass, settings: Settings, actor: Principal,
        priority_classes: dict[str, PriorityClass], reason: str = "") -> WorkloadClass:
    """Create or change a workload class; audited with before and after."""
    if klass.priority_class is not None and klass.priority_class not in priority_classes:
        raise InvalidRequest(f"unknown priority class {klass.priority_class!r} (known: "
                             f"{', '.join(sorted(priority_classes))})", field="priority_class")
    pclass = priority_classes.get(klass.priority_class or "")
    if pclass is not None and klass.preemptible is not None and pclass.preemptible != klass.preemptible:
        raise InvalidRequest(f"priority class {klass.priority_class!r} is {'' if pclass.preemptible else 'not '}"
                             f"preemptible; preemptible says otherwise", field="preemptible")
    low, high = klass.default_time_limit_s, klass.max_time_limit_s
    if low is not None and high is not None and low > high:
        raise InvalidRequest(f"default_time_limit_s {low} is above max_time_limit_s {high}",
                             field="default_time_limit_s")
    before = effective(session, settings=settings).get(name)
    row = session.get(WorkloadClassRow, name)
    if row is None:
        row = WorkloadClassRow(name=name)
        session.add(row)
    row.priority_class, row.preemptible = klass.priority_class, klass.preemptible
    row.may_share_gpu = klass.may_share_gpu
    row.default_time_limit_s, row.max_time_limit_s, row.updated_at = low, high, utcnow()
    audit.record(session, actor=actor, action="workload_class.set", target=name, reason=reason,
                 before=before.model_dump() if before else None, after=klass.model_dump())
    effects.queue(session, wake=True)  # coexistence of its waiting jobs is decided again in the next cycle
    return klass
