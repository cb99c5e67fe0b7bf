"""Node scoring for one request of the live service (whole GPUs or blocks).

Plain loops over the arrays of :mod:`partitioner.encode`; inputs are trusted
(:mod:`partitioner.place` validates). One call scores every node for one
request: ``out_score[n]`` is the node's score (``-inf`` when infeasible) and
``out_unit[n]`` the unit a blocks request would take there.

Fragmentation (policies ``fgd`` and ``gpuq``) follows FGD over a demand mix of
shapes (``sh_*`` arrays): kind 0 CPU-only, 1 blocks (``sh_blocks`` and
``sh_mem`` on one shared GPU), 2 whole GPUs (``sh_count`` of them). A node's
idle ``R`` is the free blocks of its non-MIG GPUs; a shape that cannot run
there sees all of ``R`` as fragment, one that can sees the free blocks of the
GPUs it cannot use. ``gpuq`` additionally bounds how many tasks of a shape
still fit by the node's free CPU (idle GPUs behind exhausted CPU are fragment
too) and breaks ties of its quantised score by best fit instead of by index.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

REQ_WHOLE = 2
REQ_BLOCKS = 1

P_RANDOM = 0
P_BEST_FIT = 1
P_FGD = 2
P_GPUQ = 3
P_FIRST_FIT = 4  # the first feasible node and unit, in encoding order (a baseline)


@njit(cache=True)
def node_fragment(n, node_unit_start, unit_kind, unit_free_blocks, unit_free_mem,
                  changed, d_blocks, d_mem, take_whole, cpu_after,
                  sh_kind, sh_blocks, sh_mem, sh_count, sh_cpu, sh_p, packed):
    """F of node ``n`` after unit ``changed`` loses ``d_blocks``/``d_mem`` and ``take_whole`` free exclusive GPUs go."""
    lo = node_unit_start[n]
    hi = node_unit_start[n + 1]
    idle = 0
    taken = 0
    for u in range(lo, hi):
        k = unit_kind[u]
        if k > 1:
            continue
        b = unit_free_blocks[u]
        if u == changed:
            b -= d_blocks
        if k == 0 and b == 100 and taken < take_whole:
            taken += 1
            b = 0
        idle += b
    total = 0.0
    for m in range(sh_p.shape[0]):
        if sh_kind[m] == 0:
            total += sh_p[m] * idle
            continue
        usable = 0
        usable_units = 0
        unusable = 0
        taken = 0
        for u in range(lo, hi):
            k = unit_kind[u]
            if k > 1:
                continue
            b = unit_free_blocks[u]
            mem = unit_free_mem[u]
            if u == changed:
                b -= d_blocks
                mem -= d_mem
            if k == 0 and b == 100 and taken < take_whole:
                taken += 1
                b = 0
            if sh_kind[m] == 1:
                ok = k == 1 and b >= sh_blocks[m] and mem >= sh_mem[m]
                if ok:
                    usable_units += b // sh_blocks[m]
            else:
                ok = k == 0 and b == 100
                if ok:
                    usable_units += 1
            if ok:
                usable += 1
            else:
                unusable += b
        fits = usable_units // sh_count[m]
        if packed and sh_cpu[m] > 0 and cpu_after // sh_cpu[m] < fits:
            fits = cpu_after // sh_cpu[m]
        if cpu_after < sh_cpu[m] or usable < sh_count[m] or fits == 0:
            total += sh_p[m] * idle
        elif packed:
            per = sh_blocks[m] if sh_kind[m] == 1 else 100
            total += sh_p[m] * (idle - fits * sh_count[m] * per)
        else:
            total += sh_p[m] * unusable
    return total


@njit(cache=True)
def score_nodes(req_kind, req_blocks, req_mem, req_count, req_cpu, req_ram, unit_ok,
                node_free_cpu, node_free_mem, node_cpu, node_unit_start,
                unit_kind, unit_free_blocks, unit_free_mem,
                sh_kind, sh_blocks, sh_mem, sh_count, sh_cpu, sh_p,
                policy, out_score, out_unit, frag_cache, frag_ok):
    """Score every node for one whole-GPU or blocks request (see the module docstring).

    ``frag_cache[n]`` holds node ``n``'s current F where ``frag_ok[n]``; stale
    entries (the caller clears ``frag_ok`` for nodes it changes) are recomputed
    here, so F of an unchanged node is computed once per cycle, not per call.
    Infeasible nodes are rejected before any fragment work, and units with the
    same free blocks and memory are scored once (the first keeps the tie).
    """
    n_nodes = node_free_cpu.shape[0]
    use_frag = policy in (P_FGD, P_GPUQ)
    packed = policy == P_GPUQ
    for n in range(n_nodes):
        out_score[n] = -np.inf
        out_unit[n] = -1
        if node_free_cpu[n] < req_cpu or node_free_mem[n] < req_ram:
            continue
        lo = node_unit_start[n]
        hi = node_unit_start[n + 1]
        cpu_after = node_free_cpu[n] - req_cpu
        # feasibility first: most nodes of a busy cluster are rejected here
        if req_kind == REQ_WHOLE:
            free = 0
            for u in range(lo, hi):
                if unit_ok[u] and unit_kind[u] == 0 and unit_free_blocks[u] == 100:
                    free += 1
            if free < req_count:
                continue
        else:
            room = False
            for u in range(lo, hi):
                k = unit_kind[u]
                fits = unit_free_blocks[u] >= req_blocks and unit_free_mem[u] >= req_mem
                if unit_ok[u] and (k == 1 or k == 3) and fits:
                    room = True
                    break
            if not room:
                continue
        idle = 0
        gpus = 0
        for u in range(lo, hi):
            if unit_kind[u] <= 1:
                idle += unit_free_blocks[u]
                gpus += 1
        before = 0.0
        if use_frag:
            if not frag_ok[n]:
                frag_cache[n] = node_fragment(n, node_unit_start, unit_kind, unit_free_blocks, unit_free_mem,
                                              -1, 0, 0, 0, node_free_cpu[n],
                                              sh_kind, sh_blocks, sh_mem, sh_count, sh_cpu, sh_p, packed)
                frag_ok[n] = True
            before = frag_cache[n]
        cpu_share = cpu_after / node_cpu[n] if node_cpu[n] > 0 else 0.0
        if req_kind == REQ_WHOLE:
            fit = 1.0 - 0.5 * cpu_share - 0.5 * (idle - 100 * req_count) / max(100 * gpus, 1)
            if policy == P_BEST_FIT:
                out_score[n] = math.floor(100.0 * fit)
            elif policy == P_RANDOM:
                out_score[n] = np.random.random()
            elif policy == P_FIRST_FIT:
                out_score[n] = -float(n)
            else:
                after = node_fragment(n, node_unit_start, unit_kind, unit_free_blocks, unit_free_mem, -1, 0, 0,
                                      req_count, cpu_after, sh_kind, sh_blocks, sh_mem, sh_count, sh_cpu, sh_p, packed)
                score = math.floor(100.0 / (1.0 + math.exp(-(before - after) / 100.0)))
                out_score[n] = score + (fit * 0.999 if packed else 0.0)
            continue
        # blocks: the best unit of this node
        best = -np.inf
        for u in range(lo, hi):
            k = unit_kind[u]
            if not unit_ok[u] or (k != 1 and k != 3):
                continue
            if unit_free_blocks[u] < req_blocks or unit_free_mem[u] < req_mem:
                continue
            dup = False
            for v in range(lo, u):
                if (unit_kind[v] == k and unit_ok[v] and unit_free_blocks[v] == unit_free_blocks[u]
                        and unit_free_mem[v] == unit_free_mem[u]):
                    dup = True
                    break
            if dup:
                continue  # same state as an earlier unit: same score, the earlier one keeps the tie
            fit = 1.0 - 0.5 * cpu_share - 0.5 * (idle - (req_blocks if k == 1 else 0)) / max(100 * gpus, 1)
            tight = (100 - unit_free_blocks[u] + req_blocks) / 1000.0  # prefer the fuller unit
            if policy == P_BEST_FIT:
                s = math.floor(100.0 * fit) + tight * 0.1
            elif policy == P_RANDOM:
                s = np.random.random()
            elif policy == P_FIRST_FIT:
                s = -float(n)
            else:
                after = before
                if k == 1:
                    after = node_fragment(n, node_unit_start, unit_kind, unit_free_blocks, unit_free_mem, u,
                                          req_blocks, req_mem, 0, cpu_after, sh_kind, sh_blocks, sh_mem, sh_count,
                                          sh_cpu, sh_p, packed)
                s = math.floor(100.0 / (1.0 + math.exp(-(before - after) / 100.0)))
                if packed:
                    s += fit * 0.9 + tight * 0.09
            if s > best:
                best = s
                out_unit[n] = u
        if out_unit[n] >= 0:
            out_score[n] = best
