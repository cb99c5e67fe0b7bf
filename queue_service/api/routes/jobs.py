"""/v1/jobs: submit, list, read, cancel, logs, events.

Routes validate, call a service and present the answer; the request's
transaction commits when the route returns (``deps.SessionDep``) and the
lifecycle's effects go out after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlalchemy.orm import Session

from queue_service.api.deps import ContextDep, CurrentPrincipal, SessionDep
from queue_service.api.presenters import events_public, job_public
from queue_service.api.schemas.common import INT32_MAX, INT64_MAX
from queue_service.api.schemas.jobs import (
    JobCreate,
    JobEventsPublic,
    JobPublic,
    JobsCreate,
    JobsCreated,
    JobsPublic,
    LogsPublic,
)
from queue_service.db.models import Project, Role
from queue_service.services import jobs as job_service

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobPublic)
async def submit_job(body: JobCreate, principal: CurrentPrincipal, ctx: ContextDep) -> JobPublic:
    """Queue a job. Answers 201 with the job once it is stored; it is admitted by the next cycle.

    The submission is one unit of a group commit (``queue_service.group_commit``):
    the submits waiting at that moment share one transaction and one flush, and
    a refused one is refused alone.
    """
    principal.require(Role.ADMIN, Role.OPERATOR, Role.MEMBER)

    def work(session: Session) -> Callable[[], JobPublic]:
        projects: dict[str, Project] = {}  # submit fills it: the presenter reuses its lookup
        job = job_service.submit(
            session, body=body, principal=principal, settings=ctx.settings,
            feasibility=lambda request: ctx.feasibility.check(session, request),
            runtime_check=lambda image: ctx.feasibility.runtime_missing(session, image=image),
            projects=projects, flush=False,
        )
        return lambda: job_public(session, job=job, project=projects[body.project], principal=principal)

    return await ctx.submits.run(work)


@router.post("/batch", status_code=status.HTTP_201_CREATED, response_model=JobsCreated)
def submit_jobs(body: JobsCreate, principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> JobsCreated:
    """Queue up to 1,000 jobs at once (a job array): all are validated first, and either all are
    queued or none is (the error names the job's index and field)."""
    principal.require(Role.ADMIN, Role.OPERATOR, Role.MEMBER)
    jobs = job_service.submit_many(
        session, bodies=body.jobs, principal=principal, settings=ctx.settings,
        feasibility=lambda request: ctx.feasibility.check(session, request),
        runtime_check=lambda image: ctx.feasibility.runtime_missing(session, image=image),
    )
    return JobsCreated(ids=[j.id for j in jobs], count=len(jobs))


@router.get("", response_model=JobsPublic)
def list_jobs(
    principal: CurrentPrincipal,
    session: SessionDep,
    project: str | None = None,
    state: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
    id_prefix: Annotated[str | None, Query(min_length=1, max_length=32, pattern=r"^[0-9a-fA-F]+$")] = None,
) -> JobsPublic:
    """Jobs the caller may see, newest first; pass ``next_cursor`` back as ``cursor`` for the next page.

    ``id_prefix`` keeps the jobs whose id starts with it: the CLI resolves ``gpuq show 3f1c`` with it.
    """
    rows, next_cursor = job_service.list_visible(
        session, principal=principal, project=project, state=state, limit=limit, cursor=cursor,
        id_prefix=id_prefix,
    )
    data = [job_public(session, job=j, project=p, principal=principal) for j, p in rows]
    return JobsPublic(data=data, count=len(data), next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, principal: CurrentPrincipal, session: SessionDep) -> JobPublic:
    """State, why it waits, its allocation, exit code and timestamps."""
    job, project = job_service.get_visible(session, job_id=job_id, principal=principal)
    return job_public(session, job=job, project=project, principal=principal)


@router.get("/{job_id}/events", response_model=JobEventsPublic)
def job_events(job_id: str, principal: CurrentPrincipal, session: SessionDep) -> JobEventsPublic:
    """Every accepted transition of the job, oldest first (time on the database clock, actor, reason)."""
    job, _project = job_service.get_visible(session, job_id=job_id, principal=principal)
    return events_public(job_service.history(session, job=job))


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: str, principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> JobPublic:
    """Cancel in any non-final state (a final job is returned unchanged)."""
    job = job_service.cancel(session, job_id=job_id, principal=principal, settings=ctx.settings)
    _, project = job_service.get_visible(session, job_id=job_id, principal=principal)
    return job_public(session, job=job, project=project, principal=principal)


@router.get("/{job_id}/logs", response_model=LogsPublic)
def job_logs(
    job_id: str,
    principal: CurrentPrincipal,
    session: SessionDep,
    attempt: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    stdout_offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    stderr_offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> LogsPublic:
    """Output so far (or all of it once the job ended), from byte offsets for following."""
    job, _project = job_service.get_visible(session, job_id=job_id, principal=principal)
    return LogsPublic.model_validate(job_service.read_logs(
        session, job=job, attempt=attempt, stdout_offset=stdout_offset, stderr_offset=stderr_offset
    ))
