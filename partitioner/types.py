"""Plain data the partitioner speaks: cluster state in, placements out.

This module is the contract between ``queue_service`` (which builds a
:class:`ClusterState` from its snapshot and asks where a :class:`Request`
goes) and the placement code. Everything here is an immutable value with
no behaviour beyond validation-free convenience properties, so both sides
can build and compare them in tests.

Units: memory in MiB, CPU in millicores (1000 = one core), compute share in
blocks (1 block = 1 % of a GPU's SMs; a whole GPU is 100 blocks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

BLOCKS_PER_GPU = 100


class GpuMode(StrEnum):
    """How a GPU (or a MIG instance) is handed out."""

    EXCLUSIVE = "exclusive"  # one job holds it whole
    SHARED = "shared"  # 100 compute blocks + a memory budget, enforced by MPS
    MIG = "mig"  # carved into MIG GPU instances


class SliceKind(StrEnum):
    """What one allocated slice is."""

    GPU = "gpu"  # a whole GPU in exclusive mode
    MIG = "mig"  # a whole MIG GPU instance
    BLOCKS = "blocks"  # a share of a shared GPU (or of a shared MIG instance)


@dataclass(frozen=True, slots=True)
class MigInstance:
    """One MIG GPU instance of a GPU in ``mig`` mode, with its occupancy."""

    profile: str  # profile name on this GPU model, e.g. "3g.40gb"
    start: int  # first memory slice of the placement
    uuid: str | None = None  # "MIG-…" when a real device reports it
    mode: GpuMode = GpuMode.EXCLUSIVE  # EXCLUSIVE or SHARED, never MIG
    held: bool = False  # EXCLUSIVE instance: a job holds it
    used_blocks: int = 0  # SHARED instance: blocks held
    used_memory_mib: int = 0  # SHARED instance: memory held
    workloads: tuple[str, ...] = ()  # workload classes held on it, one entry per allocation (coexistence)
    mps_failed: str = ""  # why its MPS daemon is not ready ("" = ready or never tried): it takes no block job


@dataclass(frozen=True, slots=True)
class GpuState:
    """One GPU as the snapshot sees it."""

    uuid: str
    index: int  # index on its node
    model: str  # catalogue key, e.g. "h100-80gb" (unknown models keep NVML's name)
    memory_mib: int
    sm_count: int
    mode: GpuMode = GpuMode.EXCLUSIVE
    held: bool = False  # EXCLUSIVE: a job holds it whole
    used_blocks: int = 0  # SHARED: blocks held (0..100)
    used_memory_mib: int = 0  # SHARED: memory held
    mig_instances: tuple[MigInstance, ...] = ()  # MIG: the current layout
    nvlink_peers: tuple[int, ...] = ()  # indices of NVLink peers on the same node
    mps_failed: str = ""  # why its MPS daemon is not ready ("" = ready or never tried): it takes no block job
    # workload classes held anywhere on it (whole, blocks, its MIG instances), one entry per allocation
    workloads: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeState:
    """One node: its free CPU and RAM and its GPUs."""

    node_id: str
    cpus_milli: int
    memory_mib: int
    free_cpus_milli: int
    free_memory_mib: int
    gpus: tuple[GpuState, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    name: str = field(default="", compare=False)  # for humans (wait reasons); node_id is the key
    workloads: tuple[str, ...] = ()  # workload classes of the gang members on it, one entry per member


@dataclass(frozen=True, slots=True)
class ClusterState:
    """Every schedulable node (down, draining and cordoned nodes are left out)."""

    nodes: tuple[NodeState, ...] = ()
    # for humans: the nodes left out and why, e.g. ("n1 cordoned", "n2 draining") (not compared)
    unschedulable: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Request:
    """What one gang member (replica) needs; ``replicas`` members are placed all or nothing.

    Exactly one of: ``gpus`` > 0 whole GPUs, ``mig_profile`` (× ``mig_count``),
    ``blocks`` 1..100 with ``gpu_memory_mib``; or none of them for a CPU-only job.
    """

    gpus: int = 0
    mig_profile: str | None = None
    mig_count: int = 1
    blocks: int = 0
    gpu_memory_mib: int = 0
    gpu_models: tuple[str, ...] = ()  # allowed catalogue keys; empty = any
    cpus_milli: int = 0
    memory_mib: int = 0
    replicas: int = 1
    # node labels every member's node must carry, e.g. (("gpuq.runtime.process", "yes"),); empty = any node
    node_labels: tuple[tuple[str, str], ...] = ()
    # node ids to place on only if nothing else fits (a soft preference: the nodes that failed its launches)
    avoid_nodes: tuple[str, ...] = ()
    # coexistence (partitioner.coexistence): the request's workload class, and the classes it may share one
    # physical GPU / one node with (None: any; the service passes a symmetric table's row)
    workload: str = ""
    gpu_peers: tuple[str, ...] | None = None
    node_peers: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Slice:
    """One concrete slice handed to a job."""

    gpu_uuid: str  # the physical GPU
    kind: SliceKind
    blocks: int  # 100 for a whole GPU; the instance's share for MIG is not counted here
    memory_mib: int
    mig_profile: str | None = None
    mig_start: int | None = None
    mig_uuid: str | None = None  # known once the instance exists on the device

    @property
    def slot(self) -> str:
        """A key naming the exclusive part of the GPU this slice holds."""
        if self.kind is SliceKind.MIG:
            return f"mig:{self.mig_start}"
        if self.kind is SliceKind.GPU:
            return "gpu"
        return "blocks" if self.mig_start is None else f"mig:{self.mig_start}:blocks"


@dataclass(frozen=True, slots=True)
class ReplicaPlacement:
    """Where one gang member goes."""

    node_id: str
    slices: tuple[Slice, ...]
    cpus_milli: int = 0
    memory_mib: int = 0
    workload: str = ""  # the request's workload class: what a commit marks its GPUs and node as holding


@dataclass(frozen=True, slots=True)
class Placement:
    """A whole request placed: one entry per replica."""

    replicas: tuple[ReplicaPlacement, ...]
    score: int = 0
    # for humans, e.g. "no NVLink-connected set of 4 GPUs was free: placed without one" (not compared)
    note: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class NoFit:
    """The request does not fit now; ``reason`` is for humans, ``never`` if it never can."""

    reason: str
    never: bool = False  # True: no node of the cluster could ever hold it, even empty
    # the request field at fault, dotted, when one is (e.g. "resources.gpu_memory_mib"); "" otherwise (not compared)
    field_name: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class LayoutChange:
    """A proposed change of an idle GPU's mode or MIG layout."""

    node_id: str
    gpu_uuid: str
    mode: GpuMode
    mig_layout: tuple[tuple[str, int], ...] = field(default=())  # (profile, start) pairs
    reason: str = ""
    # MIG: the starts of ``mig_layout`` whose instances are in shared mode (blocks under MPS); the others exclusive
    shared_starts: tuple[int, ...] = ()
