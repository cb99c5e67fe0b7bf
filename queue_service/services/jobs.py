"""Jobs: submit, read, list, cancel, logs."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from partitioner.catalog import all_mig_profile_names
from partitioner.types import NoFit, Request
from queue_service.api.schemas.jobs import AllocationPublic, JobCreate, JobPublic, ResourcesPublic
from queue_service.auth import Principal
from queue_service.billing import ledger
from queue_service.db.base import new_id, utcnow
from queue_service.db.models import FINAL_STATES, Allocation, Attempt, Job, JobState, LogChunk, Node, Project
from queue_service.errors import Forbidden, InvalidRequest, NotFound
from queue_service.services import classes as class_service
from queue_service.services import projects as project_service
from queue_service.services.convert import model_key, request_for
from queue_service.settings import Settings
from workers.messages import StopRequest

# Answers whether a request could ever fit the registered cluster: None if it
# could (or nothing is registered yet), else the reason it never can.
FeasibilityCheck = Callable[[Request], NoFit | None]


def submit(
    session: Session,
    *,
    body: JobCreate,
    principal: Principal,
    settings: Settings,
    feasibility: FeasibilityCheck | None = None,
    classes: dict | None = None,
    projects: dict[str, Project] | None = None,
    flush: bool = True,
) -> Job:
    """Validate against configuration and cluster, then queue the job.

    ``classes`` and ``projects`` may be passed in (and are filled) so a batch
    looks each up once.
    """
    projects = {} if projects is None else projects
    project = projects.get(body.project) or project_service.require(session, name=body.project)
    projects[body.project] = project
    if not principal.can_submit_to(project.name):
        raise Forbidden(f"{principal.label} may not submit to project {project.name!r}")
    class_name = body.priority_class or settings.default_priority_class
    classes = classes if classes is not None else class_service.effective(session, settings=settings)
    klass = classes.get(class_name)
    if klass is None:
        known = ", ".join(sorted(classes))
        raise InvalidRequest(f"unknown priority_class {class_name!r} (known: {known})", field="priority_class")
    if body.time_limit_s is not None and body.time_limit_s > settings.max_time_limit_s:
        raise InvalidRequest(f"time_limit_s may be at most {settings.max_time_limit_s}", field="time_limit_s")
    res = body.resources
    if res.mig is not None and res.mig not in all_mig_profile_names():
        raise InvalidRequest(f"unknown MIG profile {res.mig!r}", field="resources.mig")
    job = Job(
        id=new_id(),
        name=body.name,
        project_id=project.id,
        owner_token_id=principal.token_id,
        image=body.image,
        command=list(body.command),
        env=dict(body.env),
        gpus=res.gpus or 0,
        mig_profile=res.mig,
        mig_count=res.mig_count,
        blocks=res.blocks or 0,
        gpu_memory_mib=res.gpu_memory_mib or 0,
        gpu_models=[model_key(m) for m in res.gpu_models],
        cpus=res.cpus or 0.0,
        memory_mib=res.memory_mib or 0,
        replicas=res.replicas,
        priority_class=class_name,
        priority=klass.value,
        time_limit_s=body.time_limit_s,
        requeue_on_preempt=body.requeue,
        state=JobState.QUEUED,
        reason="waiting for the next admission cycle",
    )
    if feasibility is not None:
        never = feasibility(request_for(job))
        if never is not None:
            raise InvalidRequest(f"this job can never run on this cluster: {never.reason}", field="resources")
    session.add(job)
    if flush:  # a batch leaves it to the commit: one multi-row INSERT for all its jobs
        session.flush()
    return job


def get_visible(session: Session, *, job_id: str, principal: Principal) -> tuple[Job, Project]:
    """The job, or NotFound if it does not exist or the caller may not see it."""
    row = session.execute(
        select(Job, Project).join(Project, Project.id == Job.project_id).where(Job.id == job_id)
    ).first()
    if row is None or not principal.can_see_project(row[1].name):
        raise NotFound(f"job {job_id} not found")
    return row[0], row[1]


def _encode_cursor(job: Job) -> str:
    raw = json.dumps([job.submitted_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, job_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(at), str(job_id)
    except Exception as exc:  # noqa: BLE001 - any garbage is the caller's error
        raise InvalidRequest("invalid cursor", field="cursor") from exc


def list_visible(
    session: Session,
    *,
    principal: Principal,
    project: str | None = None,
    state: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[tuple[Job, Project]], str | None]:
    """Newest first, keyset-paginated."""
    query = select(Job, Project).join(Project, Project.id == Job.project_id)
    if project is not None:
        if not principal.can_see_project(project):
            return [], None
        query = query.where(Project.name == project)
    elif not principal.sees_all_projects:
        query = query.where(Project.name.in_(sorted(principal.projects)))
    if state is not None:
        try:
            JobState(state)
        except ValueError as exc:
            raise InvalidRequest(f"unknown state {state!r}", field="state") from exc
        query = query.where(Job.state == state)
    if cursor:
        at, job_id = _decode_cursor(cursor)
        query = query.where(or_(Job.submitted_at < at, and_(Job.submitted_at == at, Job.id < job_id)))
    rows = session.execute(query.order_by(Job.submitted_at.desc(), Job.id.desc()).limit(limit + 1)).all()
    rows = [(r[0], r[1]) for r in rows]
    next_cursor = _encode_cursor(rows[limit - 1][0]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def live_allocations(session: Session, *, job: Job) -> list[tuple[Allocation, str]]:
    """The job's current attempt's allocations, with node names."""
    rows = session.execute(
        select(Allocation, Node.name)
        .join(Node, Node.id == Allocation.node_id)
        .where(Allocation.job_id == job.id, Allocation.attempt == job.attempt)
        .order_by(Allocation.replica, Allocation.gpu_uuid)
    ).all()
    return [(r[0], r[1]) for r in rows]


def release_allocations(session: Session, *, job_id: str, attempt: int | None = None) -> int:
    """Mark the job's live allocations released now; returns how many were live."""
    query = select(Allocation).where(Allocation.job_id == job_id, Allocation.released_at.is_(None))
    if attempt is not None:
        query = query.where(Allocation.attempt == attempt)
    now = utcnow()
    rows = session.scalars(query).all()
    for row in rows:
        row.released_at = now
    # The ledger closes in the same transaction as the release, so it cannot drift from it.
    ledger.close_intervals(session, allocation_ids=[row.id for row in rows])
    return len(rows)


