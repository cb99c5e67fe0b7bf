"""Presenters: domain rows -> public schemas. The only place that knows both (services never import api)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from partitioner.catalog import find_mig_profile
from partitioner.types import BLOCKS_PER_GPU
from queue_service.admitter.read import unschedulable_why
from queue_service.api.schemas.admin import GpuPublic, HolderPublic, MigInstancePublic, NodePublic
from queue_service.api.schemas.jobs import (
    AllocationPublic,
    DependencyPublic,
    JobEventPublic,
    JobEventsPublic,
    JobPublic,
    ResourcesPublic,
    VolumePublic,
)
from queue_service.auth import Principal
from queue_service.db.base import utcnow
from queue_service.db.models import Job, JobEvent, JobState, Project, Role
from queue_service.services import holdings as holding_service
from queue_service.services import jobs as job_service
from queue_service.services import node_inventory
from queue_service.services import nodes as node_service
from workers.messages import GpuInfo

MASK = "***"


def env_for(principal: Principal, *, env: dict[str, str], project: str) -> dict[str, str]:
    """A job's environment as ``principal`` may see it: values in clear for admins and the project's own
    members, masked (``***``) for operators, viewers and everyone else (the names stay visible)."""
    if principal.role is Role.ADMIN or (principal.role is Role.MEMBER and project in principal.projects):
        return dict(env)
    return dict.fromkeys(env, MASK)


def job_public(session: Session, *, job: Job, project: Project, principal: Principal) -> JobPublic:
    """A job as ``principal`` may see it, with its current attempt's allocations (env values masked: ``env_for``)."""
    allocations = job_service.live_allocations(session, job=job) if job.attempt else []
    return JobPublic(
        id=job.id,
        name=job.name,
        project=project.name,
        image=job.image,
        command=job.command,
        env=env_for(principal, env=job.env or {}, project=project.name),
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
        workdir=job.workdir,
        output=job.output_path,
        error=job.error_path,
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
        stop_cause=job.stop_cause,
        depends_on=[DependencyPublic(job_id=d["job_id"], condition=d["condition"]) for d in job.depends_on or []],
        array_id=job.array_id,
        array_index=job.array_index,
        array_limit=job.array_limit,
        workload=job.workload or "batch",
        labels=dict(job.labels or {}),
        volumes=[VolumePublic(**v) for v in job.volumes or []],
        idle=job.idle_since is not None and job.state == JobState.RUNNING,
        idle_since=job.idle_since if job.state == JobState.RUNNING else None,
        allocation=[
            AllocationPublic(
                node=node_name, replica=a.replica, kind=a.kind, gpu_uuid=a.mig_uuid or a.gpu_uuid,
                blocks=a.blocks, gpu_memory_mib=a.gpu_memory_mib, mig_profile=a.mig_profile,
                mig_start=a.mig_start, cpus_milli=a.cpus_milli, memory_mib=a.memory_mib,
            )
            for a, node_name in allocations
        ],
    )


def events_public(rows: list[JobEvent]) -> JobEventsPublic:
    """A job's history as the API shows it."""
    data = [JobEventPublic.model_validate(r, from_attributes=True) for r in rows]
    return JobEventsPublic(data=data, count=len(data))


