"""Nodes and their GPUs: registration, heartbeats, leases, and what is free.

Lease times come from the database's clock (:func:`db_now`: PostgreSQL's
``clock_timestamp()``), never from an agent's and not from whichever API
replica answered, so every replica and the admitter agree on who is alive.

Lock order, for every transaction that takes more than one of these rows:
the node's row first (:func:`lock`; a heartbeat's lease update takes it),
then job rows (in id order, ``recovery.lock_jobs``), then the usage rollup
rows (closing intervals). A heartbeat that loses a vanished attempt goes
node -> job; an exit that blames the node (``node_fault``) takes the node
before its job (``api.routes.agent``): the other way round the two waited
for each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, case, select, update
from sqlalchemy.orm import Session

from partitioner.catalog import model_for_nvml
from partitioner.types import BLOCKS_PER_GPU, GpuMode
from queue_service.auth import Principal
from queue_service.db.clock import db_now
from queue_service.db.models import LIVE_STATES, Allocation, Attempt, Gpu, Job, Node, NodeStatus, Role
from queue_service.errors import Conflict, Forbidden, NotFound
from queue_service.lifecycle import effects
from queue_service.services import audit, node_inventory
from workers.messages import GpuInfo, NodeInventory


@dataclass(slots=True)
class GpuUsage:
    """What live allocations hold on one GPU."""

    held_whole: bool = False
    used_blocks: int = 0
    used_memory_mib: int = 0
    mig_held: set[int] = field(default_factory=set)  # MIG starts held
    mig_profiles: dict[int, str] = field(default_factory=dict)  # start -> profile of held instances
    jobs: set[str] = field(default_factory=set)
    # blocks jobs on shared MIG instances, per instance start: blocks and memory held, the instance's profile
    # (these blocks and this memory are counted in used_blocks / used_memory_mib too)
    mig_blocks: dict[int, int] = field(default_factory=dict)
    mig_memory_mib: dict[int, int] = field(default_factory=dict)
    mig_shared_profiles: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class NodeUsage:
    cpus_milli: int = 0
    memory_mib: int = 0
    gpus: dict[str, GpuUsage] = field(default_factory=dict)


def check_agent(principal: Principal, node_name: str) -> None:
    """Agents act for their own node only (every agent token is bound to one), admins for any.

    A token made before binding was required (no ``node_name``) speaks for
    no node: refused, so it cannot adopt, report or read another node's jobs.
    """
    if principal.role is Role.ADMIN:
        return
    principal.require(Role.AGENT)
    if principal.node_name is None:
        raise Forbidden("this agent token is bound to no node; make one with --node-name (gpuq admin token create)")
    if principal.node_name != node_name:
        raise Forbidden(f"this agent token is bound to node {principal.node_name!r}, not {node_name!r}")


def register(session: Session, *, inventory: NodeInventory, lease_s: float, max_gpus: int = 16) -> Node:
    """Create or refresh a node and its GPUs from an agent's inventory (checked: ``node_inventory``).

    A known node's GPUs that grew (more, new, other models) are held in
    ``pending_gpus`` until :func:`accept`; until then it keeps the accepted
    ones that it still reports.
    """
    node_inventory.validate(inventory, max_gpus=max_gpus)
    now = db_now(session)
    node = session.scalar(select(Node).where(Node.name == inventory.node_name))
    first = node is None
    if node is None:
        node = Node(name=inventory.node_name)
        session.add(node)
    node.hostname = inventory.hostname
    node.boot_id = inventory.boot_id
    node.cpus = inventory.cpus
    node.memory_mib = inventory.memory_mib
    node.gpu_source = inventory.gpu_source
    node.gpu_note = inventory.gpu_note
    node.runtimes = list(inventory.runtimes)
    node.limits = inventory.limits
    node.last_heartbeat_at = now
    node.lease_expires_at = now + timedelta(seconds=lease_s)
    if node.status == NodeStatus.DOWN:
        node.status = NodeStatus.READY
    session.flush()
    existing = {g.uuid: g for g in session.scalars(select(Gpu).where(Gpu.node_id == node.id))}
    accepted = [node_inventory.Accepted(g.uuid, g.model, g.memory_mib) for g in existing.values()]
    why = {} if first else node_inventory.needs_acceptance(accepted, inventory.gpus)
    if not why:
        node.pending_gpus, node.pending_since = None, None
        _apply_gpus(session, node, existing, inventory.gpus)
        return node
    offered = [g.to_dict() for g in inventory.gpus]
    if node.pending_gpus != offered:
        node.pending_gpus, node.pending_since = offered, now
        audit.record(session, actor=f"agent:{node.name}", action="node.gpus_held", target=node.name,
                     reason="; ".join(why.values())[:2000], before={"gpus": node_inventory.summary(accepted)},
                     after={"gpus": node_inventory.summary(inventory.gpus)})
    _apply_gpus(session, node, existing, [g for g in inventory.gpus if g.uuid in existing and g.uuid not in why])
    return node


def _apply_gpus(session: Session, node: Node, existing: dict[str, Gpu], gpus: list[GpuInfo]) -> None:
    """Make ``gpus`` the node's present GPUs (rows made or refreshed; the others marked absent)."""
    seen = set()
    for info in gpus:
        model = model_for_nvml(info.model or info.name, info.memory_mib, info.sm_count)
        gpu = existing.get(info.uuid)
        if gpu is None:
            gpu = Gpu(uuid=info.uuid, node_id=node.id, mode=GpuMode.MIG if info.mig_enabled else GpuMode.EXCLUSIVE)
            session.add(gpu)
        gpu.node_id = node.id
        gpu.index = info.index
        gpu.name = info.name
        gpu.model = model.key
        gpu.memory_mib = info.memory_mib
        gpu.sm_count = info.sm_count
        gpu.mig_enabled = info.mig_enabled
        # the admitter's choice of shared instances outlives a re-probe (NVML knows nothing of MPS)
        shared = {(m["profile"], m["start"]) for m in gpu.mig_layout or [] if m.get("shared")}
        gpu.mig_layout = [
            {"profile": m.profile, "start": m.start, "uuid": m.uuid, "memory_mib": m.memory_mib}
            | ({"shared": True} if (m.profile, m.start) in shared else {})
            for m in info.mig_devices
        ]
        gpu.nvlink_peers = list(info.nvlink_peers)
        gpu.present = True
        seen.add(info.uuid)
    for uuid, gpu in existing.items():
        if uuid not in seen:
            gpu.present = False
    session.flush()


