"""The admitter's read side: database rows -> the pure domain values a cycle decides on."""

from __future__ import annotations

import json
from collections.abc import Container, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import String, cast, select
from sqlalchemy.orm import Session

from partitioner.types import ClusterState, GpuMode, GpuState, MigInstance, NodeState, Request
from queue_service import snapshots
from queue_service.admission.snapshot import PendingJob, Snapshot
from queue_service.db.base import in_chunks, utcnow
from queue_service.db.models import Gpu, Job, JobState, Node, NodeStatus, Project
from queue_service.db.priority_classes import effective
from queue_service.services import coexistence as coexistence_service
from queue_service.services import nodes as node_service
from queue_service.services import quotas as quota_service
from queue_service.services.convert import Shape, request_for, runtime_labels
from queue_service.settings import Settings


class _NodeRow(NamedTuple):
    """The columns of a ``Node`` a cycle reads (its JSON columns as text: see ``_decoded``)."""

    id: str
    name: str
    status: str
    cordoned: bool
    lease_expires_at: datetime | None
    cpus: int
    memory_mib: int
    labels: str | None
    runtimes: str | None


_NODE_COLUMNS = (Node.id, Node.name, Node.status, Node.cordoned, Node.lease_expires_at, Node.cpus, Node.memory_mib,
                 cast(Node.labels, String), cast(Node.runtimes, String))
_GPU_COLUMNS = (Gpu.node_id, Gpu.uuid, Gpu.index, Gpu.model, Gpu.memory_mib, Gpu.sm_count, Gpu.mode,
                cast(Gpu.mig_layout, String), cast(Gpu.nvlink_peers, String), cast(Gpu.mps_status, String))
_GPU_MODES = {str(mode): mode for mode in GpuMode}


def build_cluster(session: Session, *, include_usage: bool = True, registered: bool = False) -> ClusterState:
    """The schedulable nodes (ready, not cordoned, lease valid) with their free capacity.

    ``registered``: every node that is not down instead — cordoned and
    draining ones too — for "could this job *ever* run here" (a node out of
    service for maintenance comes back).
    """
    # Columns, not entities, and each distinct JSON text decoded once: on 1,000 nodes x 8 GPUs the ORM read
    # (9,000 entities, four JSON decodes per GPU) was 775 ms of a cycle on PostgreSQL; this read is 65-150 ms.
    now = utcnow()
    every = [_NodeRow(*row) for row in session.execute(select(*_NODE_COLUMNS).order_by(Node.name))]
    nodes = [n for n in every if (n.status != NodeStatus.DOWN if registered else schedulable(n, now=now))]
    left_out = tuple(f"{n.name} {unschedulable_why(n, now=now)}" for n in every if not schedulable(n, now=now))
    if not nodes:
        return ClusterState((), unschedulable=left_out)
    usage = node_service.usage(session) if include_usage else {}
    # what the coexistence rules read: the workload classes each node, GPU and MIG instance holds
    held = coexistence_service.held_workloads(session) if include_usage else coexistence_service.NOTHING_HELD
    wanted = {n.id for n in nodes}
    by_node: dict[str, list[Any]] = {}
    for gpu in session.execute(select(*_GPU_COLUMNS).where(Gpu.present.is_(True)).order_by(Gpu.index)):
        if gpu[0] in wanted:
            by_node.setdefault(gpu[0], []).append(gpu)
    memo: dict[str | None, Any] = {}
    no_node_usage, no_gpu_usage = node_service.NodeUsage(), node_service.GpuUsage()
    states = []
    for node in nodes:
        used = usage.get(node.id, no_node_usage)
        gpu_states = []
        for _node_id, uuid, index, model, memory_mib, sm_count, mode, layout, peers, mps in by_node.get(node.id, ()):
            u = used.gpus.get(uuid, no_gpu_usage)
            # a status only matters where a daemon failed: the rest ("ready" on every GPU) need not be decoded
            status = _decoded(memo, mps) if mps is not None and "failed: " in mps else None
            gpu_states.append(
                GpuState(
                    uuid=uuid, index=index, model=model, memory_mib=memory_mib, sm_count=sm_count,
                    mode=_GPU_MODES[mode], held=u.held_whole,
                    used_blocks=0 if u.held_whole else u.used_blocks, used_memory_mib=u.used_memory_mib,
                    mig_instances=_with_mps(_instances(_decoded(memo, layout), u, uuid, held.per_instance), status),
                    nvlink_peers=tuple(_decoded(memo, peers) or ()),
                    mps_failed=node_service.mps_failure(status, uuid), workloads=held.per_gpu.get(uuid, ()),
                )
            )
        labels = tuple(sorted((_decoded(memo, node.labels) or {}).items()))
        states.append(
            NodeState(
                node_id=node.id, name=node.name, cpus_milli=node.cpus * 1000, memory_mib=node.memory_mib,
                free_cpus_milli=node.cpus * 1000 - used.cpus_milli, free_memory_mib=node.memory_mib - used.memory_mib,
                gpus=tuple(gpu_states),
                labels=labels + runtime_labels(list(_decoded(memo, node.runtimes) or [])),
                workloads=held.per_node.get(node.id, ()),
            )
        )
    return ClusterState(tuple(states), unschedulable=left_out)


