"""The authority to say no: approval policies and budgets per project, and approving or denying pending jobs.

Who decides: admins, for every project; and *approver* member tokens (a
member token made with ``approver: true``) for the projects on the token.
Operators run the cluster but do not decide what a project may spend, and
a plain member may not decide at all. An approver may not approve or deny
a job their own token submitted unless the project's policy says
``self_approval: true`` (four eyes by default; a one-person project turns
it on).

A job needs approval (``needs_approval``) when its project's policy finds it
above a threshold — ``max_gpu_hours`` (GPU-equivalents × time limit, in
hours; a job with no time limit is unbounded, so above any threshold),
``whole_node`` (a replica asking for as many whole GPUs as the largest
registered node has), or a workload class listed in ``workloads`` — or when
it would take the project past an ``approval`` budget (``billing.budget``).
Every decision (policy or budget set, approve, deny) is an audit row; every
approve and deny is also the job's event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from queue_service.admission.units import request_equivalents
from queue_service.auth import Principal
from queue_service.billing import budget
from queue_service.db.approval_models import ApprovalPolicy, ProjectBudget
from queue_service.db.base import utcnow
from queue_service.db.clock import db_now
from queue_service.db.models import Gpu, Job, JobState, Project, Role
from queue_service.errors import Forbidden, InvalidRequest, NotFound
from queue_service.lifecycle import effects, transitions
from queue_service.lifecycle.states import Actor
from queue_service.services import audit
from queue_service.services import projects as project_service
from queue_service.services.convert import request_for
from queue_service.settings import Settings


@dataclass(frozen=True, slots=True)
class Policy:
    """A project's approval policy (all thresholds off: every job queues at once)."""

    max_gpu_hours: float | None = None
    whole_node: bool = False
    workloads: tuple[str, ...] = ()
    self_approval: bool = False
    approval_ttl_s: int | None = None

    def public(self) -> dict[str, object]:
        return {"max_gpu_hours": self.max_gpu_hours, "whole_node": self.whole_node,
                "workloads": list(self.workloads), "self_approval": self.self_approval,
                "approval_ttl_s": self.approval_ttl_s}


def _project(session: Session, name: str) -> Project:
    row = project_service.get_by_name(session, name=name)
    if row is None:
        raise InvalidRequest(f"unknown project {name!r}", field="project")
    return row


def policy_of(session: Session, *, project_id: str) -> Policy:
    row = session.get(ApprovalPolicy, project_id)
    if row is None:
        return Policy()
    return Policy(max_gpu_hours=row.max_gpu_hours, whole_node=row.whole_node, workloads=tuple(row.workloads or ()),
                  self_approval=row.self_approval, approval_ttl_s=row.approval_ttl_s)


def get_policy(session: Session, *, project: str) -> Policy:
    return policy_of(session, project_id=_project(session, project).id)


def set_policy(session: Session, *, project: str, policy: Policy, actor: Principal, settings: Settings,
               reason: str = "") -> Policy:
    """Set a project's approval policy (admins); audited with before and after."""
    actor.require(Role.ADMIN)
    row_project = _project(session, project)
    known = set(getattr(settings, "workload_classes", {}) or ())
    for index, name in enumerate(policy.workloads):
        if known and name not in known:
            raise InvalidRequest(f"unknown workload class {name!r} (known: {', '.join(sorted(known))})",
                                 field=f"workloads.{index}")
    before = policy_of(session, project_id=row_project.id)
    row = session.get(ApprovalPolicy, row_project.id)
    if row is None:
        row = ApprovalPolicy(project_id=row_project.id)
        session.add(row)
    row.max_gpu_hours, row.whole_node, row.workloads = policy.max_gpu_hours, policy.whole_node, list(policy.workloads)
    row.self_approval, row.approval_ttl_s = policy.self_approval, policy.approval_ttl_s
    row.updated_at, row.updated_by = utcnow(), actor.label
    session.info.pop(_RULES, None)
    audit.record(session, actor=actor, action="approval_policy.set", target=project, reason=reason,
                 before=before.public(), after=policy.public())
    return policy


