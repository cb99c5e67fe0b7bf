"""Operator actions: priority overrides, hold / release / move to top, forced reclamation, node drain
and cordon. Each action writes exactly one audit row (who, when, what, why, before, after)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from queue_service.auth import Principal
from queue_service.db.base import utcnow
from queue_service.db.models import LIVE_STATES, Allocation, Attempt, Job, JobState, Node, NodeStatus, Project, Role
from queue_service.errors import Conflict, InvalidRequest, NotFound
from queue_service.services import audit
from queue_service.services.jobs import release_allocations
from workers.messages import StopRequest

OPERATORS = (Role.ADMIN, Role.OPERATOR)


@dataclass(slots=True)
class StopPlan:
    """Jobs an action stops, and the commands to send after commit."""

    jobs: list[str] = field(default_factory=list)
    stops: list[StopRequest] = field(default_factory=list)


def _job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def _snap(job: Job) -> dict:
    return {"state": job.state, "priority_override": job.priority_override, "held": job.held}


def set_priority(session: Session, *, job_id: str, priority: int | None, actor: Principal, reason: str = "") -> Job:
    """Override a job's priority (above or below every class); None clears the override."""
    job = _job(session, job_id)
    before = _snap(job)
    job.priority_override = priority
    audit.record(session, actor=actor, action="job.priority", target=job.id, reason=reason, before=before,
                 after=_snap(job))
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
    return job


def set_held(session: Session, *, job_id: str, held: bool, actor: Principal, reason: str = "") -> Job:
    """Hold a queued job (the admitter skips it) or release it."""
    job = _job(session, job_id)
    if held and job.state != JobState.QUEUED:
        raise Conflict(f"job {job_id} is {job.state}; only queued jobs can be held")
    before = _snap(job)
    job.held = held
    job.reason = f"held by {actor.label}" + (f": {reason}" if reason else "") if held else "released; waiting for the next cycle"
    audit.record(session, actor=actor, action="job.hold" if held else "job.release", target=job.id, reason=reason,
                 before=before, after=_snap(job))
    return job


def stop_job(session: Session, *, job: Job, requeue: bool, reason: str, grace_s: float) -> list[StopRequest]:
    """Take a live job's capacity back: an admitted job at once, a running one after SIGTERM + grace.

    ``requeue``: the job goes back to the queue at its original position (it
    keeps its submit time); otherwise it ends cancelled.
    """
    now = utcnow()
    nodes = session.execute(
        select(Allocation.replica, Node.name).join(Node, Node.id == Allocation.node_id)
        .where(Allocation.job_id == job.id, Allocation.attempt == job.attempt, Allocation.released_at.is_(None))
    ).all()
    stops = [StopRequest(job.id, job.attempt, name, grace_s, reason, replica) for replica, name in sorted(set(nodes))]
    if job.state == JobState.ADMITTED:  # not started: the agent's start claim will be refused
        release_allocations(session, job_id=job.id, attempt=job.attempt)
        attempt = session.scalar(select(Attempt).where(Attempt.job_id == job.id, Attempt.number == job.attempt))
        if attempt is not None and attempt.ended_at is None:
            attempt.ended_at, attempt.state, attempt.reason = now, "stopped", reason
        if requeue:
            job.state, job.reason = JobState.QUEUED, f"requeued: {reason}"
        else:
            job.state, job.reason, job.finished_at = JobState.CANCELLED, reason, now
        return stops
    if job.state == JobState.RUNNING:
        job.stop_action = "requeue" if requeue else "cancel"
        job.stop_requested_at, job.stop_grace_s = now, grace_s
        job.reason = f"{reason}; stopping (grace {grace_s:g} s)"
        if not requeue:
            job.cancel_requested = True
        return stops
    return []


def reclaim(
    session: Session,
    *,
    kind: str,
    target: str,
    grace_s: float,
    requeue: bool,
    reason: str,
    actor: Principal,
) -> StopPlan:
    """Force capacity back from a job, a project's jobs, a GPU's jobs or a node's jobs.

    A reclaimed node is also cordoned, so the requeued jobs do not land on it
    again; it stays cordoned until an operator uncordons it.
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
    for job in session.scalars(query.order_by(Job.id)).all():
        plan.jobs.append(job.id)
        plan.stops.extend(stop_job(session, job=job, requeue=requeue, reason=why, grace_s=grace_s))
    audit.record(session, actor=actor, action=f"reclaim.{kind}", target=target, reason=reason,
                 before={"jobs": plan.jobs}, after={"grace_s": grace_s, "requeue": requeue})
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
    else:
        raise InvalidRequest("action is one of drain, cordon, uncordon", field="action")
    audit.record(session, actor=actor, action=f"node.{action}", target=name, reason=reason, before=before,
                 after={"status": node.status, "cordoned": node.cordoned})
    return node
