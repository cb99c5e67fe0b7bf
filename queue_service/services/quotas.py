"""Project quotas: guaranteed capacity and a borrowing limit, in whole-GPU equivalents.

A granted capacity request (``services.capacity``) adds to a project's
guarantee for its period only: ``all_quotas`` counts the grants in force at
"now" (the database clock), so a grant starts and ends by itself, with no
job to run at either end.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from partitioner.types import SliceKind
from queue_service.admission.snapshot import Quota
from queue_service.admission.units import held_equivalents
from queue_service.auth import Principal
from queue_service.db.approval_models import CapacityRequest
from queue_service.db.base import utcnow
from queue_service.db.clock import db_now
from queue_service.db.models import Allocation, Gpu, Job, Node, NodeStatus, Project, ProjectQuota
from queue_service.errors import InvalidRequest
from queue_service.lifecycle import effects
from queue_service.services import audit
from queue_service.services import projects as project_service
from queue_service.snapshots import allocation_equivalents


def cluster_capacity(session: Session) -> float:
    """Whole-GPU equivalents of every present GPU on nodes that are not down.

    A GPU is one whole GPU whatever its mode: carved into MIG instances or
    shared as blocks, its parts add up to at most 1 (``units.held_equivalents``).
    """
    gpus = session.scalar(
        select(func.count()).select_from(Gpu).join(Node, Node.id == Gpu.node_id)
        .where(Gpu.present.is_(True), Node.status != NodeStatus.DOWN)
    ) or 0
    return gpus * held_equivalents(SliceKind.GPU)


def in_use(session: Session) -> dict[str, float]:
    """Whole-GPU equivalents each project holds now (live allocations)."""
    rows = session.execute(
        select(Project.name, Allocation, Gpu.model).join(Job, Job.id == Allocation.job_id)
        .join(Project, Project.id == Job.project_id).outerjoin(Gpu, Gpu.uuid == Allocation.gpu_uuid)
        .where(Allocation.released_at.is_(None))
    ).all()
    usage: dict[str, float] = {}
    for name, alloc, gpu_model in rows:
        usage[name] = usage.get(name, 0.0) + allocation_equivalents(alloc, gpu_model)
    return usage


def grants(session: Session, *, now: datetime | None = None) -> dict[str, list[CapacityRequest]]:
    """Granted capacity requests in force at ``now``, per project name."""
    now = now or db_now(session)
    rows = session.execute(
        select(Project.name, CapacityRequest).join(Project, Project.id == CapacityRequest.project_id)
        .where(CapacityRequest.status == "granted", CapacityRequest.starts_at <= now, CapacityRequest.ends_at > now)
        .order_by(CapacityRequest.ends_at)
    ).all()
    out: dict[str, list[CapacityRequest]] = {}
    for name, row in rows:
        out.setdefault(name, []).append(row)
    return out


def all_quotas(session: Session, *, now: datetime | None = None) -> dict[str, Quota]:
    """Every project's quota: its own guarantee plus the capacity grants in force at ``now``."""
    rows = session.execute(select(Project.name, ProjectQuota).join(ProjectQuota, ProjectQuota.project_id == Project.id))
    out = {name: Quota(guaranteed=q.guaranteed, borrow_limit=q.borrow_limit) for name, q in rows}
    for name, granted in grants(session, now=now).items():
        base = out.get(name, Quota(guaranteed=0.0, borrow_limit=None))
        out[name] = Quota(guaranteed=base.guaranteed + sum(g.gpus for g in granted), borrow_limit=base.borrow_limit)
    return out


def set_quota(session: Session, *, project: str, guaranteed: float, borrow_limit: float | None,
              actor: Principal, reason: str = "") -> Quota:
    """Set a project's quota; refused when guarantees would add up to more than the cluster."""
    row_project = project_service.get_by_name(session, name=project)
    if row_project is None:
        raise InvalidRequest(f"unknown project {project!r}", field="project")
    others = sum(q.guaranteed for name, q in all_quotas(session).items() if name != project)
    capacity = cluster_capacity(session)
    if others + guaranteed > capacity + 1e-9:
        raise InvalidRequest(
            f"guarantees would add up to {others + guaranteed:g} GPU equivalents; the cluster has {capacity:g}",
            field="guaranteed",
        )
    row = session.get(ProjectQuota, row_project.id)
    before = None if row is None else {"guaranteed": row.guaranteed, "borrow_limit": row.borrow_limit}
    if row is None:
        row = ProjectQuota(project_id=row_project.id)
        session.add(row)
    row.guaranteed, row.borrow_limit, row.updated_at = guaranteed, borrow_limit, utcnow()
    audit.record(session, actor=actor, action="quota.set", target=project, reason=reason, before=before,
                 after={"guaranteed": guaranteed, "borrow_limit": borrow_limit})
    effects.queue(session, wake=True)  # a new guarantee may admit or reclaim at once
    return Quota(guaranteed, borrow_limit)