# -- budgets -------------------------------------------------------------------------------------------------------

def get_budget(session: Session, *, project: str) -> tuple[ProjectBudget | None, budget.Standing | None]:
    row_project = _project(session, project)
    return session.get(ProjectBudget, row_project.id), budget.standing(session, project_id=row_project.id)


def set_budget(session: Session, *, project: str, amount: float, unit: str, mode: str, actor: Principal,
               reason: str = "") -> ProjectBudget:
    """Set a project's monthly budget (admins); audited. A negative amount or an unknown unit or mode: 422."""
    actor.require(Role.ADMIN)
    if amount < 0:
        raise InvalidRequest("amount may not be below zero", field="amount")
    if unit not in budget.UNITS:
        raise InvalidRequest(f"unit must be one of {', '.join(budget.UNITS)}", field="unit")
    if mode not in budget.MODES:
        raise InvalidRequest(f"mode must be one of {', '.join(budget.MODES)}", field="mode")
    row_project = _project(session, project)
    row = session.get(ProjectBudget, row_project.id)
    before = None if row is None else {"amount": row.amount, "unit": row.unit, "mode": row.mode}
    if row is None:
        row = ProjectBudget(project_id=row_project.id)
        session.add(row)
    row.amount, row.unit, row.mode, row.updated_at, row.updated_by = amount, unit, mode, utcnow(), actor.label
    session.info.pop(_RULES, None)
    audit.record(session, actor=actor, action="budget.set", target=project, reason=reason, before=before,
                 after={"amount": amount, "unit": unit, "mode": mode})
    effects.queue(session, wake=True)  # a raised budget may let held jobs run at once
    return row


def clear_budget(session: Session, *, project: str, actor: Principal, reason: str = "") -> None:
    """Remove a project's budget (admins); audited. Removing none is a no-op."""
    actor.require(Role.ADMIN)
    row = session.get(ProjectBudget, _project(session, project).id)
    if row is None:
        return
    audit.record(session, actor=actor, action="budget.clear", target=project, reason=reason,
                 before={"amount": row.amount, "unit": row.unit, "mode": row.mode}, after=None)
    session.delete(row)
    session.info.pop(_RULES, None)
    effects.queue(session, wake=True)


# -- at submit ------------------------------------------------------------------------------------------------------

def _largest_node_gpus(session: Session) -> int:
    counts = session.execute(select(func.count()).select_from(Gpu).where(Gpu.present.is_(True))
                             .group_by(Gpu.node_id)).scalars().all()
    return max(counts, default=0)


_RULES = "gpuq.approval_rules"  # session.info: project id -> (policy, has a budget), for one transaction


def _rules(session: Session, project_id: str) -> tuple[Policy, bool]:
    """The project's policy and whether it has an approval budget, read once per transaction (a batch
    submits many jobs of one project)."""
    cache = session.info.setdefault(_RULES, {})
    if project_id not in cache:
        row = session.get(ProjectBudget, project_id)
        cache[project_id] = (policy_of(session, project_id=project_id), row is not None and row.mode == "approval")
    return cache[project_id]


def needs_approval(session: Session, *, job: Job, now: datetime | None = None) -> str:
    """Why ``job`` (built, not yet submitted) must wait for an approver; "" when it may queue at once."""
    policy, approval_budget = _rules(session, job.project_id)
    if policy == Policy() and not approval_budget:
        return ""
    equivalents = request_equivalents(request_for(job))
    why: list[str] = []
    if policy.max_gpu_hours is not None and equivalents > 0:
        if job.time_limit_s is None:
            why.append(f"no time limit, and the project approves jobs above {policy.max_gpu_hours:g} GPU-h")
        elif equivalents * job.time_limit_s / 3600 > policy.max_gpu_hours:
            asked = equivalents * job.time_limit_s / 3600
            why.append(f"asks up to {asked:g} GPU-h (GPU-equivalents x time limit); the project approves jobs "
                       f"above {policy.max_gpu_hours:g}")
    if policy.whole_node and job.gpus:
        largest = _largest_node_gpus(session)
        if largest and job.gpus >= largest:
            why.append(f"asks for {job.gpus} whole GPUs per replica, a whole node")
    workload = getattr(job, "workload", None)
    if workload is not None and workload in policy.workloads:
        why.append(f"workload class {workload!r} needs approval in this project")
    over = budget.over_budget(session, project_id=job.project_id, gpu_equivalents=equivalents,
                              time_limit_s=job.time_limit_s, now=now) if approval_budget else ""
    if over:
        why.append(over)
    return "; ".join(why)


