"""/v1/jobs: submit, list, read, cancel, logs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from queue_service.api.deps import ContextDep, CurrentPrincipal, SessionDep
from queue_service.api.schemas.jobs import JobCreate, JobPublic, JobsCreate, JobsCreated, JobsPublic, LogsPublic
from queue_service.errors import GpuqError
from queue_service.services import classes as class_service
from queue_service.db.models import Role
from queue_service.services import jobs as job_service

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobPublic)
def submit_job(body: JobCreate, principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> JobPublic:
    """Queue a job. Answers 201 with the job; it is admitted by the next cycle."""
    principal.require(Role.ADMIN, Role.OPERATOR, Role.MEMBER)
    job = job_service.submit(
        session, body=body, principal=principal, settings=ctx.settings,
        feasibility=lambda request: ctx.feasibility.check(session, request),
    )
    project = job_service.project_service.require(session, name=body.project)
    public = job_service.to_public(session, job=job, project=project)
    session.commit()
    ctx.admitter.wake()
    return public


@router.post("/batch", status_code=status.HTTP_201_CREATED, response_model=JobsCreated)
def submit_jobs(body: JobsCreate, principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> JobsCreated:
    """Queue up to 1,000 jobs at once (a job array): all are validated first, and either all are
    queued or none is (the error names the job's index and field)."""
    principal.require(Role.ADMIN, Role.OPERATOR, Role.MEMBER)
    classes = class_service.effective(session, settings=ctx.settings)
    projects: dict = {}
    ids = []
    for index, item in enumerate(body.jobs):
        try:
            job = job_service.submit(
                session, body=item, principal=principal, settings=ctx.settings, classes=classes, projects=projects,
                feasibility=lambda request: ctx.feasibility.check(session, request), flush=False,
            )
        except GpuqError as exc:
            exc.message = f"jobs[{index}]: {exc.message}"
            exc.field = f"jobs.{index}.{exc.field}" if exc.field else f"jobs.{index}"
            raise
        ids.append(job.id)
    session.commit()
    ctx.admitter.wake()
    return JobsCreated(ids=ids, count=len(ids))


@router.get("", response_model=JobsPublic)
def list_jobs(
    principal: CurrentPrincipal,
    session: SessionDep,
    project: str | None = None,
    state: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> JobsPublic:
    """Jobs the caller may see, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    rows, next_cursor = job_service.list_visible(
        session, principal=principal, project=project, state=state, limit=limit, cursor=cursor
    )
    data = [job_service.to_public(session, job=j, project=p) for j, p in rows]
    return JobsPublic(data=data, count=len(data), next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, principal: CurrentPrincipal, session: SessionDep) -> JobPublic:
    """State, why it waits, its allocation, exit code and timestamps."""
    job, project = job_service.get_visible(session, job_id=job_id, principal=principal)
    return job_service.to_public(session, job=job, project=project)


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: str, principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> JobPublic:
    """Cancel in any non-final state (a final job is returned unchanged)."""
    job, stops = job_service.cancel(
        session, job_id=job_id, principal=principal, grace_s=ctx.settings.default_grace_s
    )
    _, project = job_service.get_visible(session, job_id=job_id, principal=principal)
    public = job_service.to_public(session, job=job, project=project)
    session.commit()
    for stop in stops:
        ctx.dispatcher.stop(stop)
    ctx.admitter.wake()
    return public


@router.get("/{job_id}/logs", response_model=LogsPublic)
def job_logs(
    job_id: str,
    principal: CurrentPrincipal,
    session: SessionDep,
    attempt: Annotated[int | None, Query(ge=1)] = None,
    stdout_offset: Annotated[int, Query(ge=0)] = 0,
    stderr_offset: Annotated[int, Query(ge=0)] = 0,
) -> LogsPublic:
    """Output so far (or all of it once the job ended), from byte offsets for following."""
    job, _project = job_service.get_visible(session, job_id=job_id, principal=principal)
    return LogsPublic(**job_service.read_logs(
        session, job=job, attempt=attempt, stdout_offset=stdout_offset, stderr_offset=stderr_offset
    ))
