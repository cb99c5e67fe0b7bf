"""First-fit placement: whole GPUs and blocks + memory on one GPU, CPU and RAM (a baseline, not production).

A deliberately simple packer with the same interface as
``partitioner.place.Packer`` (``place`` / ``commit`` / ``release``). The
service places through the partitioner only; this one lives with the tests
because it is the baseline in ``benchmarks/admission_bench.py`` and a second,
independent packer for the admission cycle's property tests. An idle GPU
serves either a whole-GPU request or block requests; once it holds blocks it
is shared until they are all released. MIG requests are refused as never.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from partitioner.types import (
    BLOCKS_PER_GPU,
    ClusterState,
    NoFit,
    Placement,
    ReplicaPlacement,
    Request,
    Slice,
    SliceKind,
)


@dataclass(slots=True)
class _Gpu:
    uuid: str
    model: str
    memory_mib: int
    held: bool
    used_blocks: int
    used_memory_mib: int


@dataclass(slots=True)
class _Node:
    node_id: str
    cpus_milli: int
    memory_mib: int
    free_cpus_milli: int
    free_memory_mib: int
    gpus: list[_Gpu] = field(default_factory=list)


class FirstFitPacker:
    """Mutable first-fit state over one snapshot."""

    def __init__(self, cluster: ClusterState) -> None:
        self.nodes = [
            _Node(
                n.node_id,
                n.cpus_milli,
                n.memory_mib,
                n.free_cpus_milli,
                n.free_memory_mib,
                [_Gpu(g.uuid, g.model, g.memory_mib, g.held, g.used_blocks, g.used_memory_mib) for g in n.gpus],
            )
            for n in cluster.nodes
        ]
        self._by_uuid = {g.uuid: g for n in self.nodes for g in n.gpus}
        self._by_node = {n.node_id: n for n in self.nodes}

    def _gpu_ok(self, gpu: _Gpu, request: Request) -> bool:
        return not request.gpu_models or gpu.model in request.gpu_models

    def _place_one(self, node: _Node, request: Request) -> tuple[Slice, ...] | None:
        if node.free_cpus_milli < request.cpus_milli or node.free_memory_mib < request.memory_mib:
            return None
        if request.gpus > 0:
            free = [g for g in node.gpus if self._gpu_ok(g, request) and not g.held and g.used_blocks == 0]
            if len(free) < request.gpus:
                return None
            return tuple(Slice(g.uuid, SliceKind.GPU, BLOCKS_PER_GPU, g.memory_mib) for g in free[: request.gpus])
        if request.blocks > 0:
            for g in node.gpus:
                if (
                    self._gpu_ok(g, request)
                    and not g.held
                    and g.used_blocks + request.blocks <= BLOCKS_PER_GPU
                    and g.used_memory_mib + request.gpu_memory_mib <= g.memory_mib
                ):
                    return (Slice(g.uuid, SliceKind.BLOCKS, request.blocks, request.gpu_memory_mib),)
            return None
        return ()

    def _never(self, request: Request) -> str | None:
        """Why the request could not fit even on the empty cluster, or None."""
        if request.mig_profile:
            return "MIG profiles are not placed by the first-fit packer"
        gpus = [g for n in self.nodes for g in n.gpus if self._gpu_ok(g, request)]
        if (request.gpus or request.blocks) and not gpus:
            if request.gpu_models:
                return f"no GPU model matches {', '.join(request.gpu_models)}"
            return "no GPUs in the cluster"
        if request.gpus and max(
            (sum(1 for g in n.gpus if self._gpu_ok(g, request)) for n in self.nodes), default=0
        ) < request.gpus:
            return f"needs {request.gpus} GPUs on one node; no node has that many"
        largest_mib = max(g.memory_mib for g in gpus) if gpus else 0
        if request.blocks and largest_mib < request.gpu_memory_mib:
            return f"needs {request.gpu_memory_mib} MiB of GPU memory; the largest GPU has {largest_mib} MiB"
        if not any(n.cpus_milli >= request.cpus_milli and n.memory_mib >= request.memory_mib for n in self.nodes):
            return "no node has enough CPUs and memory"
        return None

    def place(self, request: Request) -> Placement | NoFit:
        """Where the request goes now, without changing state."""
        if not self.nodes:
            return NoFit("no node is registered and ready")
        never = self._never(request)
        if never:
            return NoFit(never, never=True)
        # Place gang members one by one on a scratch copy, so a partial gang
        # never touches the real state (all or nothing).
        scratch = FirstFitPacker.__new__(FirstFitPacker)
        scratch.nodes = [
            _Node(n.node_id, n.cpus_milli, n.memory_mib, n.free_cpus_milli, n.free_memory_mib,
                  [_Gpu(g.uuid, g.model, g.memory_mib, g.held, g.used_blocks, g.used_memory_mib) for g in n.gpus])
            for n in self.nodes
        ]
        scratch._by_uuid = {g.uuid: g for n in scratch.nodes for g in n.gpus}
        scratch._by_node = {n.node_id: n for n in scratch.nodes}
        replicas: list[ReplicaPlacement] = []
        for _ in range(request.replicas):
            for node in scratch.nodes:
                slices = scratch._place_one(node, request)
                if slices is not None:
                    member = ReplicaPlacement(node.node_id, slices, request.cpus_milli, request.memory_mib)
                    scratch._apply(member, sign=1)
                    replicas.append(member)
                    break
            else:
                return NoFit(self._why_not(request))
        return Placement(tuple(replicas))

    def _why_not(self, request: Request) -> str:
        roomy = [n for n in self.nodes
                 if n.free_cpus_milli >= request.cpus_milli and n.free_memory_mib >= request.memory_mib]
        if not roomy:
            return "not enough free CPU or memory on any node"
        if request.gpus:
            # Count only nodes with the CPU and RAM free, so the reason names what is really short.
            best = max(sum(1 for g in n.gpus if not g.held and g.used_blocks == 0 and self._gpu_ok(g, request))
                       for n in roomy)
            return f"needs {request.gpus} free GPU(s) on one node; the most free on one node is {best}"
        if request.blocks:
            return f"no GPU has {request.blocks} free blocks and {request.gpu_memory_mib} MiB free"
        return "not enough free CPU or memory on any node"

    def _apply(self, member: ReplicaPlacement, *, sign: int) -> None:
        node = self._by_node[member.node_id]
        node.free_cpus_milli -= sign * member.cpus_milli
        node.free_memory_mib -= sign * member.memory_mib
        for s in member.slices:
            gpu = self._by_uuid[s.gpu_uuid]
            if s.kind is SliceKind.GPU:
                gpu.held = sign > 0
            else:
                gpu.used_blocks += sign * s.blocks
                gpu.used_memory_mib += sign * s.memory_mib

    def commit(self, placement: Placement) -> None:
        """Take the placement's capacity out of the state."""
        for member in placement.replicas:
            self._apply(member, sign=1)

    def release(self, placement: Placement) -> None:
        """Give the placement's capacity back."""
        for member in placement.replicas:
            self._apply(member, sign=-1)