# -- deciding -------------------------------------------------------------------------------------------------------

def _decider(session: Session, *, job_id: str, principal: Principal) -> tuple[Job, Project, Policy]:
    """The pending job ``principal`` may decide, locked; 404 if not visible, 403 if not theirs to decide."""
    found = session.execute(select(Job, Project).join(Project, Project.id == Job.project_id)
                            .where(Job.id == job_id)).first()
    if found is None or not principal.can_see_project(found[1].name):
        raise NotFound(f"job {job_id} not found")
    job, project = found[0], found[1]
    if not principal.may_decide_for(project.name):
        raise Forbidden(f"{principal.label} may not approve or deny jobs of project {project.name!r} "
                        "(admins and the project's approver tokens may)")
    policy = policy_of(session, project_id=project.id)
    if principal.role is not Role.ADMIN and job.owner_token_id == principal.token_id and not policy.self_approval:
        raise Forbidden(f"{principal.label} submitted job {job.id} and may not decide it: project "
                        f"{project.name!r} does not allow self-approval")
    session.refresh(job, with_for_update=True)
    return job, project, policy


def _who(principal: Principal) -> transitions.Who:
    return transitions.Who(Actor.APPROVER, principal.label)


def approve(session: Session, *, job_id: str, principal: Principal, reason: str = "",
            expires_in_s: int | None = None) -> Job:
    """pending_approval → queued (409 from any other state). The approval lasts ``expires_in_s`` (default: the
    policy's ``approval_ttl_s``; none: until the job is admitted)."""
    job, project, policy = _decider(session, job_id=job_id, principal=principal)
    ttl = expires_in_s if expires_in_s is not None else policy.approval_ttl_s
    expires_at = db_now(session) + timedelta(seconds=ttl) if ttl else None
    before = {"state": job.state}
    transitions.approve(session, job=job, who=_who(principal), reason=reason, expires_at=expires_at)
    audit.record(session, actor=principal, action="job.approve", target=job.id, reason=reason, before=before,
                 after={"state": JobState.QUEUED.value, "project": project.name,
                        "expires_at": expires_at.isoformat() if expires_at else None})
    return job


def deny(session: Session, *, job_id: str, principal: Principal, reason: str) -> Job:
    """pending_approval → denied, final, with the reason (required; 409 from any other state)."""
    if not reason.strip():
        raise InvalidRequest("a denial says why: give a reason", field="reason")
    job, project, _policy = _decider(session, job_id=job_id, principal=principal)
    before = {"state": job.state}
    transitions.deny(session, job=job, who=_who(principal), reason=reason)
    audit.record(session, actor=principal, action="job.deny", target=job.id, reason=reason, before=before,
                 after={"state": JobState.DENIED.value, "project": project.name})
    return job


def pending(session: Session, *, principal: Principal, limit: int = 200) -> list[tuple[Job, Project]]:
    """Pending jobs the caller may see, oldest first (what an approver's inbox shows)."""
    query = (select(Job, Project).join(Project, Project.id == Job.project_id)
             .where(Job.state == JobState.PENDING_APPROVAL))
    if not principal.sees_all_projects:
        query = query.where(Project.name.in_(sorted(principal.projects)))
    return [(j, p) for j, p in session.execute(query.order_by(Job.submitted_at, Job.id).limit(limit)).all()]