def accept(session: Session, *, name: str, actor: Principal, reason: str = "") -> Node:
    """An admin accepts a node's held GPU change: its pending inventory becomes its GPUs. Audited."""
    node = session.scalar(select(Node).where(Node.name == name).with_for_update())
    if node is None:
        raise NotFound(f"node {name} not found")
    if node.pending_gpus is None:
        raise Conflict(f"node {name} has no GPU change waiting for acceptance")
    offered = [GpuInfo.from_dict(g) for g in node.pending_gpus]
    existing = {g.uuid: g for g in session.scalars(select(Gpu).where(Gpu.node_id == node.id))}
    before = node_inventory.summary(node_inventory.Accepted(g.uuid, g.model, g.memory_mib)
                                    for g in existing.values() if g.present)
    _apply_gpus(session, node, existing, offered)
    node.pending_gpus, node.pending_since = None, None
    audit.record(session, actor=actor, action="node.accept", target=name, reason=reason, before={"gpus": before},
                 after={"gpus": node_inventory.summary(offered)})
    effects.queue(session, cluster_changed=True, wake=True)  # "never fits" answers may change
    return node


def lock(session: Session, name: str) -> Node | None:
    """The node's row, locked for the transaction (taken before any job row: the module's lock order)."""
    return session.scalar(select(Node).where(Node.name == name).with_for_update())


def heartbeat(session: Session, *, node_name: str, lease_s: float,
              mps: dict[str, str] | None = None) -> Node | None:
    """Extend the node's lease by ``lease_s`` from now (database clock); None for an unknown node.

    ``mps``: the agent's MPS status per device (:func:`record_mps`); None leaves the stored one.

    One ``UPDATE .. RETURNING`` (after the clock read) instead of a SELECT of the node and an UPDATE at the
    next flush: every host sends one every few seconds, a thousand hosts hundreds a second.
    """
    now = db_now(session)
    node = session.scalar(
        update(Node).where(Node.name == node_name)
        .values(last_heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_s),
                status=case((Node.status == NodeStatus.DOWN.value, NodeStatus.READY.value), else_=Node.status))
        .returning(Node).execution_options(populate_existing=True)
    )
    if node is None:
        return None
    if mps is not None:
        record_mps(session, node=node, mps=mps)
    return node


def record_mps(session: Session, *, node: Node, mps: dict[str, str]) -> bool:
    """Store each GPU's MPS status from an agent's ``{device uuid: "ready" | "failed: …"}``; True if any changed.

    A GPU row keeps the entries of its own UUID and of its MIG instances'
    UUIDs (``gpus.mps_status``); a device the agent left out has no status
    (never shared, or its daemon stopped). A change wakes the admitter and
    clears its "never fits" answers: a device whose daemon failed takes no
    block job (``admitter.read`` -> ``GpuState.mps_failed``), one that is
    ready again does.
    """
    changed = False
    for gpu in session.scalars(select(Gpu).where(Gpu.node_id == node.id)).all():
        devices = {gpu.uuid} | {m["uuid"] for m in gpu.mig_layout or [] if m.get("uuid")}
        mine = {uuid: status for uuid, status in sorted(mps.items()) if uuid in devices} or None
        if mine != gpu.mps_status:
            gpu.mps_status = mine
            changed = True
    if changed:
        effects.queue(session, cluster_changed=True, wake=True)
    return changed


def mps_failure(status: dict[str, str] | None, uuid: str | None) -> str:
    """Why ``uuid``'s MPS daemon is not ready ("" when it is ready or has no status)."""
    if not status or uuid is None:
        return ""
    value = status.get(uuid, "")
    return value.removeprefix("failed: ") if value.startswith("failed: ") else ""


