"""Node scoring for one request of the live service (whole GPUs or blocks).

Plain loops over the arrays of :mod:`partitioner.encode`; inputs are trusted
(:mod:`partitioner.place` validates). One call scores every node for one
request: ``out_score[n]`` is the node's score (``-inf`` when infeasible) and
``out_unit[n]`` the unit a blocks request would take there.

Fragmentation (policies ``fgd`` and ``gpuq``) follows FGD over a demand mix of
shapes (``sh_*`` arrays, most frequent first): kind 0 CPU-only, 1 blocks
(``sh_blocks`` and ``sh_mem`` on one shared GPU), 2 whole GPUs (``sh_count`` of
them). A node's idle ``R`` is the free blocks of its non-MIG GPUs; a shape that
cannot run there sees all of ``R`` as fragment, one that can sees the free
blocks of the GPUs it cannot use (FGD's fragment). gpuq's multi-task fragment
also bounds how many tasks of a shape still fit by the node's free CPU: ``R``
minus what repeated tasks of the shape could use (idle GPUs behind exhausted
CPU are fragment too).

The scores are the replay kernel's (:mod:`partitioner.kernels.replay`), F in
thousandths of a GPU as there (blocks × 10, each term the same integer before
its weight, so the sums and their floors are bitwise the replay's): ``fgd`` ⌊100·σ⌋ over the first
``n_fgd`` shapes (FGD's target workload); ``gpuq`` the ``variant`` chosen by
:mod:`partitioner.policies.gpuq_rule` (0 FGD's fragment, 1 multi-task, 2 both
summed, each ⌊levels·σ⌋ over every shape; ``VARIANT_LEX``: FGD's ⌊100·σ⌋ over
the first ``n_fgd`` shapes times ``LEX_BASE`` plus the multi-task ⌊levels·σ⌋
among its ties). A blocks request takes the first unit reaching its node's best
score, except gpuq's variants 0-2, which take the tightest (as the replay's
sharing GPU). Ties between nodes: the lowest index (the replay's node order),
unless ``fit_ties`` adds best fit below one score level.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from partitioner.kernels.replay import LEX_BASE, VARIANT_LEX

REQ_WHOLE = 2
REQ_BLOCKS = 1

P_RANDOM = 0
P_BEST_FIT = 1
P_FGD = 2
P_GPUQ = 3
P_FIRST_FIT = 4  # the first feasible node and unit, in encoding order (a baseline)
MILLI_PER_BLOCK = 10  # F is summed in thousandths of a GPU, as the replay's: the very same floats, not ×10 of them


@njit(cache=True)
def node_fragment(n, node_unit_start, unit_kind, unit_free_blocks, unit_free_mem,
                  changed, d_blocks, d_mem, take_whole, cpu_after,
                  sh_kind, sh_blocks, sh_mem, sh_count, sh_cpu, sh_p, packed, n_first):
    """(F, F_multi) of node ``n``, in thousandths of a GPU, after unit ``changed`` loses ``d_blocks``/``d_mem`` and
    ``take_whole`` free exclusive GPUs go.

    ``packed`` (the replay's fragment variant): 0 FGD's fragment over the first ``n_first``
    shapes; 1 the multi-task fragment over every shape; 2 both summed, the multi-task term first
    (the replay's order of additions); ``VARIANT_LEX`` FGD's over the first ``n_first`` as F and
    the multi-task over every shape as F_multi (0 for the other variants).
    """
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
    multi = 0.0
    idle_milli = idle * MILLI_PER_BLOCK
    for m in range(sh_p.shape[0]):
        if packed == 0 and m >= n_first:
            break  # FGD's shapes only
        fgd_f = idle_milli
        multi_f = idle_milli
        if sh_kind[m] != 0:
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
            if cpu_after >= sh_cpu[m] and usable >= sh_count[m] and fits > 0:
                fgd_f = unusable * MILLI_PER_BLOCK
            if sh_cpu[m] > 0 and cpu_after // sh_cpu[m] < fits:  # CPU bounds the multi-task count
                fits = cpu_after // sh_cpu[m]
            if cpu_after >= sh_cpu[m] and usable >= sh_count[m] and fits > 0:
                per = sh_blocks[m] if sh_kind[m] == 1 else 100
                multi_f = idle_milli - fits * sh_count[m] * per * MILLI_PER_BLOCK
        if packed == VARIANT_LEX:
            multi += sh_p[m] * multi_f
            if m < n_first:
                total += sh_p[m] * fgd_f
        elif packed == 0:
            total += sh_p[m] * fgd_f
        elif packed == 1:
            total += sh_p[m] * multi_f
        else:
            total += sh_p[m] * multi_f
            total += sh_p[m] * fgd_f
    return total, multi


@njit(cache=True)
def level_score(delta, levels):
    """⌊levels · σ(ΔF / 1000)⌋, F in thousandths of a GPU as the replay's."""
    return math.floor(levels / (1.0 + math.exp(-delta / 1000.0)))


@njit(cache=True)
def frag_score(before, before_multi, after, after_multi, policy, lex, levels):
    """The fragment score of one option (module docstring): fgd's, gpuq's variants 0-2, or its lexicographic key."""
    if lex:
        return level_score(before - after, 100.0) * LEX_BASE + level_score(before_multi - after_multi, levels)
    if policy == P_FGD:
        return level_score(before - after, 100.0)
    return level_score(before - after, levels)


@njit(cache=True)
def score_nodes(req_kind, req_blocks, req_mem, req_count, req_cpu, req_ram, unit_ok,
                node_free_cpu, node_free_mem, node_cpu, node_unit_start,
                unit_kind, unit_free_blocks, unit_free_mem,
                sh_kind, sh_blocks, sh_mem, sh_count, sh_cpu, sh_p,
                policy, variant, n_fgd, levels, fit_ties, out_score, out_unit, frag_cache, frag_ok):
    """Score every node for one whole-GPU or blocks request (see the module docstring).

    ``variant`` is gpuq's fragment measure (ignored by the other policies), ``n_fgd`` the
    number of leading shapes that are FGD's target workload (< 0: all), ``levels`` gpuq's
    score levels, ``fit_ties`` gpuq adds ``0.999 · best fit`` (in [0, 1)) to break its ties.
    ``frag_cache[n]`` holds node ``n``'s current (F, F_multi) where ``frag_ok[n]``; stale
    entries (the caller clears ``frag_ok`` for nodes it changes, and every entry when the
    policy or variant changes) are recomputed here, so F of an unchanged node is computed once
    per cycle, not per call. Infeasible nodes are rejected before any fragment work, and units
    with the same free blocks and memory are scored once (the first keeps the tie).
    """
    n_nodes = node_free_cpu.shape[0]
    n_shapes = sh_p.shape[0]
    use_frag = policy in (P_FGD, P_GPUQ)
    packed = variant if policy == P_GPUQ else 0
    lex = packed == VARIANT_LEX
    n_first = n_fgd if 0 <= n_fgd <= n_shapes else n_shapes
    if policy == P_GPUQ and not lex:
        n_first = n_shapes  # gpuq's variants 0-2 score every shape
    tight_ties = policy == P_GPUQ and not lex  # the replay's sharing GPU: the tightest among equal scores
    fit_weight = 0.999 if policy == P_GPUQ and fit_ties else 0.0
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
        before_multi = 0.0
        if use_frag:
            if not frag_ok[n]:
                f, fm = node_fragment(n, node_unit_start, unit_kind, unit_free_blocks, unit_free_mem,
                                      -1, 0, 0, 0, node_free_cpu[n],
                                      sh_kind, sh_blocks, sh_mem, sh_count, sh_cpu, sh_p, packed, n_first)
                frag_cache[n, 0] = f
                frag_cache[n, 1] = fm
                frag_ok[n] = True
            before = frag_cache[n, 0]
            before_multi = frag_cache[n, 1]
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
                after, after_multi = node_fragment(n, node_unit_start, unit_kind, unit_free_blocks, unit_free_mem,
                                                   -1, 0, 0, req_count, cpu_after, sh_kind, sh_blocks, sh_mem,
                                                   sh_count, sh_cpu, sh_p, packed, n_first)
                out_score[n] = (frag_score(before, before_multi, after, after_multi, policy, lex, levels)
                                + fit * fit_weight)
            continue
        # blocks: the best unit of this node
        best = -np.inf
        best_tie = -np.inf
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
            tie = 0.0
            if policy == P_BEST_FIT:
                tight = (100 - unit_free_blocks[u] + req_blocks) / 1000.0  # prefer the fuller unit
                s = math.floor(100.0 * fit) + tight * 0.1
            elif policy == P_RANDOM:
                s = np.random.random()
            elif policy == P_FIRST_FIT:
                s = -float(n)
            else:
                after = before
                after_multi = before_multi
                if k == 1:
                    after, after_multi = node_fragment(n, node_unit_start, unit_kind, unit_free_blocks,
                                                       unit_free_mem, u, req_blocks, req_mem, 0, cpu_after,
                                                       sh_kind, sh_blocks, sh_mem, sh_count, sh_cpu, sh_p,
                                                       packed, n_first)
                s = frag_score(before, before_multi, after, after_multi, policy, lex, levels) + fit * fit_weight
                if tight_ties:
                    tie = -float(unit_free_blocks[u])
            if s > best or (s == best and tie > best_tie):
                best = s
                best_tie = tie
                out_unit[n] = u
        if out_unit[n] >= 0:
            out_score[n] = best