def nodes_public(session: Session, *, principal: Principal) -> list[NodePublic]:
    """Nodes, their GPUs and what is free on each: MIG instances and shares with their holders, a member
    seeing another project's holdings as occupied by "other project" (job ids only for its own)."""
    usage = node_service.usage(session)
    held_by = holding_service.by_gpu(session, principal=principal)
    now = utcnow()
    out = []
    for node, gpus in node_service.list_nodes(session):
        used = usage.get(node.id, node_service.NodeUsage())
        gpu_out = []
        for g in gpus:
            u = used.gpus.get(g.uuid, node_service.GpuUsage())
            used_memory = g.memory_mib if u.held_whole else u.used_memory_mib
            used_blocks = u.used_blocks
            instances = _mig_instances(g.model, g.mig_layout or [], u)
            mps = g.mps_status or {}  # revision 0015: each device's MPS daemon status
            instances = [i.model_copy(update={"mps": mps[i.uuid]}) if i.uuid and i.uuid in mps else i
                         for i in instances]
            if g.mode == "mig":  # what the held instances take: their memory and their share of the SMs
                held = [i for i in instances if i.held]
                used_memory = min(g.memory_mib, sum(i.memory_mib for i in held) + u.used_memory_mib)
                used_sm = (sum(_mig_sm(g.model, i.profile) for i in held)
                           + sum(i.sm_count * i.used_blocks / BLOCKS_PER_GPU for i in instances if i.mode == "shared"))
                used_blocks = min(BLOCKS_PER_GPU, round(BLOCKS_PER_GPU * used_sm / g.sm_count)) if g.sm_count else 0
            gpu_out.append(GpuPublic(
                uuid=g.uuid, index=g.index, name=g.name, model=g.model, memory_mib=g.memory_mib,
                sm_count=g.sm_count, mode=g.mode, mig_layout=g.mig_layout or [], held_whole=u.held_whole,
                mps=mps.get(g.uuid),
                used_blocks=used_blocks, free_blocks=BLOCKS_PER_GPU - used_blocks,
                used_memory_mib=used_memory, free_memory_mib=g.memory_mib - used_memory,
                jobs=sorted(u.jobs) if principal.sees_all_projects else [],
                mig_instances=instances,
                holders=[HolderPublic(kind=h.kind, blocks=h.blocks, gpu_memory_mib=h.gpu_memory_mib,
                                      mig_profile=h.mig_profile, mig_start=h.mig_start, project=h.project,
                                      job_id=h.job_id, job_name=h.job_name) for h in held_by.get(g.uuid, [])],
            ))
        why = unschedulable_why(node, now=now)
        out.append(NodePublic(
            id=node.id, name=node.name, hostname=node.hostname, status=node.status, cordoned=node.cordoned,
            cpus=node.cpus, memory_mib=node.memory_mib, free_cpus_milli=node.cpus * 1000 - used.cpus_milli,
            free_memory_mib=node.memory_mib - used.memory_mib, gpu_source=node.gpu_source, gpu_note=node.gpu_note,
            runtimes=list(node.runtimes or []), limits=node.limits or "env-only", drain_reason=node.drain_reason or "",
            schedulable=not why, no_work_reason=why,
            last_heartbeat_at=node.last_heartbeat_at, gpus=gpu_out,
            pending_gpus=node_inventory.summary(GpuInfo.from_dict(g) for g in node.pending_gpus)
            if node.pending_gpus is not None else "",
            pending_since=node.pending_since,
        ))
    return out


def _mig_sm(model: str, profile: str) -> int:
    found = find_mig_profile(model, profile)
    return found.sm_count if found else 0


def _mig_instances(model: str, layout: list[dict], u: node_service.GpuUsage) -> list[MigInstancePublic]:
    """The layout's instances, each free, held or shared (with what its block jobs hold); a held or shared
    one the layout does not list is shown too."""
    def one(profile: str, start: int, uuid: str | None, shared: bool = False) -> MigInstancePublic:
        found = find_mig_profile(model, profile)
        shared = shared or start in u.mig_blocks
        return MigInstancePublic(profile=profile, start=start, uuid=uuid, memory_mib=found.memory_mib if found else 0,
                                 held=start in u.mig_held, mode="shared" if shared else "exclusive",
                                 sm_count=found.sm_count if found else 0, used_blocks=u.mig_blocks.get(start, 0),
                                 used_memory_mib=u.mig_memory_mib.get(start, 0))
    out = [one(m["profile"], m["start"], m.get("uuid"), bool(m.get("shared"))) for m in layout]
    listed = {m["start"] for m in layout}
    out += [one(u.mig_profiles.get(s, ""), s, None) for s in sorted(u.mig_held - listed)]
    out += [one(u.mig_shared_profiles.get(s, ""), s, None, True) for s in sorted(set(u.mig_blocks) - listed)]
    return sorted(out, key=lambda i: i.start)