def expire_leases(session: Session) -> list[Node]:
    """Mark nodes whose lease ran out as down; returns them (``recovery`` requeues their jobs)."""
    now = db_now(session)
    stale = session.scalars(
        select(Node).where(Node.status != NodeStatus.DOWN, Node.lease_expires_at < now)
    ).all()
    for node in stale:
        node.status = NodeStatus.DOWN
    return list(stale)


AttemptKey = tuple[str, int, int]  # (job_id, attempt, replica)


def _placed_on(node_name: str, *columns: Any) -> Select:
    """The one rule of what should run on a node: live allocations of live jobs' current, unended attempts
    (replicas that reported their end are filtered by the callers, from ``Attempt.exits``)."""
    return (
        select(*columns)
        .join(Node, Node.id == Allocation.node_id)
        .join(Job, Job.id == Allocation.job_id)
        .join(Attempt, (Attempt.job_id == Job.id) & (Attempt.number == Job.attempt))
        .where(Node.name == node_name, Allocation.released_at.is_(None), Allocation.attempt == Job.attempt)
        .where(Job.state.in_([s.value for s in LIVE_STATES]), Attempt.ended_at.is_(None))
    )


def current_attempts(session: Session, *, node_name: str) -> dict[AttemptKey, tuple[Job, Attempt]]:
    """What the database says should run on ``node_name`` now, by ``(job_id, attempt, replica)``.

    Live allocations of live jobs' current attempts whose replica has not
    reported its end. Anything an agent runs that is not in here is stale.
    """
    rows = session.execute(_placed_on(node_name, Allocation.replica, Job, Attempt)).all()
    return {
        (job.id, job.attempt, replica): (job, attempt)
        for replica, job, attempt in rows
        if str(replica) not in (attempt.exits or {})
    }


@dataclass(frozen=True, slots=True)
class Placed:
    """What a heartbeat needs of an attempt the database places on the node (no ORM rows: a heartbeat of a
    busy node loaded every job's 50 columns, on every node, every few seconds)."""

    state: str  # the job's
    started_at: datetime | None  # the attempt's start claim


def placed_attempts(session: Session, *, node_name: str) -> dict[AttemptKey, Placed]:
    """The keys of :func:`current_attempts`, with the job's state and the attempt's start, in plain columns."""
    rows = session.execute(_placed_on(node_name, Allocation.replica, Job.id, Job.attempt, Job.state,
                                      Attempt.started_at, Attempt.exits)).all()
    return {
        (job_id, attempt, replica): Placed(state, started_at)
        for replica, job_id, attempt, state, started_at, exits in rows
        if str(replica) not in (exits or {})
    }


_USAGE_COLUMNS = (Allocation.node_id, Allocation.gpu_uuid, Allocation.job_id, Allocation.kind, Allocation.cpus_milli,
                  Allocation.memory_mib, Allocation.mig_start, Allocation.mig_profile, Allocation.blocks,
                  Allocation.gpu_memory_mib)


def usage(session: Session) -> dict[str, NodeUsage]:
    """Live allocations summed per node and GPU."""
    # Columns, not entities: a full 8,000-GPU cluster holds thousands of live allocations, read each cycle.
    result: dict[str, NodeUsage] = {}
    rows = session.execute(select(*_USAGE_COLUMNS).where(Allocation.released_at.is_(None)))
    for node_id, gpu_uuid, job_id, kind, cpus_milli, memory_mib, mig_start, mig_profile, blocks, gpu_memory_mib in rows:
        node = result.get(node_id)
        if node is None:
            node = result[node_id] = NodeUsage()
        node.cpus_milli += cpus_milli
        node.memory_mib += memory_mib
        if gpu_uuid is None:
            continue
        gpu = node.gpus.get(gpu_uuid)
        if gpu is None:
            gpu = node.gpus[gpu_uuid] = GpuUsage()
        gpu.jobs.add(job_id)
        if kind == "gpu":
            gpu.held_whole = True
            gpu.used_blocks = BLOCKS_PER_GPU
        elif kind == "mig" and mig_start is not None:
            gpu.mig_held.add(mig_start)
            gpu.mig_profiles[mig_start] = mig_profile or ""
        elif kind == "blocks":
            gpu.used_blocks += blocks
            gpu.used_memory_mib += gpu_memory_mib
            if mig_start is not None:  # on a shared MIG instance
                gpu.mig_blocks[mig_start] = gpu.mig_blocks.get(mig_start, 0) + blocks
                gpu.mig_memory_mib[mig_start] = gpu.mig_memory_mib.get(mig_start, 0) + gpu_memory_mib
                gpu.mig_shared_profiles[mig_start] = mig_profile or ""
    return result


def list_nodes(session: Session) -> list[tuple[Node, list[Gpu]]]:
    nodes = session.scalars(select(Node).order_by(Node.name)).all()
    gpus = session.scalars(select(Gpu).where(Gpu.present.is_(True)).order_by(Gpu.node_id, Gpu.index)).all()
    by_node: dict[str, list[Gpu]] = {}
    for gpu in gpus:
        by_node.setdefault(gpu.node_id, []).append(gpu)
    return [(n, by_node.get(n.id, [])) for n in nodes]