def _decoded(memo: dict[str | None, Any], text: str | None) -> Any:
    """A JSON column's stored text -> its value, decoded once per distinct text (GPUs of one model share
    their layouts and peer lists). The value is shared: read it, never change it."""
    try:
        return memo[text]
    except KeyError:
        value = memo[text] = None if text is None else json.loads(text)
        return value


def _instances(layout: list[dict] | None, u: node_service.GpuUsage, uuid: str,
               workloads: Mapping[tuple[str, int], tuple[str, ...]]) -> tuple[MigInstance, ...]:
    """A GPU's MIG instances: its layout's, with what is held on them (and the workload classes holding them),
    and those live allocations hold that the layout does not list."""
    if not layout and not (u.mig_held or u.mig_blocks):
        return ()  # most GPUs: no MIG at all
    mig = tuple(_instance(m, u, workloads.get((uuid, m["start"]), ())) for m in layout or ())
    if not (u.mig_held or u.mig_blocks):
        return mig
    missing = u.mig_held - {m.start for m in mig}
    if missing:  # held instances the layout does not list: never offer them again
        mig += tuple(MigInstance(profile=u.mig_profiles[s], start=s, held=True, workloads=workloads.get((uuid, s), ()))
                     for s in sorted(missing))
    unlisted = set(u.mig_blocks) - {m.start for m in mig}
    if unlisted:  # shared instances with blocks jobs the layout lost (a re-registration): count them
        mig += tuple(MigInstance(profile=u.mig_shared_profiles[s], start=s, mode=GpuMode.SHARED,
                                 used_blocks=u.mig_blocks[s], used_memory_mib=u.mig_memory_mib[s],
                                 workloads=workloads.get((uuid, s), ()))
                     for s in sorted(unlisted))
    return mig


def _instance(entry: dict, usage: node_service.GpuUsage, workloads: tuple[str, ...]) -> MigInstance:
    """One entry of ``Gpu.mig_layout`` with what is held on it.

    Shared when the layout says so (``"shared": true``, set when the admitter carved it for blocks) or
    when blocks jobs hold it: blocks on an instance count its SMs (100 blocks = the whole instance).
    """
    start = entry["start"]
    if entry.get("shared") or start in usage.mig_blocks:
        return MigInstance(profile=entry["profile"], start=start, uuid=entry.get("uuid"), mode=GpuMode.SHARED,
                           used_blocks=usage.mig_blocks.get(start, 0),
                           used_memory_mib=usage.mig_memory_mib.get(start, 0), workloads=workloads)
    return MigInstance(profile=entry["profile"], start=start, uuid=entry.get("uuid"), held=start in usage.mig_held,
                       workloads=workloads)


def _with_mps(instances: tuple[MigInstance, ...], status: dict[str, str] | None) -> tuple[MigInstance, ...]:
    """The instances, each with why its MPS daemon failed (``gpus.mps_status``): those take no block job."""
    if not status:
        return instances
    return tuple(replace(m, mps_failed=why) if (why := node_service.mps_failure(status, m.uuid)) else m
                 for m in instances)


class _Leased(Protocol):
    """What says whether a node takes work: a ``Node`` or the columns a cycle reads of one."""

    @property
    def status(self) -> str: ...
    @property
    def cordoned(self) -> bool: ...
    @property
    def lease_expires_at(self) -> datetime | None: ...


def schedulable(node: _Leased, *, now: datetime) -> bool:
    """Takes new work: ready, not cordoned, its lease valid (the agent heartbeats)."""
    return unschedulable_why(node, now=now) == ""


def unschedulable_why(node: _Leased, *, now: datetime) -> str:
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


class QueuedJob(NamedTuple):
    """One queued job as a cycle reads it: the columns it decides on, not a ``Job`` entity.

    With thousands queued, loading every job as an entity (every column, seven JSON decodes each) was
    most of a cycle's time, each cycle; the few jobs a cycle changes are loaded as entities (``entities``).
    A tuple, as ``Shape``: a frozen dataclass took as long to build as the rest of the read.
    """

    id: str
    project: str
    project_id: str
    priority_class: str
    priority: int
    priority_override: int | None
    time_limit_s: int | None
    submitted_at: datetime
    reason: str
    gated: bool  # a launch back-off, dependency, array limit or approval deadline: the lifecycle's gates read it
    shape: Shape


