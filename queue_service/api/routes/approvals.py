"""Saying no: approve or deny pending jobs, approval policies and budgets per project, capacity requests.

Who may: approving and denying — admins and the project's approver tokens
(``services.approvals``); policies and budgets — read by whoever sees the
project, set by admins; capacity — asked by the project's members (and
operators, admins), granted or refused by admins. Every decision is audited.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, status

from queue_service.api.deps import ContextDep, CurrentPrincipal, SessionDep
from queue_service.api.presenters import job_public
from queue_service.api.schemas.approvals import (
    ApproveCreate,
    BudgetPublic,
    BudgetUpdate,
    CapacityCreate,
    CapacityPublic,
    Decision,
    DenyCreate,
    PolicyPublic,
    PolicyUpdate,
)
from queue_service.api.schemas.jobs import JobPublic, JobsPublic
from queue_service.api.schemas.operator import Reason
from queue_service.db.approval_models import CapacityRequest
from queue_service.errors import NotFound
from queue_service.services import approvals
from queue_service.services import capacity as capacity_service
from queue_service.services import jobs as job_service

router = APIRouter(tags=["approvals"])
ProjectName = Annotated[str, Path(max_length=64)]


@router.post("/jobs/{job_id}/approve", response_model=JobPublic)
def approve_job(job_id: Annotated[str, Path(max_length=32)], principal: CurrentPrincipal, session: SessionDep,
                body: Annotated[ApproveCreate | None, Body()] = None) -> JobPublic:
    """Let a pending job into the queue (409 unless it is ``pending_approval``)."""
    body = body or ApproveCreate()
    job = approvals.approve(session, job_id=job_id, principal=principal, reason=body.reason,
                            expires_in_s=body.expires_in_s)
    return _job(session, principal, job.id)


@router.post("/jobs/{job_id}/deny", response_model=JobPublic)
def deny_job(job_id: Annotated[str, Path(max_length=32)], body: DenyCreate, principal: CurrentPrincipal,
             session: SessionDep) -> JobPublic:
    """Refuse a pending job: it ends ``denied`` with the reason (409 unless it is ``pending_approval``)."""
    job = approvals.deny(session, job_id=job_id, principal=principal, reason=body.reason)
    return _job(session, principal, job.id)


def _job(session, principal, job_id: str) -> JobPublic:
    job, project = job_service.get_visible(session, job_id=job_id, principal=principal)
    return job_public(session, job=job, project=project, principal=principal)


@router.get("/approvals", response_model=JobsPublic)
def pending_jobs(principal: CurrentPrincipal, session: SessionDep,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> JobsPublic:
    """Jobs waiting for a decision that the caller may see, oldest first."""
    rows = approvals.pending(session, principal=principal, limit=limit)
    data = [job_public(session, job=j, project=p, principal=principal) for j, p in rows]
    return JobsPublic(data=data, count=len(data))


def _visible(principal, project: str) -> None:
    if not principal.can_see_project(project):
        raise NotFound(f"project {project!r} not found")


@router.get("/projects/{project}/approval-policy", response_model=PolicyPublic, tags=["projects"])
def get_policy(project: ProjectName, principal: CurrentPrincipal, session: SessionDep) -> PolicyPublic:
    """The project's approval policy (all off: every job queues at once)."""
    _visible(principal, project)
    return PolicyPublic(project=project, **approvals.get_policy(session, project=project).public())


@router.put("/projects/{project}/approval-policy", response_model=PolicyPublic, tags=["projects"])
def put_policy(project: ProjectName, body: PolicyUpdate, principal: CurrentPrincipal, session: SessionDep,
               ctx: ContextDep) -> PolicyPublic:
    """Which of the project's jobs wait for an approver (admins; audited)."""
    policy = approvals.Policy(max_gpu_hours=body.max_gpu_hours, whole_node=body.whole_node,
                              workloads=tuple(body.workloads), self_approval=body.self_approval,
                              approval_ttl_s=body.approval_ttl_s)
    approvals.set_policy(session, project=project, policy=policy, actor=principal, settings=ctx.settings,
                         reason=body.reason)
    return PolicyPublic(project=project, **policy.public())


