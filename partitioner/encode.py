"""Domain values <-> numpy arrays for the placement kernels.

A :class:`ClusterState` becomes one :class:`Encoded` value. Everything a slice
can be carved from is a *unit*:

====  ==================================  ==========================
kind  unit                                free capacity
====  ==================================  ==========================
0     an ``exclusive`` GPU                 100 blocks if not held, else 0
1     a ``shared`` GPU                     100 - used blocks, memory left
2     an ``exclusive`` MIG instance        100 if not held, else 0
3     a ``shared`` MIG instance            100 - used blocks, memory left
====  ==================================  ==========================

Arrays (length N nodes, U units, G GPUs), all int64 unless noted:

* ``node_free_cpu``, ``node_free_mem``, ``node_cpu``, ``node_mem`` [N];
  ``node_unit_start`` [N + 1]: units of node ``n`` are ``start[n] .. start[n+1]-1``
  (units are sorted by node, then GPU index, then MIG start);
* ``unit_kind``, ``unit_node``, ``unit_gpu`` (index into the GPU list),
  ``unit_free_blocks``, ``unit_free_mem``, ``unit_mem`` (capacity MiB),
  ``unit_profile`` (smi profile id, -1 for whole GPUs), ``unit_start``
  (MIG start, -1) [U];
* ``gpu_node``, ``gpu_mig_mask`` (occupied memory slices of a ``mig`` GPU),
  ``gpu_is_mig`` (bool) [G].

Invariants: ``0 <= unit_free_blocks <= 100``; ``0 <= unit_free_mem <= unit_mem``;
exclusive units have free blocks 0 or 100 and free memory 0 or all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from partitioner.catalog import lookup_model
from partitioner.mig import span_mask
from partitioner.types import BLOCKS_PER_GPU, ClusterState, GpuMode, GpuState

KIND_GPU = 0
KIND_SHARED = 1
KIND_MIG = 2
KIND_MIG_SHARED = 3

# One unit as encode() collects it, in column order:
# kind, node, gpu, free blocks, free memory MiB, memory MiB, MIG profile id, MIG start.
_UnitRow = tuple[int, int, int, int, int, int, int, int]


@dataclass
class UnitInfo:
    """What the kernels do not need but decoding does."""

    node_id: str
    gpu: GpuState
    mig_profile: str | None = None
    mig_start: int | None = None
    mig_uuid: str | None = None
    created: bool = False  # a new MIG instance added by a commit


@dataclass
class Encoded:
    """The cluster as arrays (see the module docstring)."""

    node_ids: list[str]
    node_cpu: np.ndarray
    node_mem: np.ndarray
    node_free_cpu: np.ndarray
    node_free_mem: np.ndarray
    node_unit_start: np.ndarray
    unit_kind: np.ndarray
    unit_node: np.ndarray
    unit_gpu: np.ndarray
    unit_free_blocks: np.ndarray
    unit_free_mem: np.ndarray
    unit_mem: np.ndarray
    unit_profile: np.ndarray
    unit_start: np.ndarray
    gpus: list[GpuState]
    gpu_node: np.ndarray
    gpu_mig_mask: np.ndarray
    units: list[UnitInfo] = field(default_factory=list)


def _model_key(gpu: GpuState) -> str:
    model = lookup_model(gpu.model)
    return model.key if model is not None else gpu.model.strip().lower()


def gpu_model_key(gpu: GpuState) -> str:
    """The catalogue key of ``gpu``'s model (its own lower-cased name when unknown)."""
    return _model_key(gpu)


def encode(cluster: ClusterState) -> Encoded:
    """Encode ``cluster`` (units sorted by node, GPU index, MIG start)."""
    rows: list[_UnitRow] = []
    infos: list[UnitInfo] = []
    gpus: list[GpuState] = []
    gpu_node: list[int] = []
    masks: list[int] = []
    starts = [0]
    for n, node in enumerate(cluster.nodes):
        for gpu in sorted(node.gpus, key=lambda g: g.index):
            g = len(gpus)
            gpus.append(gpu)
            gpu_node.append(n)
            mask = 0
            if gpu.mode is GpuMode.MIG:
                model = lookup_model(gpu.model)
                for inst in sorted(gpu.mig_instances, key=lambda i: i.start):
                    profile = model.mig_profile(inst.profile) if model else None
                    if profile is None:
                        continue  # unknown to the catalogue: leave it alone
                    mask |= span_mask(inst.start, profile.memory_slices)
                    if inst.mode is GpuMode.SHARED:
                        free_b = BLOCKS_PER_GPU - inst.used_blocks
                        free_m = profile.memory_mib - inst.used_memory_mib
                        if inst.mps_failed:  # its MPS daemon is not ready: no room for blocks
                            free_b = free_m = 0
                        kind = KIND_MIG_SHARED
                    else:
                        free_b = 0 if inst.held else BLOCKS_PER_GPU
                        free_m = 0 if inst.held else profile.memory_mib
                        kind = KIND_MIG
                    rows.append((kind, n, g, max(free_b, 0), max(free_m, 0), profile.memory_mib, profile.profile_id,
                                 inst.start))
                    infos.append(UnitInfo(node.node_id, gpu, profile.name, inst.start, inst.uuid))
            elif gpu.mode is GpuMode.SHARED:
                ok = not gpu.mps_failed  # a GPU whose MPS daemon is not ready has no room for blocks
                rows.append((KIND_SHARED, n, g, max(BLOCKS_PER_GPU - gpu.used_blocks, 0) if ok else 0,
                             max(gpu.memory_mib - gpu.used_memory_mib, 0) if ok else 0, gpu.memory_mib, -1, -1))
                infos.append(UnitInfo(node.node_id, gpu))
            else:
                free = not gpu.held
                rows.append((KIND_GPU, n, g, BLOCKS_PER_GPU if free else 0, gpu.memory_mib if free else 0,
                             gpu.memory_mib, -1, -1))
                infos.append(UnitInfo(node.node_id, gpu))
            masks.append(mask)
        starts.append(len(rows))
    cols = np.array(rows, dtype=np.int64).reshape(-1, 8)
    nodes = cluster.nodes
    return Encoded(
        node_ids=[node.node_id for node in nodes],
        node_cpu=np.array([node.cpus_milli for node in nodes], dtype=np.int64),
        node_mem=np.array([node.memory_mib for node in nodes], dtype=np.int64),
        node_free_cpu=np.array([node.free_cpus_milli for node in nodes], dtype=np.int64),
        node_free_mem=np.array([node.free_memory_mib for node in nodes], dtype=np.int64),
        node_unit_start=np.array(starts, dtype=np.int64),
        unit_kind=cols[:, 0].copy(),
        unit_node=cols[:, 1].copy(),
        unit_gpu=cols[:, 2].copy(),
        unit_free_blocks=cols[:, 3].copy(),
        unit_free_mem=cols[:, 4].copy(),
        unit_mem=cols[:, 5].copy(),
        unit_profile=cols[:, 6].copy(),
        unit_start=cols[:, 7].copy(),
        gpus=gpus,
        gpu_node=np.array(gpu_node, dtype=np.int64),
        gpu_mig_mask=np.array(masks, dtype=np.int64),
        units=infos,
    )
