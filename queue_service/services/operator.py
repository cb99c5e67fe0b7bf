"""Operator actions: priority overrides, hold / release / move to top, forced reclamation, node drain
and cordon. Each action writes exactly one audit row (who, when, what, why, before, after)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from queue_service.auth import Principal
from queue_service.db.models import LIVE_STATES, Allocation, Job, JobState, Node, NodeStatus, Project, Role
from queue_service.errors import Conflict, InvalidRequest, NotFound
from queue_service.lifecycle import effects, grace, transitions
from queue_service.lifecycle.states import Actor, StopCause
from queue_service.services import audit
from queue_service.settings import Settings

OPERATORS = (Role.ADMIN, Role.OPERATOR)


@dataclass(slots=True)
class StopPlan:
    """The jobs an action stops (their stop requests go out after commit)."""

    jobs: list[str] = field(default_factory=list)


def _job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def _snap(job: Job) -> dict[str, object]:
    return {"state": job.state, "priority_override": job.priority_override, "held": job.held}


def _who(actor: Principal) -> transitions.Who:
    return transitions.Who(Actor.OPERATOR, actor.label)


def set_priority(session: Session, *, job_id: str, priority: int | None, actor: Principal, reason: str = "") -> Job:
    """Override a job's priority (above or below every class); None clears the override."""
    job = _job(session, job_id)
    before = _snap(job)
    job.priority_override = priority
    audit.record(session, actor=actor, action="job.priority", target=job.id, reason=reason, before=before,
                 after=_snap(job))
    effects.queue(session, wake=True)
    return job


def move_to_top(session: Session, *, job_id: str, actor: Principal, reason: str = "") -> Job:
    """Rank the job first among queued jobs: an override one above the highest effective priority."""
    job = _job(session, job_id)
    if job.state != JobState.QUEUED:
        raise Conflict(f"job {job_id} is {job.state}; only queued jobs can be moved to the top")
    top = session.scalar(
        select(func.max(func.coalesce(Job.priority_override, Job.priority))).where(Job.state == JobState.QUEUED)
    ) or 0
    before = _snap(job)
    job.priority_override = int(top) + 1
    audit.record(session, actor=actor, action="job.top", target=job.id, reason=reason, before=before,
                 after=_snap(job))
    effects.queue(session, wake=True)
    return job


def set_held(session: Session, *, job_id: str, held: bool, actor: Principal, reason: str = "") -> Job:
    """Hold a queued job (the admitter skips it) or release it."""
    job = _job(session, job_id)
    before = _snap(job)
    if held:  # the table refuses a job that is not queued (409 with its state)
        transitions.hold(session, job=job, who=_who(actor), reason=reason)
    else:
        transitions.release_hold(session, job=job, who=_who(actor), reason=reason)
    audit.record(session, actor=actor, action="job.hold" if held else "job.release", target=job.id, reason=reason,
                 before=before, after=_snap(job))
    return job


def reclaim(
    session: Session,
    *,
    kind: str,
    target: str,
    grace_s: float | None,
    requeue: bool,
    reason: str,
    actor: Principal,
    settings: Settings,
) -> StopPlan:
    """Force capacity back from a job, a project's jobs, a GPU's jobs or a node's jobs.

    A reclaimed node is also cordoned, so the requeued jobs do not land on it
    again; it stays cordoned until an operator uncordons it. Without
    ``grace_s`` each job gets its own class's grace.
    """
    query = select(Job).where(Job.state.in_([s.value for s in LIVE_STATES]))
    if kind == "job":
        query = query.where(Job.id == target)
    elif kind == "project":
        query = query.join(Project, Project.id == Job.project_id).where(Project.name == target)
    elif kind in ("gpu", "node"):
        live = select(Allocation.job_id).where(Allocation.released_at.is_(None))
        if kind == "gpu":
            live = live.where((Allocation.gpu_uuid == target) | (Allocation.mig_uuid == target))
        else:
            node = session.scalar(select(Node).where(Node.name == target))
            if node is None:
                raise NotFound(f"node {target} not found")
            node.cordoned = True
            live = live.where(Allocation.node_id == node.id)
        query = query.where(Job.id.in_(live))
    else:
        raise InvalidRequest("reclaim one of: job, project, gpu, node", field="kind")
    plan = StopPlan()
    why = f"reclaimed by {actor.label}" + (f": {reason}" if reason else "")
    for job in session.scalars(query.order_by(Job.id).with_for_update()).all():
        plan.jobs.append(job.id)
        job_grace_s = grace_s if grace_s is not None else grace.grace_s(
            session, settings=settings, priority_class=job.priority_class)
        transitions.request_stop(session, job=job, who=_who(actor), cause=StopCause.RECLAIM, requeue=requeue,
                                 reason=why, grace_s=job_grace_s)
    audit.record(session, actor=actor, action=f"reclaim.{kind}", target=target, reason=reason,
                 before={"jobs": plan.jobs}, after={"grace_s": grace_s, "requeue": requeue})
    effects.queue(session, wake=True)
    return plan


def set_node(session: Session, *, name: str, action: str, actor: Principal, reason: str = "") -> Node:
    """drain (no new work; running jobs finish), cordon (no new work), uncordon (both undone)."""
    node = session.scalar(select(Node).where(Node.name == name))
    if node is None:
        raise NotFound(f"node {name} not found")
    before = {"status": node.status, "cordoned": node.cordoned}
    if action == "drain":
        node.status = NodeStatus.DRAINING
    elif action == "cordon":
        node.cordoned = True
    elif action == "uncordon":
        node.cordoned = False
        if node.status == NodeStatus.DRAINING:
            node.status = NodeStatus.READY
            node.drain_reason, node.node_faults = "", 0  # an operator judged the node fixed
    else:
        raise InvalidRequest("action is one of drain, cordon, uncordon", field="action")
    audit.record(session, actor=actor, action=f"node.{action}", target=name, reason=reason, before=before,
                 after={"status": node.status, "cordoned": node.cordoned})
    effects.queue(session, wake=True)
    return node
