"""The admitter's read side: database rows -> the pure domain values a cycle decides on."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from partitioner.types import ClusterState, GpuMode, GpuState, MigInstance, NodeState
from queue_service import snapshots
from queue_service.admission.snapshot import PendingJob, Snapshot
from queue_service.db.base import utcnow
from queue_service.db.models import Gpu, Job, JobState, Node, NodeStatus, Project
from queue_service.db.priority_classes import effective
from queue_service.services import coexistence as coexistence_service
from queue_service.services import nodes as node_service
from queue_service.services import quotas as quota_service
from queue_service.services.convert import request_for, runtime_labels
from queue_service.settings import Settings


def build_cluster(session: Session, *, include_usage: bool = True, registered: bool = False) -> ClusterState:
    """The schedulable nodes (ready, not cordoned, lease valid) with their free capacity.

    ``registered``: every node that is not down instead — cordoned and
    draining ones too — for "could this job *ever* run here" (a node out of
    service for maintenance comes back).
    """
    now = utcnow()
    every = session.scalars(select(Node).order_by(Node.name)).all()
    nodes = [n for n in every if (n.status != NodeStatus.DOWN if registered else schedulable(n, now=now))]
    left_out = tuple(f"{n.name} {unschedulable_why(n, now=now)}" for n in every if not schedulable(n, now=now))
    if not nodes:
        return ClusterState((), unschedulable=left_out)
    usage = node_service.usage(session) if include_usage else {}
    gpus = session.scalars(
        select(Gpu).where(Gpu.present.is_(True), Gpu.node_id.in_([n.id for n in nodes])).order_by(Gpu.index)
    ).all()
    by_node: dict[str, list[Gpu]] = {}
    for gpu in gpus:
        by_node.setdefault(gpu.node_id, []).append(gpu)
    states = []
    for node in nodes:
        used = usage.get(node.id, node_service.NodeUsage())
        gpu_states = []
        for gpu in by_node.get(node.id, []):
            u = used.gpus.get(gpu.uuid, node_service.GpuUsage())
            mig = tuple(_instance(m, u) for m in gpu.mig_layout or [])
            missing = u.mig_held - {m.start for m in mig}
            if missing:  # held instances the layout does not list: never offer them again
                mig += tuple(MigInstance(profile=u.mig_profiles[s], start=s, held=True) for s in sorted(missing))
            unlisted = set(u.mig_blocks) - {m.start for m in mig}
            if unlisted:  # shared instances with blocks jobs the layout lost (a re-registration): count them
                mig += tuple(MigInstance(profile=u.mig_shared_profiles[s], start=s, mode=GpuMode.SHARED,
                                         used_blocks=u.mig_blocks[s], used_memory_mib=u.mig_memory_mib[s])
                             for s in sorted(unlisted))
            mig = _with_mps(mig, gpu.mps_status)
            gpu_states.append(
                GpuState(
                    uuid=gpu.uuid, index=gpu.index, model=gpu.model, memory_mib=gpu.memory_mib,
                    sm_count=gpu.sm_count, mode=GpuMode(gpu.mode), held=u.held_whole,
                    used_blocks=0 if u.held_whole else u.used_blocks, used_memory_mib=u.used_memory_mib,
                    mig_instances=mig, nvlink_peers=tuple(gpu.nvlink_peers or ()),
                    mps_failed=node_service.mps_failure(gpu.mps_status, gpu.uuid),
                )
            )
        states.append(
            NodeState(
                node_id=node.id, name=node.name, cpus_milli=node.cpus * 1000, memory_mib=node.memory_mib,
                free_cpus_milli=node.cpus * 1000 - used.cpus_milli, free_memory_mib=node.memory_mib - used.memory_mib,
                gpus=tuple(gpu_states),
                labels=tuple(sorted((node.labels or {}).items())) + runtime_labels(list(node.runtimes or [])),
            )
        )
    if include_usage:  # what the coexistence rules read: the workload classes each GPU and node holds
        states = list(coexistence_service.with_workloads(session, tuple(states)))
    return ClusterState(tuple(states), unschedulable=left_out)


def _instance(entry: dict, usage: node_service.GpuUsage) -> MigInstance:
    """One entry of ``Gpu.mig_layout`` with what is held on it.

    Shared when the layout says so (``"shared": true``, set when the admitter carved it for blocks) or
    when blocks jobs hold it: blocks on an instance count its SMs (100 blocks = the whole instance).
    """
    start = entry["start"]
    if entry.get("shared") or start in usage.mig_blocks:
        return MigInstance(profile=entry["profile"], start=start, uuid=entry.get("uuid"), mode=GpuMode.SHARED,
                           used_blocks=usage.mig_blocks.get(start, 0),
                           used_memory_mib=usage.mig_memory_mib.get(start, 0))
    return MigInstance(profile=entry["profile"], start=start, uuid=entry.get("uuid"), held=start in usage.mig_held)


def _with_mps(instances: tuple[MigInstance, ...], status: dict[str, str] | None) -> tuple[MigInstance, ...]:
    """The instances, each with why its MPS daemon failed (``gpus.mps_status``): those take no block job."""
    if not status:
        return instances
    return tuple(replace(m, mps_failed=why) if (why := node_service.mps_failure(status, m.uuid)) else m
                 for m in instances)


def schedulable(node: Node, *, now: datetime) -> bool:
    """Takes new work: ready, not cordoned, its lease valid (the agent heartbeats)."""
    return unschedulable_why(node, now=now) == ""


def unschedulable_why(node: Node, *, now: datetime) -> str:
    """Why a node takes no new work ("cordoned", "draining", "down", "not heartbeating"); "" if it does."""
    if node.status != NodeStatus.READY:
        return str(node.status)
    if node.cordoned:
        return "cordoned"
    expires = node.lease_expires_at
    if expires is None or _aware(expires) < _aware(now):
        return "not heartbeating"
    return ""


def _aware(at: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes; compare them as UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def queued(session: Session) -> list[tuple[Job, str]]:
    """The queued jobs that are not held, with their project names (the cycle's candidates)."""
    rows = session.execute(
        select(Job, Project.name).join(Project, Project.id == Job.project_id)
        .where(Job.state == JobState.QUEUED, Job.held.is_(False))
    ).all()
    return [(job, project) for job, project in rows]


def snapshot(session: Session, *, settings: Settings, rows: list[tuple[Job, str]], skip: Container[str] = (),
             now: datetime | None = None) -> Snapshot:
    """The cycle's snapshot over the queued ``rows`` (minus ``skip``), read in the cycle's transaction."""
    now = now or utcnow()
    classes = effective(session, settings=settings)
    cluster = build_cluster(session)
    rules = coexistence_service.effective(session, settings=settings)
    standing = snapshots.fair_share(session, now=now, half_life_s=settings.fair_share_half_life_s,
                                     charge=settings.fair_share_charge)
    pending = []
    for job, project in rows:
        if job.id in skip:
            continue
        klass = classes.get(job.priority_class)
        pending.append(PendingJob(
            job_id=job.id, project=project, request=request_for(job, rules=rules),
            priority=klass.value if klass else job.priority, submitted_at=job.submitted_at,
            priority_override=job.priority_override, time_limit_s=job.time_limit_s,
            fair_share=standing.get(project, 0.0), preemptible=bool(klass and klass.preemptible),
        ))
    return Snapshot(
        cluster=cluster, pending=tuple(pending), now=now,
        running=tuple(snapshots.running_jobs(session, now=now, classes=classes)),
        quotas=quota_service.all_quotas(session), min_run_s=settings.min_run_s,
    )
