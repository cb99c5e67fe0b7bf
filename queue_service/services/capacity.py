"""Capacity requests: a project asks for more guarantee for a period; an admin grants or refuses it.

A member of the project (or an operator or admin) asks for ``gpus`` whole-GPU
equivalents on top of the project's guarantee, from ``starts_at`` until
``ends_at``. An admin grants it — from then on ``services.quotas`` adds it to
the project's guarantee while the period lasts, and it ends by itself — or
refuses it with a reason. Refused at the door (422 naming the field): a
period that ends in the past or before it starts, a start more than
``PAST_SLACK_S`` ago, more than the cluster has. Refused at grant (422,
``gpus``): when the guarantees in force over the period would add up to more
than the cluster. Asking and each decision are audit rows
(``capacity.request``, ``capacity.grant``, ``capacity.refuse``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.auth import Principal
from queue_service.db.approval_models import CapacityRequest
from queue_service.db.clock import db_now
from queue_service.db.models import Project, ProjectQuota, Role
from queue_service.errors import Conflict, InvalidRequest, NotFound
from queue_service.lifecycle import effects
from queue_service.services import audit, quotas
from queue_service.services import projects as project_service

PAST_SLACK_S = 300.0  # a start this far back is "now" (clocks and typing); further back is the past
PENDING, GRANTED, REFUSED = "pending", "granted", "refused"


def _after(row: CapacityRequest, project: str) -> dict[str, object]:
    return {"project": project, "gpus": row.gpus, "starts_at": row.starts_at.isoformat(),
            "ends_at": row.ends_at.isoformat(), "status": row.status}


def create(session: Session, *, project: str, gpus: float, starts_at: datetime | None, ends_at: datetime,
           reason: str, principal: Principal) -> CapacityRequest:
    """Ask for ``gpus`` more guarantee in ``[starts_at, ends_at)`` (``starts_at`` None: now)."""
    principal.require(Role.ADMIN, Role.OPERATOR, Role.MEMBER)
    if not principal.can_see_project(project):
        raise NotFound(f"project {project!r} not found", field="project")
    row_project = project_service.get_by_name(session, name=project)
    if row_project is None:
        raise InvalidRequest(f"unknown project {project!r}", field="project")
    now = db_now(session)
    start = starts_at or now
    if start < now - timedelta(seconds=PAST_SLACK_S):
        raise InvalidRequest(f"from ({start.isoformat()}Z) is in the past", field="from")
    if ends_at <= now:
        raise InvalidRequest(f"until ({ends_at.isoformat()}Z) is in the past", field="until")
    if ends_at <= start:
        raise InvalidRequest("until must be after from", field="until")
    capacity = quotas.cluster_capacity(session)
    if gpus <= 0:
        raise InvalidRequest("gpus must be above zero", field="gpus")
    if gpus > capacity + 1e-9:
        raise InvalidRequest(f"asks {gpus:g} GPU equivalents; the cluster has {capacity:g}", field="gpus")
    row = CapacityRequest(project_id=row_project.id, gpus=gpus, starts_at=max(start, now),
                          ends_at=ends_at, reason=reason, status=PENDING, requested_by=principal.label,
                          decision_reason="")
    session.add(row)
    session.flush()
    audit.record(session, actor=principal, action="capacity.request", target=row.id, reason=reason,
                 after=_after(row, project))
    return row


def _pending(session: Session, *, request_id: str, principal: Principal) -> tuple[CapacityRequest, str]:
    principal.require(Role.ADMIN)
    found = session.execute(
        select(CapacityRequest, Project.name).join(Project, Project.id == CapacityRequest.project_id)
        .where(CapacityRequest.id == request_id).with_for_update(of=CapacityRequest)
    ).first()
    if found is None:
        raise NotFound(f"capacity request {request_id} not found")
    row, project = found[0], found[1]
    if row.status != PENDING:
        raise Conflict(f"capacity request {request_id} is {row.status}; only pending requests can be decided",
                       field="status")
    return row, project


def _guaranteed_over(session: Session, *, start: datetime, end: datetime, exclude: str) -> float:
    """The most guarantee in force at any moment of ``[start, end)``: every project's own, plus the grants
    overlapping the period (counted as if all overlapped each other: a bound, never an under-count)."""
    own = sum(q.guaranteed for q in session.scalars(select(ProjectQuota)))
    grants = session.scalars(select(CapacityRequest.gpus).where(
        CapacityRequest.status == GRANTED, CapacityRequest.id != exclude,
        CapacityRequest.starts_at < end, CapacityRequest.ends_at > start))
    return own + sum(grants)


def grant(session: Session, *, request_id: str, principal: Principal,
          reason: str = "") -> tuple[CapacityRequest, str]:
    """Grant a pending request (admins): a guarantee for its period. 422 (``gpus``) if the cluster cannot hold
    the guarantees in force over the period with it; 409 if it is not pending."""
    row, project = _pending(session, request_id=request_id, principal=principal)
    capacity = quotas.cluster_capacity(session)
    total = _guaranteed_over(session, start=row.starts_at, end=row.ends_at, exclude=row.id) + row.gpus
    if total > capacity + 1e-9:
        raise InvalidRequest(f"guarantees over the period would add up to {total:g} GPU equivalents; the "
                             f"cluster has {capacity:g}", field="gpus")
    before = _after(row, project)
    row.status, row.decided_by, row.decided_at, row.decision_reason = GRANTED, principal.label, db_now(session), reason
    audit.record(session, actor=principal, action="capacity.grant", target=row.id, reason=reason, before=before,
                 after=_after(row, project))
    effects.queue(session, wake=True)  # a grant in force now may admit or reclaim at once
    return row, project


def refuse(session: Session, *, request_id: str, principal: Principal, reason: str) -> tuple[CapacityRequest, str]:
    """Refuse a pending request (admins), saying why; final. Returns it with its project's name."""
    if not reason.strip():
        raise InvalidRequest("a refusal says why: give a reason", field="reason")
    row, project = _pending(session, request_id=request_id, principal=principal)
    before = _after(row, project)
    row.status, row.decided_by, row.decided_at, row.decision_reason = REFUSED, principal.label, db_now(session), reason
    audit.record(session, actor=principal, action="capacity.refuse", target=row.id, reason=reason, before=before,
                 after=_after(row, project))
    return row, project


def list_visible(session: Session, *, principal: Principal, project: str | None = None,
                 limit: int = 200) -> list[tuple[CapacityRequest, str]]:
    """Requests the caller may see, newest first."""
    query = select(CapacityRequest, Project.name).join(Project, Project.id == CapacityRequest.project_id)
    if project is not None:
        query = query.where(Project.name == project)
    if not principal.sees_all_projects:
        query = query.where(Project.name.in_(sorted(principal.projects)))
    rows = session.execute(query.order_by(CapacityRequest.created_at.desc(), CapacityRequest.id).limit(limit)).all()
    return [(r[0], r[1]) for r in rows]