def _budget(session, project: str) -> BudgetPublic:
    row, standing = approvals.get_budget(session, project=project)
    if row is None or standing is None:
        return BudgetPublic(project=project, amount=None)
    return BudgetPublic(project=project, amount=row.amount, unit=row.unit, mode=row.mode, month=standing.month,
                        used=round(standing.used, 6), exhausted=standing.exhausted, summary=standing.words())


@router.get("/projects/{project}/budget", response_model=BudgetPublic, tags=["projects"])
def get_budget(project: ProjectName, principal: CurrentPrincipal, session: SessionDep) -> BudgetPublic:
    """The project's monthly budget and this month's use."""
    _visible(principal, project)
    return _budget(session, project)


@router.put("/projects/{project}/budget", response_model=BudgetPublic, tags=["projects"])
def put_budget(project: ProjectName, body: BudgetUpdate, principal: CurrentPrincipal,
               session: SessionDep) -> BudgetPublic:
    """Set the project's monthly budget (admins; audited): ``hard`` holds its jobs once spent, ``approval``
    sends a job that would overspend it to an approver."""
    approvals.set_budget(session, project=project, amount=body.amount, unit=body.unit, mode=body.mode,
                         actor=principal, reason=body.reason)
    return _budget(session, project)


@router.delete("/projects/{project}/budget", response_model=BudgetPublic, tags=["projects"])
def delete_budget(project: ProjectName, principal: CurrentPrincipal, session: SessionDep,
                  body: Annotated[Reason | None, Body()] = None) -> BudgetPublic:
    """Remove the project's budget (admins; audited)."""
    approvals.clear_budget(session, project=project, actor=principal, reason=body.reason if body else "")
    return _budget(session, project)


def _capacity(row: CapacityRequest, project: str) -> CapacityPublic:
    return CapacityPublic(project=project, **{k: getattr(row, k) for k in (
        "id", "gpus", "starts_at", "ends_at", "reason", "status", "requested_by", "created_at", "decided_by",
        "decided_at", "decision_reason")})


@router.post("/capacity-requests", status_code=status.HTTP_201_CREATED, response_model=CapacityPublic,
             tags=["projects"])
def request_capacity(body: CapacityCreate, principal: CurrentPrincipal, session: SessionDep) -> CapacityPublic:
    """Ask for more guarantee (``gpus``) for a period (``from`` .. ``until``); an admin grants or refuses it."""
    row = capacity_service.create(session, project=body.project, gpus=body.gpus, starts_at=body.starts_at,
                                  ends_at=body.ends_at, reason=body.reason, principal=principal)
    return _capacity(row, body.project)


@router.get("/capacity-requests", response_model=list[CapacityPublic], tags=["projects"])
def list_capacity(principal: CurrentPrincipal, session: SessionDep,
                  project: Annotated[str | None, Query(max_length=64)] = None) -> list[CapacityPublic]:
    """Capacity requests the caller may see, newest first."""
    return [_capacity(r, p) for r, p in capacity_service.list_visible(session, principal=principal, project=project)]


def _decide(action: str):
    def handler(request_id: Annotated[str, Path(max_length=32)], principal: CurrentPrincipal, session: SessionDep,
                body: Annotated[Decision | None, Body()] = None) -> CapacityPublic:
        reason = body.reason if body else ""
        decide = capacity_service.grant if action == "grant" else capacity_service.refuse
        row, project = decide(session, request_id=request_id, principal=principal, reason=reason)
        return _capacity(row, project)

    handler.__doc__ = {"grant": "Grant a pending capacity request (admins): a guarantee that ends by itself.",
                       "refuse": "Refuse a pending capacity request (admins), with a reason."}[action]
    return handler


for _action in ("grant", "refuse"):
    router.add_api_route(f"/capacity-requests/{{request_id}}/{_action}", _decide(_action), methods=["POST"],
                         response_model=CapacityPublic, tags=["projects"], name=f"capacity_{_action}")
