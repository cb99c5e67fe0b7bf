"""Who holds each GPU now: the live allocations with their job and project, per physical GPU.

``gpuq nodes`` and the dashboard draw a GPU from this, so a member sees
another project's blocks as occupied ("other project") instead of free:
the holding is always shown, only whose it is may be hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.auth import Principal
from queue_service.db.models import Allocation, Job, Project


@dataclass(frozen=True, slots=True)
class Holding:
    """One live allocation on a GPU; ``project``/``job_id``/``job_name`` are None when the caller may not see them."""

    kind: str  # gpu | mig | blocks
    blocks: int
    gpu_memory_mib: int
    mig_profile: str | None
    mig_start: int | None
    project: str | None
    job_id: str | None
    job_name: str | None


def by_gpu(session: Session, *, principal: Principal) -> dict[str, list[Holding]]:
    """Live GPU allocations per physical GPU uuid, oldest first; others' projects hidden from a member."""
    rows = session.execute(
        select(Allocation, Job.name, Project.name)
        .join(Job, Job.id == Allocation.job_id).join(Project, Project.id == Job.project_id)
        .where(Allocation.released_at.is_(None), Allocation.gpu_uuid.is_not(None))
        .order_by(Allocation.created_at, Allocation.id)
    ).all()
    out: dict[str, list[Holding]] = {}
    for alloc, job_name, project in rows:
        visible = principal.can_see_project(project)
        out.setdefault(str(alloc.gpu_uuid), []).append(Holding(
            kind=alloc.kind, blocks=alloc.blocks, gpu_memory_mib=alloc.gpu_memory_mib,
            mig_profile=alloc.mig_profile, mig_start=alloc.mig_start,
            project=project if visible else None, job_id=alloc.job_id if visible else None,
            job_name=job_name if visible else None,
        ))
    return out