# The three JSON lists come as their text: almost all are empty ("[]"), and decoding 3 JSON values
# per row was half of this read (3,000 queued rows on PostgreSQL: 66 ms, 52 % in json.loads).
_QUEUED_COLUMNS = (
    Job.id, Project.name, Job.project_id, Job.priority_class, Job.priority, Job.priority_override,
    Job.time_limit_s, Job.submitted_at, Job.reason, Job.retry_not_before,
    cast(Job.depends_on, String).label("depends_on"), Job.array_limit,
    Job.approval_expires_at, Job.gpus, Job.mig_profile, Job.mig_count, Job.blocks, Job.gpu_memory_mib,
    cast(Job.gpu_models, String).label("gpu_models"), Job.cpus, Job.memory_mib, Job.replicas, Job.image,
    Job.workload, cast(Job.avoid_nodes, String).label("avoid_nodes"),
)
_EMPTY_JSON = frozenset((None, "[]", "null", ""))


def _strings(stored: str | None) -> tuple[str, ...]:
    """A JSON list of strings as its stored text -> the tuple (decoded only when not empty)."""
    return () if stored in _EMPTY_JSON else tuple(json.loads(stored))  # type: ignore[arg-type]


def queued(session: Session) -> list[QueuedJob]:
    """The queued jobs that are not held, with their project names (the cycle's candidates)."""
    # Core, not the ORM: these are plain columns, and the ORM's row loading was 40 % of this read
    # (3,000 queued rows on PostgreSQL: 64 ms through the ORM).
    rows = session.connection().execute(
        select(*_QUEUED_COLUMNS).join(Project, Project.id == Job.project_id)
        .where(Job.state == JobState.QUEUED, Job.held.is_(False))
    ).all()
    shapes: dict[tuple, Shape] = {}  # a storm queues thousands of jobs of a few shapes: one Shape each
    out = []
    for (job_id, project, project_id, priority_class, priority, priority_override, time_limit_s, submitted_at,
         reason, retry_not_before, depends_on, array_limit, approval_expires_at, *shape_columns) in rows:
        key = tuple(shape_columns)
        shape = shapes.get(key)
        if shape is None:
            gpus, mig_profile, mig_count, blocks, gpu_memory_mib, gpu_models, cpus, memory_mib, replicas, image, \
                workload, avoid_nodes = shape_columns
            shape = shapes[key] = Shape(
                gpus=gpus, mig_profile=mig_profile, mig_count=mig_count, blocks=blocks,
                gpu_memory_mib=gpu_memory_mib, gpu_models=_strings(gpu_models), cpus=cpus, memory_mib=memory_mib,
                replicas=replicas, image=image, workload=workload or "", avoid_nodes=_strings(avoid_nodes))
        out.append(QueuedJob(
            id=job_id, project=project, project_id=project_id, priority_class=priority_class, priority=priority,
            priority_override=priority_override, time_limit_s=time_limit_s, submitted_at=submitted_at,
            reason=reason,
            gated=bool(retry_not_before is not None or depends_on not in _EMPTY_JSON or array_limit
                       or approval_expires_at is not None),
            shape=shape,
        ))
    return out


def entities(session: Session, job_ids: Iterable[str]) -> dict[str, Job]:
    """The ``Job`` entities of ``job_ids`` (those the cycle gates, admits or gives a new wait reason)."""
    ids = sorted(set(job_ids))
    out: dict[str, Job] = {}
    for chunk in in_chunks(ids):
        out.update((job.id, job) for job in session.scalars(select(Job).where(Job.id.in_(chunk))))
    return out


def snapshot(session: Session, *, settings: Settings, rows: list[QueuedJob], skip: Container[str] = (),
             now: datetime | None = None) -> Snapshot:
    """The cycle's snapshot over the queued ``rows`` (minus ``skip``), read in the cycle's transaction."""
    now = now or utcnow()
    classes = effective(session, settings=settings)
    cluster = build_cluster(session)
    rules = coexistence_service.effective(session, settings=settings)
    standing = snapshots.fair_share(session, now=now, half_life_s=settings.fair_share_half_life_s,
                                     charge=settings.fair_share_charge)
    pending = []
    requests: dict[Shape, Request] = {}  # one per distinct shape: a queue holds many jobs of few shapes
    for job in rows:
        if job.id in skip:
            continue
        klass = classes.get(job.priority_class)
        request = requests.get(job.shape)
        if request is None:
            request = requests[job.shape] = request_for(job.shape, rules=rules)
        pending.append(PendingJob(
            job_id=job.id, project=job.project, request=request,
            priority=klass.value if klass else job.priority, submitted_at=job.submitted_at,
            priority_override=job.priority_override, time_limit_s=job.time_limit_s,
            fair_share=standing.get(job.project, 0.0), preemptible=bool(klass and klass.preemptible),
        ))
    return Snapshot(
        cluster=cluster, pending=tuple(pending), now=now,
        running=tuple(snapshots.running_jobs(session, now=now, classes=classes)),
        quotas=quota_service.all_quotas(session), min_run_s=settings.min_run_s,
    )
