"""MIG slot search for one request of the live service, on memory-slice bitmasks.

One call scores every node for ``need`` instances of one profile (the profile
resolves per GPU model, so its geometry comes per GPU): on each GPU of a node,
in GPU index order, free existing instances of the profile are reused first,
then new instances go to the lowest free valid starts (``mask & span == 0``),
never past the profile's ``max_count`` on that GPU. A node is feasible when
its free CPU/memory fit and ``need`` instances were found; the best node
reuses the most instances, then has the fewest free memory slices left on its
MIG GPUs (fullest first), then comes first. Inputs are trusted
(:mod:`partitioner.place` builds them); the pure-Python twin is
:func:`partitioner.reference.mig_pick`.

Per GPU ``g``: ``gpu_node``; ``gpu_mask`` occupied memory slices; ``gpu_is_mig``;
``gp_ok`` (MIG mode, allowed model, has the profile); ``gp_id``, ``gp_size``,
``gp_max`` and ``gp_starts`` (bit ``s`` set = ``s`` is an allowed start) of
the profile on that GPU's model. Per unit: ``unit_gpu``, ``unit_kind``,
``unit_profile``, ``unit_free_blocks``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

KIND_MIG = 2
MEM_SLICES = 8


@njit(cache=True)
def popcount(x):
    c = 0
    while x:
        x &= x - 1
        c += 1
    return c


@njit(cache=True)
def mig_pick(need, req_cpu, req_ram, node_free_cpu, node_free_mem,
             gpu_node, gpu_mask, gpu_is_mig, gp_ok, gp_id, gp_size, gp_max, gp_starts,
             unit_gpu, unit_kind, unit_profile, unit_free_blocks, out_reused):
    """Best node index for ``need`` instances (-1: none; -2: no node has the CPU/memory).

    ``out_reused[n]`` = instances node ``n`` would reuse (-1 where infeasible).
    """
    n_nodes = node_free_cpu.shape[0]
    n_gpus = gpu_node.shape[0]
    existing = np.zeros(n_gpus, dtype=np.int64)
    free_inst = np.zeros(n_gpus, dtype=np.int64)
    for u in range(unit_gpu.shape[0]):
        g = unit_gpu[u]
        if gp_ok[g] and unit_profile[u] == gp_id[g]:
            existing[g] += 1
            if unit_kind[u] == KIND_MIG and unit_free_blocks[u] == 100:
                free_inst[g] += 1
    left = np.full(n_nodes, need, dtype=np.int64)
    reused = np.zeros(n_nodes, dtype=np.int64)
    free_slices = np.zeros(n_nodes, dtype=np.int64)
    cpu_ok = np.zeros(n_nodes, dtype=np.bool_)
    for n in range(n_nodes):
        cpu_ok[n] = node_free_cpu[n] >= req_cpu and node_free_mem[n] >= req_ram
    for g in range(n_gpus):  # GPU index order within each node, as the Python search went
        n = gpu_node[g]
        if not cpu_ok[n]:
            continue
        if gpu_is_mig[g]:
            free_slices[n] += MEM_SLICES - popcount(gpu_mask[g])
        if not gp_ok[g] or left[n] == 0:
            continue
        take = min(free_inst[g], left[n])
        reused[n] += take
        left[n] -= take
        mask = gpu_mask[g]
        count = existing[g]
        span0 = (1 << gp_size[g]) - 1
        for s in range(MEM_SLICES):
            if left[n] == 0 or count >= gp_max[g]:
                break
            if (gp_starts[g] >> s) & 1 == 0:
                continue
            span = span0 << s
            if mask & span == 0:
                mask |= span
                count += 1
                left[n] -= 1
    best = -1
    any_cpu = False
    for n in range(n_nodes):
        out_reused[n] = -1
        if not cpu_ok[n]:
            continue
        any_cpu = True
        if left[n] > 0:
            continue
        out_reused[n] = reused[n]
        if best < 0 or reused[n] > reused[best] or (reused[n] == reused[best] and free_slices[n] < free_slices[best]):
            best = n
    if best < 0 and not any_cpu:
        return -2
    return best
