"""Pure updates of a ClusterState: what it looks like after placements or layout changes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from partitioner.repartition import with_changes
from partitioner.types import (
    BLOCKS_PER_GPU,
    ClusterState,
    GpuState,
    LayoutChange,
    MigInstance,
    Placement,
    SliceKind,
)


def release_placements(cluster: ClusterState, placements: Iterable[Placement]) -> ClusterState:
    """The cluster with every placement's capacity given back (the inverse of ``apply_placements``)."""
    return apply_placements(cluster, placements, sign=-1)


def apply_placements(cluster: ClusterState, placements: Iterable[Placement], *, sign: int = 1) -> ClusterState:
    """The cluster with every placement's capacity taken (``sign=-1``: given back)."""
    cpu: dict[str, int] = {}
    mem: dict[str, int] = {}
    gpu_delta: dict[str, list] = {}
    for placement in placements:
        for member in placement.replicas:
            cpu[member.node_id] = cpu.get(member.node_id, 0) + member.cpus_milli
            mem[member.node_id] = mem.get(member.node_id, 0) + member.memory_mib
            for s in member.slices:
                gpu_delta.setdefault(s.gpu_uuid, []).append(s)
    if not cpu and not gpu_delta:
        return cluster
    nodes = []
    for node in cluster.nodes:
        if node.node_id not in cpu:
            nodes.append(node)  # untouched: the same object, so callers can tell what changed by identity
            continue
        gpus = tuple(_take(g, gpu_delta[g.uuid], sign) if g.uuid in gpu_delta else g for g in node.gpus)
        nodes.append(replace(
            node, gpus=gpus,
            free_cpus_milli=node.free_cpus_milli - sign * cpu.get(node.node_id, 0),
            free_memory_mib=node.free_memory_mib - sign * mem.get(node.node_id, 0),
        ))
    return ClusterState(tuple(nodes))


def _take(gpu: GpuState, slices: list, sign: int = 1) -> GpuState:
    held, blocks, memory = gpu.held, gpu.used_blocks, gpu.used_memory_mib
    instances = list(gpu.mig_instances)
    for s in slices:
        if s.kind is SliceKind.GPU:
            held, blocks = sign > 0, BLOCKS_PER_GPU if sign > 0 else 0
        elif s.kind is SliceKind.MIG:
            known = [i for i, inst in enumerate(instances) if inst.start == s.mig_start]
            if known:
                instances[known[0]] = replace(instances[known[0]], held=sign > 0)
            elif sign > 0:
                instances.append(MigInstance(profile=s.mig_profile or "", start=s.mig_start or 0, held=True))
        elif s.mig_start is not None:  # blocks on a shared MIG instance
            for i, inst in enumerate(instances):
                if inst.start == s.mig_start:
                    instances[i] = replace(inst, used_blocks=inst.used_blocks + sign * s.blocks,
                                           used_memory_mib=inst.used_memory_mib + sign * s.memory_mib)
        else:
            blocks += sign * s.blocks
            memory += sign * s.memory_mib
    return replace(gpu, held=held, used_blocks=blocks, used_memory_mib=memory, mig_instances=tuple(instances))


def apply_changes(cluster: ClusterState, changes: Iterable[LayoutChange]) -> ClusterState:
    """The cluster with idle GPUs switched to the changes' modes and MIG layouts (the partitioner's rule)."""
    return with_changes(cluster, list(changes))