def cancel(session: Session, *, job_id: str, principal: Principal, grace_s: float) -> tuple[Job, list[StopRequest]]:
    """Cancel in any non-final state; returns stop commands to send after commit."""
    job, _project = get_visible(session, job_id=job_id, principal=principal)
    if principal.role.value == "viewer":
        raise Forbidden("viewers may not cancel jobs")
    if JobState(job.state) in FINAL_STATES:
        return job, []
    now = utcnow()
    stops: list[StopRequest] = []
    node_names = {name for _alloc, name in live_allocations(session, job=job)}
    if job.state == JobState.QUEUED:
        job.state, job.reason, job.finished_at = JobState.CANCELLED, f"cancelled by {principal.label}", now
    elif job.state == JobState.ADMITTED:
        # Not started: the agent's start claim will be refused, so free it now.
        job.state, job.reason, job.finished_at = JobState.CANCELLED, f"cancelled by {principal.label}", now
        release_allocations(session, job_id=job.id)
        _end_attempt(session, job=job, reason="cancelled before start")
        stops = [StopRequest(job.id, job.attempt, n, grace_s, "cancelled") for n in sorted(node_names)]
    else:  # running: the agent stops it; its exit report frees the allocation
        job.cancel_requested = True
        job.reason = f"cancel requested by {principal.label}; stopping"
        stops = [StopRequest(job.id, job.attempt, n, grace_s, "cancelled") for n in sorted(node_names)]
        attempt = _current_attempt(session, job=job)
        if attempt is not None:
            attempt.stop_sent_at = now
    return job, stops


def _current_attempt(session: Session, *, job: Job) -> Attempt | None:
    return session.scalar(select(Attempt).where(Attempt.job_id == job.id, Attempt.number == job.attempt))


def _end_attempt(session: Session, *, job: Job, reason: str) -> None:
    attempt = _current_attempt(session, job=job)
    if attempt is not None and attempt.ended_at is None:
        attempt.ended_at = utcnow()
        attempt.state = job.state
        attempt.reason = reason


def to_public(session: Session, *, job: Job, project: Project) -> JobPublic:
    allocations = live_allocations(session, job=job) if job.attempt else []
    return JobPublic(
        id=job.id,
        name=job.name,
        project=project.name,
        image=job.image,
        command=job.command,
        env=job.env,
        resources=ResourcesPublic(
            gpus=job.gpus if not job.mig_profile and not job.blocks else None,
            mig=job.mig_profile,
            mig_count=job.mig_count,
            blocks=job.blocks or None,
            gpu_memory_mib=job.gpu_memory_mib or None,
            gpu_models=job.gpu_models or [],
            cpus=job.cpus or None,
            memory_mib=job.memory_mib or None,
            replicas=job.replicas,
        ),
        priority_class=job.priority_class,
        priority=job.priority,
        priority_override=job.priority_override,
        time_limit_s=job.time_limit_s,
        held=job.held,
        requeue=job.requeue_on_preempt,
        preemptions=job.preemptions,
        state=job.state,
        reason=job.reason,
        exit_code=job.exit_code,
        attempt=job.attempt,
        submitted_at=job.submitted_at,
        admitted_at=job.admitted_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        allocation=[
            AllocationPublic(
                node=node_name, replica=a.replica, kind=a.kind, gpu_uuid=a.mig_uuid or a.gpu_uuid,
                blocks=a.blocks, gpu_memory_mib=a.gpu_memory_mib, mig_profile=a.mig_profile,
                mig_start=a.mig_start, cpus_milli=a.cpus_milli, memory_mib=a.memory_mib,
            )
            for a, node_name in allocations
        ],
    )


def read_logs(
    session: Session, *, job: Job, attempt: int | None = None, stdout_offset: int = 0, stderr_offset: int = 0
) -> dict:
    """Log text after the given byte offsets, per stream, for one attempt (default: the latest)."""
    number = attempt if attempt is not None else job.attempt
    out: dict = {"job_id": job.id, "attempt": number, "final": JobState(job.state) in FINAL_STATES}
    for stream, offset in (("stdout", stdout_offset), ("stderr", stderr_offset)):
        chunks = session.execute(
            select(LogChunk.offset, LogChunk.data)
            .where(LogChunk.job_id == job.id, LogChunk.attempt == number, LogChunk.stream == stream)
            .where(LogChunk.offset + func.length(LogChunk.data) > offset)
            .order_by(LogChunk.offset)
        ).all()
        # The first chunk may start before ``offset``: read from that byte, not from the next chunk.
        data = b"".join(d[max(0, offset - o):] for o, d in chunks)
        end = chunks[-1][0] + len(chunks[-1][1]) if chunks else offset
        out[stream] = data.decode("utf-8", "replace")
        out[f"{stream}_offset"] = end
    return out
