"""Jobs: submit, read, list, cancel, logs."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from partitioner.catalog import all_mig_profile_names
from partitioner.types import NoFit, Request
from queue_service.auth import Principal
from queue_service.db.base import new_id
from queue_service.db.clock import db_now
from queue_service.db.models import FINAL_STATES, Allocation, Job, JobEvent, JobState, LogChunk, Node, Project, Role
from queue_service.errors import Forbidden, GpuqError, InvalidRequest, NotFound
from queue_service.lifecycle import events, grace, transitions
from queue_service.lifecycle.states import Actor
from queue_service.services import allowlists, approvals, arrays, audit
from queue_service.services import classes as class_service
from queue_service.services import projects as project_service
from queue_service.services import workloads as workload_service
from queue_service.services.convert import model_key, request_for
from queue_service.settings import PriorityClass, Settings, WorkloadClass

# Answers whether a request could ever fit the registered cluster: None if it
# could (or nothing is registered yet), else the reason it never can.
FeasibilityCheck = Callable[[Request], NoFit | None]
# Answers why no registered node could run a job with (True) or without (False) an image, or None.
RuntimeCheck = Callable[[bool], str | None]


class ResourcesSpec(Protocol):
    """What a submission asks for per replica (``api.schemas.jobs.ResourcesCreate`` has this shape)."""

    gpus: int | None
    mig: str | None
    mig_count: int
    blocks: int | None
    gpu_memory_mib: int | None
    gpu_models: list[str]
    cpus: float | None
    memory_mib: int | None
    replicas: int


class DependencySpec(Protocol):
    """One dependency of a submission (``api.schemas.jobs.DependencyCreate``)."""

    @property
    def job_id(self) -> str: ...

    @property
    def condition(self) -> str: ...


class JobSpec(Protocol):
    """A validated submission (``api.schemas.jobs.JobCreate`` has this shape; services never import api)."""

    name: str
    project: str
    image: str | None
    command: list[str]
    env: dict[str, str]
    priority_class: str | None
    time_limit_s: int | None
    requeue: bool
    workdir: str | None
    output: str | None
    error: str | None
    array: str | None
    workload: str | None
    labels: dict[str, str]

    @property
    def volumes(self) -> Sequence[allowlists.VolumeSpec]: ...

    @property
    def resources(self) -> ResourcesSpec: ...

    @property
    def depends_on(self) -> Sequence[DependencySpec]: ...


_LOOKUPS = "gpuq.submit_lookups"  # session.info: what every submit of one transaction reads alike


@dataclass
class _Lookups:
    """The configuration a submit reads, once per transaction: a group commit runs many submits in one
    (``queue_service.group_commit``), and these three reads were a quarter of its time (PostgreSQL storm
    profile). Within one transaction they are what the first submit saw; a change committed meanwhile
    applies from the next transaction, as it would had the submits queued one by one behind it."""

    projects: dict[str, Project] = field(default_factory=dict)
    classes: dict[str, PriorityClass] | None = None
    workloads: dict[str, WorkloadClass] | None = None
    # the submit time of the transaction's jobs: its submits are concurrent requests, so one clock read
    # (a round trip each on PostgreSQL, 8 % of the storm's time) orders them as well as one each did
    at: datetime | None = None


def _lookups(session: Session) -> _Lookups:
    cached = session.info.get(_LOOKUPS)
    if cached is None:
        cached = session.info[_LOOKUPS] = _Lookups()
    return cached


def who(principal: Principal) -> transitions.Who:
    """The lifecycle actor for a caller: operators and admins act as operators, others as users."""
    kind = Actor.OPERATOR if principal.role in (Role.ADMIN, Role.OPERATOR) else Actor.USER
    return transitions.Who(kind, principal.label)


def submit(
    session: Session,
    *,
    body: JobSpec,
    principal: Principal,
    settings: Settings,
    feasibility: FeasibilityCheck | None = None,
    runtime_check: RuntimeCheck | None = None,
    classes: dict[str, PriorityClass] | None = None,
    projects: dict[str, Project] | None = None,
    workloads: dict[str, WorkloadClass] | None = None,
    flush: bool = True,
    at: datetime | None = None,
) -> Job:
    """Validate against configuration and cluster, then queue the job.

    ``classes`` and ``projects`` may be passed in (and are filled) so a batch
    looks each up once; left out, they are read once per transaction (:class:`_Lookups`).
    """
    lookups = _lookups(session)
    if at is None:
        if lookups.at is None:
            lookups.at = db_now(session)
        at = lookups.at
    projects = lookups.projects if projects is None else projects
    project = (projects.get(body.project) or lookups.projects.get(body.project)
               or project_service.require(session, name=body.project))
    projects[body.project] = lookups.projects[body.project] = project
    if not principal.can_submit_to(project.name):
        raise Forbidden(f"{principal.label} may not submit to project {project.name!r}")
    if classes is None:
        if lookups.classes is None:
            lookups.classes = class_service.effective(session, settings=settings)
        classes = lookups.classes
    if workloads is None:
        if lookups.workloads is None:
            lookups.workloads = workload_service.effective(session, settings=settings)
        workloads = lookups.workloads
    applied = workload_service.apply(body.workload, priority_class=body.priority_class,
                                     time_limit_s=body.time_limit_s, classes=workloads, priority_classes=classes,
                                     settings=settings)
    class_name = applied.priority_class
    klass = classes.get(class_name)
    if klass is None:
        known = ", ".join(sorted(classes))
        raise InvalidRequest(f"unknown priority_class {class_name!r} (known: {known})", field="priority_class")
    if not principal.may_use_class(klass.allowed_projects, project.name):
        raise Forbidden(f"priority class {class_name!r} is not open to project {project.name!r} "
                        f"(an operator sets who may use it: PUT /v1/priority-classes/{class_name})")
    time_limit_s = workload_service.bounded(
        time_limit_for(applied.time_limit_s, class_name=class_name, klass=klass, settings=settings), applied)
    allowlists.check_image(project, body.image)
    volumes = allowlists.check_volumes(project, body.volumes, image=body.image)
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
        time_limit_s=time_limit_s,
        requeue_on_preempt=body.requeue,
        depends_on=_dependencies(session, body.depends_on, principal=principal),
        workdir=body.workdir,
        output_path=body.output,
        error_path=body.error,
        workload=applied.workload,
        labels=dict(body.labels),
        volumes=volumes,
    )
    if feasibility is not None:
        never = feasibility(request_for(job))
        if never is not None:
            raise InvalidRequest(f"this job can never run on this cluster: {never.reason}",
                                 field=never.field_name or "resources")
    if runtime_check is not None:
        missing = runtime_check(job.image is not None)
        if missing is not None:
            raise InvalidRequest(f"this job can never run on this cluster: {missing}", field="image")
    needs = approvals.needs_approval(session, job=job, now=at)  # its project's policy or budget: pending_approval
    if body.array is None:
        return transitions.submit(session, job=job, who=who(principal), at=at, flush=flush, needs_approval=needs)
    return _submit_array(session, first=job, spec=arrays.parse(body.array), principal=principal, at=at,
                         needs_approval=needs, flush=flush)


ARRAY_COPIED = ("name", "project_id", "owner_token_id", "image", "command", "env", "gpus", "mig_profile",
                "mig_count", "blocks", "gpu_memory_mib", "gpu_models", "cpus", "memory_mib", "replicas",
                "priority_class", "priority", "time_limit_s", "requeue_on_preempt", "depends_on", "workdir",
                "output_path", "error_path",
                "workload", "labels", "volumes")


def _submit_array(session: Session, *, first: Job, spec: arrays.ArraySpec, principal: Principal,
                  at: datetime | None, needs_approval: str = "", flush: bool = True) -> Job:
    """Queue every task of an array (one transaction, one multi-row INSERT); returns the first task."""
    at = at or db_now(session)
    first.array_id, first.array_index, first.array_limit = first.id, spec.indices[0], spec.limit
    tasks = [first]
    for index in spec.indices[1:]:
        task = Job(id=new_id(), **{c: getattr(first, c) for c in ARRAY_COPIED})
        task.array_id, task.array_index, task.array_limit = first.id, index, spec.limit
        tasks.append(task)
    for task in tasks:
        transitions.submit(session, job=task, who=who(principal), at=at, flush=False, needs_approval=needs_approval)
    if flush:
        session.flush()
    return first


def time_limit_for(asked_s: int | None, *, class_name: str, klass: PriorityClass, settings: Settings) -> int | None:
    """The job's time limit: what it asked, else its class's default (Slurm's DefaultTime); bounded by the
    class's maximum (MaxTime) and the service's."""
    limit_s = asked_s if asked_s is not None else klass.default_time_limit_s
    if limit_s is not None and klass.max_time_limit_s is not None and limit_s > klass.max_time_limit_s:
        raise InvalidRequest(f"time_limit_s may be at most {klass.max_time_limit_s} for priority class "
                             f"{class_name!r}", field="time_limit_s")
    if limit_s is not None and limit_s > settings.max_time_limit_s:
        raise InvalidRequest(f"time_limit_s may be at most {settings.max_time_limit_s}", field="time_limit_s")
    return limit_s


def _dependencies(session: Session, deps: Sequence[DependencySpec], *, principal: Principal) -> list[dict[str, str]]:
    """Validate ``depends_on``: each job exists and the caller may see it (a member: their projects only).

    A dependency names a job that already exists, and a new job's id is made
    here, so no submission can close a cycle.
    """
    out: list[dict[str, str]] = []
    projects_of = dict(session.execute(  # one query for all of them
        select(Job.id, Project.name).join(Project, Project.id == Job.project_id)
        .where(Job.id.in_(sorted({d.job_id for d in deps})))
    ).all()) if deps else {}
    for index, dep in enumerate(deps):
        project = projects_of.get(dep.job_id)
        if project is None or not principal.can_see_project(project):
            raise InvalidRequest(f"depends_on[{index}]: no job {dep.job_id!r} that you may see",
                                 field=f"depends_on.{index}.job_id")
        if any(d["job_id"] == dep.job_id for d in out):
            raise InvalidRequest(f"depends_on[{index}]: job {dep.job_id} is named twice",
                                 field=f"depends_on.{index}.job_id")
        out.append({"job_id": dep.job_id, "condition": dep.condition})
    return out


def submit_many(
    session: Session, *, bodies: Sequence[JobSpec], principal: Principal, settings: Settings,
    feasibility: FeasibilityCheck | None = None, runtime_check: RuntimeCheck | None = None,
) -> list[Job]:
    """A job array: every job validated first, then all queued in one transaction, or none.

    An error names the job's index (``jobs[3]: ...``, field ``jobs.3.resources``).
    """
    classes = class_service.effective(session, settings=settings)
    workloads = workload_service.effective(session, settings=settings)
    projects: dict[str, Project] = {}
    at = db_now(session)
    jobs = []
    for index, body in enumerate(bodies):
        try:
            if body.array is not None:
                raise InvalidRequest("an array is one job of its own: submit it with POST /v1/jobs",
                                     field="array")
            jobs.append(submit(session, body=body, principal=principal, settings=settings, classes=classes,
                               projects=projects, workloads=workloads, feasibility=feasibility,
                               runtime_check=runtime_check, flush=False, at=at))
        except GpuqError as exc:
            exc.message = f"jobs[{index}]: {exc.message}"
            exc.field = f"jobs.{index}.{exc.field}" if exc.field else f"jobs.{index}"
            raise
    return jobs


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
    except Exception as exc:
        raise InvalidRequest("invalid cursor", field="cursor") from exc


def list_visible(
    session: Session,
    *,
    principal: Principal,
    project: str | None = None,
    state: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    id_prefix: str | None = None,
) -> tuple[list[tuple[Job, Project]], str | None]:
    """Newest first, keyset-paginated; ``id_prefix`` keeps the jobs whose id starts with it (``gpuq show 3f1c``)."""
    query = select(Job, Project).join(Project, Project.id == Job.project_id)
    if id_prefix is not None:
        query = query.where(Job.id.startswith(id_prefix.lower(), autoescape=True))
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
    found = session.execute(query.order_by(Job.submitted_at.desc(), Job.id.desc()).limit(limit + 1)).all()
    rows = [(r[0], r[1]) for r in found]
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


def cancel(session: Session, *, job_id: str, principal: Principal, settings: Settings) -> Job:
    """Cancel in any non-final state (a final job is returned unchanged), with the job's class grace; audited."""
    job, project = get_visible(session, job_id=job_id, principal=principal)
    if principal.role is Role.VIEWER or principal.role is Role.AGENT:
        raise Forbidden(f"role {principal.role.value} may not cancel jobs")
    session.refresh(job, with_for_update=True)
    before = {"state": job.state, "cancel_requested": bool(job.cancel_requested)}
    job = transitions.cancel(session, job=job, who=who(principal),
                             grace_s=grace.grace_s(session, settings=settings, priority_class=job.priority_class))
    after = {"state": job.state, "cancel_requested": bool(job.cancel_requested)}
    if after != before:
        audit.record(session, actor=principal, action="job.cancel", target=job.id, before=before,
                     after=after | {"project": project.name})
    return job


def history(session: Session, *, job: Job) -> list[JobEvent]:
    """The job's events, oldest first."""
    return events.for_job(session, job_id=job.id)


def read_logs(
    session: Session, *, job: Job, attempt: int | None = None, stdout_offset: int = 0, stderr_offset: int = 0
) -> dict[str, object]:
    """Log text after the given byte offsets, per stream, for one attempt (default: the latest)."""
    number = attempt if attempt is not None else job.attempt
    out: dict[str, object] = {"job_id": job.id, "attempt": number, "final": JobState(job.state) in FINAL_STATES}
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
