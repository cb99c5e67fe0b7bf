"""Operator controls (operator or admin): overrides, hold / release / top, reclaim, drain / cordon,
quotas, priority classes, and the append-only audit log (read only: no route edits or deletes it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query

from queue_service.api.deps import ContextDep, CurrentPrincipal, SessionDep
from queue_service.api.presenters import job_public
from queue_service.api.schemas.common import INT32_MAX
from queue_service.api.schemas.jobs import JobPublic
from queue_service.api.schemas.operator import (
    AuditPublic,
    AuditsPublic,
    PriorityClassPublic,
    PriorityClassUpdate,
    PriorityUpdate,
    QuotaPublic,
    QuotaUpdate,
    Reason,
    ReclaimCreate,
    ReclaimPublic,
)
from queue_service.db.models import Role
from queue_service.services import audit
from queue_service.services import classes as class_service
from queue_service.services import jobs as job_service
from queue_service.services import operator as ops
from queue_service.services import quotas as quota_service
from queue_service.settings import PriorityClass

router = APIRouter(tags=["operator"])
OPS = (Role.ADMIN, Role.OPERATOR)
CLASS_NAME = r"^[a-z0-9][a-z0-9_-]{0,31}$"  # the column holds 32 characters


def _job_public(session, principal, job_id: str) -> JobPublic:
    job, project = job_service.get_visible(session, job_id=job_id, principal=principal)
    return job_public(session, job=job, project=project, principal=principal)


@router.patch("/jobs/{job_id}", response_model=JobPublic)
def update_job(job_id: str, body: PriorityUpdate, principal: CurrentPrincipal, session: SessionDep,
               ctx: ContextDep) -> JobPublic:
    """Override the job's priority (``{"priority": N}``; null clears the override)."""
    principal.require(*OPS)
    ops.set_priority(session, job_id=job_id, priority=body.priority, actor=principal, reason=body.reason)
    return _job_public(session, principal, job_id)


def _job_action(action: str):
    def handler(job_id: str, principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep,
                body: Annotated[Reason | None, Body()] = None) -> JobPublic:
        principal.require(*OPS)
        reason = body.reason if body else ""
        if action == "top":
            ops.move_to_top(session, job_id=job_id, actor=principal, reason=reason)
        else:
            ops.set_held(session, job_id=job_id, held=action == "hold", actor=principal, reason=reason)
        return _job_public(session, principal, job_id)

    handler.__doc__ = {"hold": "Hold a queued job: the admitter skips it until released.",
                       "release": "Release a held job.", "top": "Move a queued job to the head of the queue."}[action]
    return handler


for _action in ("hold", "release", "top"):
    router.add_api_route(f"/jobs/{{job_id}}/{_action}", _job_action(_action), methods=["POST"],
                         response_model=JobPublic, name=f"job_{_action}")


