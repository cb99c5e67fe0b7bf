"""Builders of domain values for tests: one call each, sane defaults, keyword overrides.

Tests say only what matters to them::

    node("n", gpu("g0"), gpu("g1", held=True), cpus_milli=8000)
    pending("head", Request(gpus=2), priority=1000, at_s=5)
    running("r1", whole_gpus("n", "g0"), ends_in_s=600)
    snapshot([node("n", gpu("g0"))], [pending("j")], running=[...])
    register(api, agent_token, "n1", "h100-80gb:2")      # through the HTTP API
    api.post("/v1/jobs", json=job_body(resources={"blocks": 25}))

Every builder returns the real frozen value (``GpuState``, ``PendingJob``, …);
use ``dataclasses.replace`` for anything a keyword does not cover. Times are
relative to :data:`T0` (``at_s``, ``ends_in_s``, ``started_s_ago``) so tests
read as a timeline. A GPU's memory and SM count default to the catalogue's
figures for its model, as the agent reports them. The last section builds
what goes over the wire instead: agent inventories and job bodies.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from partitioner.catalog import lookup_model
from partitioner.types import (
    BLOCKS_PER_GPU,
    ClusterState,
    GpuMode,
    GpuState,
    MigInstance,
    NodeState,
    Placement,
    ReplicaPlacement,
    Request,
    Slice,
    SliceKind,
)
from queue_service.admission.snapshot import PendingJob, Quota, RunningJob, Snapshot
from queue_service.admission.state import apply_placements
from workers.inventory import parse_simulation
from workers.messages import NodeInventory

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

T0 = datetime(2026, 1, 1, 12, 0, 0)
"""The instant every relative time is measured from (the snapshots' ``now`` by default)."""

H100 = "h100-80gb"
H100_MIB = 81559  # what NVML reports for a whole H100 80GB (the catalogue's figure)
A100_40_MIB = 40960


def gpu(
    uuid: str = "g0",
    *,
    index: int = 0,
    model: str = H100,
    memory_mib: int | None = None,
    sm_count: int | None = None,
    mode: GpuMode = GpuMode.EXCLUSIVE,
    held: bool = False,
    used_blocks: int = 0,
    used_memory_mib: int = 0,
    mig_instances: tuple[MigInstance, ...] = (),
    nvlink_peers: tuple[int, ...] = (),
) -> GpuState:
    """One GPU, idle and exclusive unless told otherwise; memory and SMs from the catalogue."""
    if memory_mib is None or sm_count is None:
        known = lookup_model(model)
        if known is None:
            raise ValueError(f"{model!r} is not in the catalogue: pass memory_mib and sm_count")
        memory_mib = known.memory_mib if memory_mib is None else memory_mib
        sm_count = known.sm_count if sm_count is None else sm_count
    return GpuState(
        uuid=uuid, index=index, model=model, memory_mib=memory_mib, sm_count=sm_count, mode=mode, held=held,
        used_blocks=used_blocks, used_memory_mib=used_memory_mib, mig_instances=mig_instances,
        nvlink_peers=nvlink_peers,
    )


def gpus(prefix: str, count: int, **overrides: Any) -> tuple[GpuState, ...]:
    """``count`` alike GPUs ``{prefix}0``, ``{prefix}1``… with their index on the node."""
    return tuple(gpu(f"{prefix}{i}", index=i, **overrides) for i in range(count))


def node(
    node_id: str = "n",
    *gpus: GpuState,
    cpus_milli: int = 64_000,
    memory_mib: int = 512 * 1024,
    free_cpus_milli: int | None = None,
    free_memory_mib: int | None = None,
    labels: tuple[tuple[str, str], ...] = (),
) -> NodeState:
    """A node with ``gpus``; all its CPU and RAM free unless ``free_*`` says otherwise."""
    return NodeState(
        node_id=node_id, cpus_milli=cpus_milli, memory_mib=memory_mib,
        free_cpus_milli=cpus_milli if free_cpus_milli is None else free_cpus_milli,
        free_memory_mib=memory_mib if free_memory_mib is None else free_memory_mib,
        gpus=tuple(gpus), labels=labels,
    )


def cluster(*nodes: NodeState) -> ClusterState:
    """The cluster of these nodes (none: nothing is registered yet)."""
    return ClusterState(tuple(nodes))


def pending(
    job_id: str = "j",
    request: Request | None = None,
    *,
    project: str = "p",
    priority: int = 500,
    at_s: float = 0.0,
    submitted_at: datetime | None = None,
    priority_override: int | None = None,
    time_limit_s: int | None = None,
    fair_share: float = 0.0,
    preemptible: bool = False,
) -> PendingJob:
    """A queued job, one whole GPU by default, submitted ``at_s`` after :data:`T0` (or at ``submitted_at``)."""
    return PendingJob(
        job_id=job_id, project=project, request=Request(gpus=1) if request is None else request, priority=priority,
        submitted_at=T0 + timedelta(seconds=at_s) if submitted_at is None else submitted_at,
        priority_override=priority_override, time_limit_s=time_limit_s, fair_share=fair_share,
        preemptible=preemptible,
    )


def whole_gpus(node_id: str, *uuids: str, memory_mib: int = H100_MIB) -> Placement:
    """One replica on ``node_id`` holding the GPUs ``uuids`` whole."""
    slices = tuple(Slice(u, SliceKind.GPU, BLOCKS_PER_GPU, memory_mib) for u in uuids)
    return Placement((ReplicaPlacement(node_id, slices),))


def running(
    job_id: str,
    placement: Placement | None = None,
    *,
    project: str = "p",
    priority: int = 500,
    preemptible: bool = False,
    started_s_ago: float | None = 3600.0,
    ends_in_s: float | None = None,
    now: datetime = T0,
    gpu_equivalents: float = 1.0,
    stopping: bool = False,
    grace_s: float = 30.0,
) -> RunningJob:
    """A job holding ``placement`` (GPU ``g0`` of node ``n`` by default), started an hour before ``now``.

    ``ends_in_s`` None: no time limit, so no known end; ``started_s_ago`` None: admitted, not started.
    ``gpu_equivalents`` is what it counts against quotas (1.0: the default placement's one GPU).
    """
    return RunningJob(
        job_id=job_id, project=project, placement=whole_gpus("n", "g0") if placement is None else placement,
        effective_priority=priority, preemptible=preemptible,
        started_at=None if started_s_ago is None else now - timedelta(seconds=started_s_ago),
        expected_end=None if ends_in_s is None else now + timedelta(seconds=ends_in_s),
        gpu_equivalents=gpu_equivalents, stopping=stopping, grace_s=grace_s,
    )


def snapshot(
    nodes: ClusterState | Iterable[NodeState] = (),
    jobs: Iterable[PendingJob] = (),
    *,
    running: Iterable[RunningJob] = (),
    quotas: dict[str, Quota] | None = None,
    now: datetime = T0,
    min_run_s: float = 60.0,
) -> Snapshot:
    """What one admission cycle sees: ``nodes`` with the running jobs' placements already taken out."""
    base = nodes if isinstance(nodes, ClusterState) else ClusterState(tuple(nodes))
    held = tuple(running)
    return Snapshot(
        cluster=apply_placements(base, (r.placement for r in held)), pending=tuple(jobs), now=now, running=held,
        quotas=dict(quotas or {}), min_run_s=min_run_s,
    )


# -- what goes over the wire: agent inventories, job bodies ---------------------------------------


def inventory(node_name: str, gpus: str = "", *, cpus: int = 32, memory_mib: int = 256 * 1024,
              runtimes: list[str] | None = None) -> NodeInventory:
    """A node with simulated GPUs, e.g. ``inventory("n1", "h100-80gb:2")``."""
    return NodeInventory(
        node_name=node_name, hostname=node_name, boot_id="boot-" + node_name, cpus=cpus, memory_mib=memory_mib,
        gpus=parse_simulation(gpus, node_name=node_name) if gpus else [],
        gpu_source="simulated" if gpus else "none", gpu_note="" if gpus else "no GPUs",
        runtimes=list(runtimes) if runtimes is not None else ["process"],
    )


def register(api: TestClient, agent_token: str, node_name: str, gpus: str = "", **kw: Any) -> dict:
    """Register ``inventory(node_name, gpus, **kw)`` as the agent would; the service's answer."""
    response = api.post(
        "/v1/agent/register", json={"inventory": inventory(node_name, gpus, **kw).to_dict()},
        headers={"Authorization": f"Bearer {agent_token}"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def job_body(**overrides: Any) -> dict:
    """A valid job body; ``resources`` defaults to one whole GPU."""
    body: dict[str, Any] = {"name": "t", "project": "default", "command": ["true"], "resources": {"gpus": 1}}
    body.update(overrides)
    return body
