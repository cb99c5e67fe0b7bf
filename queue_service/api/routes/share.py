"""Measured use fed back: /v1/jobs/{id}/efficiency, /v1/usage/efficiency (allocated vs used), /v1/share."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Literal

from fastapi import APIRouter

from queue_service.api.deps import ContextDep, CurrentPrincipal, SessionDep
from queue_service.api.routes.usage import Month, _window
from queue_service.api.schemas.efficiency import (
    EfficiencyPublic,
    EfficiencyRowPublic,
    JobEfficiencyPublic,
    SharePublic,
    ShareRowPublic,
)
from queue_service.billing import efficiency
from queue_service.services import jobs as job_service
from queue_service.services import projects as project_service
from queue_service.services import share as share_service

router = APIRouter(tags=["usage"])

EfficiencyGroupBy = Literal["project", "workload", "user"]


@router.get("/jobs/{job_id}/efficiency", response_model=JobEfficiencyPublic)
def job_efficiency(job_id: str, principal: CurrentPrincipal, session: SessionDep) -> JobEfficiencyPublic:
    """What the job's samples measured (busy share, memory peak and mean against allocated) and a right-size hint."""
    job, _project = job_service.get_visible(session, job_id=job_id, principal=principal)
    return JobEfficiencyPublic(**asdict(efficiency.job_efficiency(session, job=job)))


@router.get("/usage/efficiency", response_model=EfficiencyPublic)
def usage_efficiency(
    principal: CurrentPrincipal, session: SessionDep,
    start: datetime | None = None, end: datetime | None = None, month: Month = None,
    group_by: EfficiencyGroupBy = "project",
) -> EfficiencyPublic:
    """Allocated vs used GPU time per project, workload or user, and in total (the projects the caller sees)."""
    lo, hi = _window(session, start, end, month)
    projects = project_service.visible(session, principal=principal)
    rows, total = efficiency.used_by_group(session, project_ids=[p.id for p in projects], start=lo, end=hi,
                                           group_by=group_by)
    return EfficiencyPublic(start=lo, end=hi, group_by=group_by,
                            rows=[EfficiencyRowPublic(**r.public()) for r in rows],
                            total=EfficiencyRowPublic(**total.public()))


@router.get("/share", response_model=SharePublic)
def share(principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> SharePublic:
    """Fair-share standing per project (like Slurm's sshare); members see their own projects' rows."""
    report = share_service.standing(session, settings=ctx.settings, principal=principal)
    return SharePublic(charge=report.charge, half_life_s=report.half_life_s,
                       rows=[ShareRowPublic(**asdict(r)) for r in report.rows])