@router.post("/reclaim", response_model=ReclaimPublic)
def reclaim(body: ReclaimCreate, principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> ReclaimPublic:
    """Force capacity back from a job, a project, a GPU or a node: SIGTERM, ``grace_s``, SIGKILL;
    requeued at their original position unless ``requeue`` is false. A reclaimed node is cordoned."""
    principal.require(*OPS)
    plan = ops.reclaim(session, kind=body.kind, target=body.target, grace_s=body.grace_s, requeue=body.requeue,
                       reason=body.reason, actor=principal, settings=ctx.settings)
    return ReclaimPublic(kind=body.kind, target=body.target, jobs=plan.jobs, grace_s=body.grace_s,
                         requeue=body.requeue)


def _node_action(action: str):
    def handler(name: str, principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep,
                body: Annotated[Reason | None, Body()] = None) -> dict:
        principal.require(*OPS)
        node = ops.set_node(session, name=name, action=action, actor=principal, reason=body.reason if body else "")
        return {"name": node.name, "status": node.status, "cordoned": node.cordoned}

    handler.__doc__ = {"drain": "No new work on the node; running jobs finish.",
                       "cordon": "No new work on the node.", "uncordon": "Undo drain and cordon."}[action]
    return handler


for _action in ("drain", "cordon", "uncordon"):
    router.add_api_route(f"/nodes/{{name}}/{_action}", _node_action(_action), methods=["POST"], tags=["nodes"],
                         name=f"node_{_action}")


@router.put("/projects/{name}/quota", response_model=QuotaPublic, tags=["projects"])
def set_quota(name: str, body: QuotaUpdate, principal: CurrentPrincipal, session: SessionDep,
              ctx: ContextDep) -> QuotaPublic:
    """Guaranteed capacity and borrowing limit in whole-GPU equivalents (a block is 0.01, 3g.40gb 3/7).
    Refused when the guarantees of all projects would exceed the cluster."""
    principal.require(*OPS)
    quota = quota_service.set_quota(session, project=name, guaranteed=body.guaranteed,
                                    borrow_limit=body.borrow_limit, actor=principal, reason=body.reason)
    in_use = quota_service.in_use(session).get(name, 0.0)
    return QuotaPublic(project=name, guaranteed=quota.guaranteed, borrow_limit=quota.borrow_limit, in_use=in_use)


@router.get("/quotas", response_model=list[QuotaPublic], tags=["projects"])
def list_quotas(principal: CurrentPrincipal, session: SessionDep) -> list[QuotaPublic]:
    """Quotas of the projects the caller can see, with what each holds now."""
    in_use = quota_service.in_use(session)
    grants = quota_service.grants(session)
    return [QuotaPublic(project=p, guaranteed=q.guaranteed, borrow_limit=q.borrow_limit, in_use=in_use.get(p, 0.0),
                        granted=sum(g.gpus for g in grants.get(p, [])),
                        granted_until=min((g.ends_at for g in grants.get(p, [])), default=None))
            for p, q in sorted(quota_service.all_quotas(session).items()) if principal.can_see_project(p)]


@router.get("/priority-classes", response_model=list[PriorityClassPublic], tags=["operator"])
def list_classes(principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> list[PriorityClassPublic]:
    classes = class_service.effective(session, settings=ctx.settings)
    ranked = sorted(classes.items(), key=lambda t: -t[1].value)
    return [PriorityClassPublic(name=n, **c.model_dump()) for n, c in ranked]


@router.put("/priority-classes/{name}", response_model=PriorityClassPublic, tags=["operator"])
def put_class(name: Annotated[str, Path(pattern=CLASS_NAME)], body: PriorityClassUpdate, principal: CurrentPrincipal,
              session: SessionDep,
              ctx: ContextDep) -> PriorityClassPublic:
    """Create or change a priority class (jobs of that class are re-ranked from the next cycle)."""
    principal.require(*OPS)
    allowed = body.allowed_projects
    if "allowed_projects" not in body.model_fields_set:  # left out: who may use it stays as it was
        before = class_service.effective(session, settings=ctx.settings).get(name)
        allowed = before.allowed_projects if before else None
    klass = PriorityClass(value=body.value, preemptible=body.preemptible, grace_s=body.grace_s,
                          default_time_limit_s=body.default_time_limit_s, max_time_limit_s=body.max_time_limit_s,
                          allowed_projects=allowed)
    class_service.put(session, name=name, klass=klass, settings=ctx.settings, actor=principal, reason=body.reason)
    return PriorityClassPublic(name=name, **klass.model_dump())


@router.get("/audit", response_model=AuditsPublic, tags=["operator"])
def audit_log(principal: CurrentPrincipal, session: SessionDep,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              before_id: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
              action: str | None = None, target: str | None = None) -> AuditsPublic:
    """The audit log, newest first (admins, operators and viewers)."""
    principal.require(Role.ADMIN, Role.OPERATOR, Role.VIEWER)
    rows, next_before_id = audit.page(session, limit=limit, before_id=before_id, action=action, target=target)
    data = [AuditPublic.model_validate(r, from_attributes=True) for r in rows]
    return AuditsPublic(data=data, count=len(data), next_before_id=next_before_id)
