"""The openb replay loop: every arrival filtered, scored and placed in one kernel.

Inputs are the arrays :func:`partitioner.simulate.encode_trace` builds
(shapes and dtypes documented there); the kernel trusts them. GPU shares are
in thousandths of a GPU ("milli", 1000 = a whole GPU), CPU in millicores.

Invariants kept by the loop:

* ``gpu_free[n, j]`` is in ``0 .. 1000`` for ``j < node_ngpu[n]``; 0 beyond;
* ``cnt[n, m]`` = number of GPUs of node ``n`` with free share >= shape ``m``'s
  share, ``small[n, m]`` = sum of the free shares below it, ``idle[n]`` = the
  node's total free share, ``frag[n]`` = FGD's fragmentation F of node ``n``;
  all four are refreshed for the one node a placement touches.

Why the caches: scoring a candidate is then O(shapes) instead of
O(shapes × GPUs) (the change of one GPU value moves ``cnt`` and ``small`` by a
closed form), and most nodes' F never needs recomputing; a full 10,600-arrival
replay on 1,213 nodes scores ~1e7 candidates.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

POLICY_RANDOM = 0
POLICY_BEST_FIT = 1
POLICY_FGD = 2
POLICY_GPUQ = 3

MILLI = 1000
MAX_GPUS = 8
CPU_SCALE = 128000.0  # best-fit's CPU normaliser (the largest openb node, milli)
GPU_SCALE = 8000.0  # best-fit's GPU normaliser (8 GPUs, milli)
MULTI_TASK_FROM = 0.9  # gpuq: plain FGD scoring below this allocated share of the GPUs, its multi-task term from it
VARIANT_LEX = 3  # gpuq's lexicographic rule: FGD's score first, the multi-task fragment's score among its ties
LEX_BASE = 1000.0  # FGD's score weighs this much in the combined key (above any multi-task score's levels)


@njit(cache=True)
def multi_task_on(allocated, capacity):
    """gpuq's load rule: the multi-task term is on once ``allocated`` reaches ``MULTI_TASK_FROM`` of ``capacity``.

    Below it gpuq scores exactly as FGD (FGD's target workload, 100 levels): the
    multi-task term packs whole-GPU work tightly and strands nodes that rare
    8-GPU or CPU-hungry tasks need while the cluster still has room, and wins
    only once the cluster is nearly full (docs/partitioner.md). Used by the
    replay kernel and the live ``Packer`` alike (same units on both sides).
    """
    return allocated >= MULTI_TASK_FROM * capacity


@njit(cache=True)
def shape_fragment(cpu_after, cnt, small, idle, allowed, sh_cpu, sh_milli, sh_ngpu):
    """FGD fragment one task shape sees on a node (integer milli)."""
    if sh_ngpu == 0 or not allowed or cpu_after < sh_cpu or cnt < sh_ngpu:
        return idle
    return small


@njit(cache=True)
def share_units(free, share):
    """⌊free / share⌋ (share > 0), without the division where the share does not fit (most GPUs of a full node)."""
    return free // share if free >= share else 0


@njit(cache=True)
def packed_fragment(cpu_after, units, idle, allowed, sh_cpu, sh_milli, sh_ngpu):
    """gpuq's fragment: idle share that repeated tasks of one shape could not use.

    ``units`` = sum over GPUs of ⌊free / share⌋; CPU bounds how many such tasks
    still fit too, so idle GPUs on a node whose CPU is nearly gone count as
    fragment (FGD counts them only once the CPU drops below one task's need).
    """
    if sh_ngpu == 0 or not allowed:
        return idle
    fit = units if sh_ngpu == 1 else units // sh_ngpu
    if sh_cpu > 0 and fit * sh_cpu > cpu_after:  # = min(fit, cpu_after // sh_cpu), dividing only when CPU binds
        fit = cpu_after // sh_cpu
    return idle - fit * sh_ngpu * sh_milli


@njit(cache=True)
def node_frag_after(n, r_old, r_new, k, cpu_after, cnt, small, idle,
                    allowed, sh_cpu, sh_milli, sh_ngpu, sh_p, units, packed, n_act):
    """F of node ``n`` after ``k`` GPUs go from free share ``r_old`` to ``r_new`` and CPU to ``cpu_after``.

    Over the first ``n_act`` target shapes only (FGD's prefix while gpuq's multi-task term is off).
    """
    idle_after = idle[n] - k * (r_old - r_new)
    total = 0.0
    for m in range(n_act):
        s = sh_milli[m]
        if packed > 0:
            u = units[n, m]
            if k > 0 and s > 0:
                u += k * (share_units(r_new, s) - share_units(r_old, s))
            total += sh_p[m] * packed_fragment(cpu_after, u, idle_after, allowed[n, m], sh_cpu[m], s, sh_ngpu[m])
            if packed == 1:
                continue
        c = cnt[n, m]
        sm = small[n, m]
        if k > 0:
            if r_old >= s:
                c -= k
            else:
                sm -= k * r_old
            if r_new >= s:
                c += k
            else:
                sm += k * r_new
        total += sh_p[m] * shape_fragment(cpu_after, c, sm, idle_after, allowed[n, m], sh_cpu[m], s, sh_ngpu[m])
    return total


@njit(cache=True)
def refresh_node(n, gpu_free, node_ngpu, cpu_free, cnt, small, idle, frag,
                 allowed, sh_cpu, sh_milli, sh_ngpu, sh_p, units, packed, n_act):
    """Recompute the caches of node ``n`` from its GPU shares.

    Only what :func:`node_frag_after` reads under the current rule: the first ``n_act`` shapes,
    ``cnt``/``small`` unless the multi-task term stands alone, ``units`` only when it is on (the
    rule's switch refreshes every node with every shape, so nothing stale is ever read).
    """
    ng = node_ngpu[n]
    total = 0
    for j in range(ng):
        total += gpu_free[n, j]
    idle[n] = total
    for m in range(n_act):
        s = sh_milli[m]
        if packed != 1:
            c = 0
            sm = 0
            for j in range(ng):
                r = gpu_free[n, j]
                if r >= s:
                    c += 1
                else:
                    sm += r
            cnt[n, m] = c
            small[n, m] = sm
        if packed > 0:
            u = 0
            if s > 0:
                for j in range(ng):
                    u += share_units(gpu_free[n, j], s)
            units[n, m] = u
    frag[n] = node_frag_after(n, 0, 0, 0, cpu_free[n], cnt, small, idle,
                              allowed, sh_cpu, sh_milli, sh_ngpu, sh_p, units, packed, n_act)


@njit(cache=True)
def lex_refresh(n, gpu_free, node_ngpu, cpu_free, cnt, small, idle, frag, frag_multi,
                allowed, sh_cpu, sh_ngpu, sh_p, units, n_first, share_vals, share_idx, share_full, scratch):
    """Recompute node ``n``'s caches under gpuq's lexicographic rule (:func:`lex_frags_after`).

    ``cnt``/``small``/``units`` are indexed by distinct share (``share_vals``; shape ``m`` has
    share ``share_vals[share_idx[m]]``) rather than by shape: openb's 48 target shapes have 15
    shares, and the shapes of one share differ only in CPU.
    """
    ng = node_ngpu[n]
    total = 0
    for j in range(ng):
        total += gpu_free[n, j]
    idle[n] = total
    for i in range(share_vals.shape[0]):
        s = share_vals[i]
        c = 0
        sm = 0
        u = 0
        for j in range(ng):
            r = gpu_free[n, j]
            if r >= s:
                c += 1
                if s > 0:
                    u += r // s
            else:
                sm += r
        cnt[n, i] = c
        small[n, i] = sm
        units[n, i] = u
    frag[n], frag_multi[n] = lex_frags_after(n, 0, 0, 0, cpu_free[n], cnt, small, idle, allowed, sh_cpu, sh_ngpu,
                                             sh_p, units, n_first, share_vals, share_idx, share_full, scratch)


@njit(cache=True)
def refresh(n, lex, gpu_free, node_ngpu, cpu_free, cnt, small, idle, frag, frag_multi, allowed, sh_cpu, sh_milli,
            sh_ngpu, sh_p, units, packed, n_act, n_first, share_vals, share_idx, share_full, scratch):
    """Node ``n``'s caches under the current rule: :func:`lex_refresh` or :func:`refresh_node`."""
    if lex:
        lex_refresh(n, gpu_free, node_ngpu, cpu_free, cnt, small, idle, frag, frag_multi, allowed, sh_cpu, sh_ngpu,
                    sh_p, units, n_first, share_vals, share_idx, share_full, scratch)
    else:
        refresh_node(n, gpu_free, node_ngpu, cpu_free, cnt, small, idle, frag,
                     allowed, sh_cpu, sh_milli, sh_ngpu, sh_p, units, packed, n_act)


@njit(cache=True)
def sigmoid_score(delta):
    """FGD's integer score ⌊100 · σ(ΔF / 1000)⌋."""
    return math.floor(100.0 / (1.0 + math.exp(-delta / 1000.0)))


@njit(cache=True)
def best_fit_score(cpu_after, idle_after):
    """Best-fit's integer score ⌊100 · (1 − [½ cpu/128000 + ½ gpu/8000])⌋."""
    return math.floor(100.0 * (1.0 - (0.5 * cpu_after / CPU_SCALE + 0.5 * idle_after / GPU_SCALE)))


@njit(cache=True)
def gpuq_score(delta, levels):
    """gpuq's score: ⌊levels · σ(ΔF / 1000)⌋ (coarser than FGD's 100 levels on purpose, see docs)."""
    return math.floor(levels / (1.0 + math.exp(-delta / 1000.0)))


@njit(cache=True)
def lex_frags_after(n, r_old, r_new, k, cpu_after, cnt, small, idle, allowed, sh_cpu, sh_ngpu, sh_p, units,
                    n_first, share_vals, share_idx, share_full, scratch):
    """(FGD's F over the first ``n_first`` shapes, the multi-task F over all shapes) of node ``n`` after the change.

    The two keys of gpuq's lexicographic rule in one pass over the shapes (the change as in
    :func:`node_frag_after`: ``k`` GPUs from free share ``r_old`` to ``r_new``, CPU to ``cpu_after``).
    The GPU counts are first updated once per distinct share (caches indexed as in
    :func:`lex_refresh`; ``share_full[i]`` = ⌊1000 / share⌋, 0 for CPU-only) into ``scratch``
    (3 rows: count, small, units); each shape then adds its CPU check and weight.
    """
    idle_after = idle[n] - k * (r_old - r_new)
    for i in range(share_vals.shape[0]):
        s = share_vals[i]
        c = cnt[n, i]
        sm = small[n, i]
        u = units[n, i]
        if k > 0:
            if r_old >= s:
                c -= k
                if s > 0:
                    u -= k * (share_full[i] if r_old == MILLI else r_old // s)  # whole GPUs: no division
            else:
                sm -= k * r_old
            if r_new >= s:
                c += k
                if s > 0:
                    u += k * (r_new // s)
            else:
                sm += k * r_new
        scratch[0, i] = c
        scratch[1, i] = sm
        scratch[2, i] = u
    fgd = 0.0
    multi = 0.0
    for m in range(sh_p.shape[0]):
        i = share_idx[m]
        s = share_vals[i]
        multi += sh_p[m] * packed_fragment(cpu_after, scratch[2, i], idle_after, allowed[n, m], sh_cpu[m], s,
                                           sh_ngpu[m])
        if m < n_first:
            fgd += sh_p[m] * shape_fragment(cpu_after, scratch[0, i], scratch[1, i], idle_after, allowed[n, m],
                                            sh_cpu[m], s, sh_ngpu[m])
    return fgd, multi


@njit(cache=True)
def lex_score(fgd_delta, multi_delta, levels):
    """gpuq's lexicographic key as one number: FGD's integer score, then ⌊levels·σ(ΔF_multi/1000)⌋ among its ties.

    ``levels`` < ``LEX_BASE``, so the second key never outweighs one step of the first.
    """
    return sigmoid_score(fgd_delta) * LEX_BASE + gpuq_score(multi_delta, levels)


@njit(cache=True)
def fit_summary(n, gpu_free, node_ngpu, max_free, n_full):
    """The filter's view of node ``n``: its largest free share (-1 without GPUs), its count of entirely free GPUs."""
    best = -1
    full = 0
    for j in range(node_ngpu[n]):
        r = gpu_free[n, j]
        if r > best:
            best = r
        if r == MILLI:
            full += 1
    max_free[n] = best
    n_full[n] = full


@njit(cache=True)
def replay(
    node_cpu, node_mem, node_ngpu, node_model, node_order,
    task_cpu, task_mem, task_ngpu, task_milli, task_models,
    sh_cpu, sh_milli, sh_ngpu, sh_models, sh_p,
    policy, seed, tie_weight, variant,
    out_node, out_gpu, n_fgd,
):
    """Place every task in arrival order; write the chosen node (or -1) and GPU per task.

    gpuq only: ``tie_weight`` is the number of score levels (FGD uses 100) and
    ``variant`` the fragment measure (0 FGD's, 1 CPU-bounded multi-task, 2 both summed,
    ``VARIANT_LEX`` FGD's score over the first ``n_fgd`` shapes first and the multi-task
    fragment's ``tie_weight``-level score over all shapes among its ties, sharing tasks on the
    lowest-index GPU reaching the best key, from the first arrival; ``n_fgd`` < 0: all shapes).
    Otherwise ``n_fgd`` >= 0 turns on the load rule (:func:`multi_task_on`): until the
    allocated share reaches it, gpuq is FGD over the first ``n_fgd`` shapes
    (FGD's target workload is a prefix of gpuq's); -1: gpuq's scoring throughout.

    Inside, node ``i`` is ``node_order[i]`` (the nodes are relabelled in tie order), so every
    per-node array and the score memo are walked in memory order; ``out_node`` is mapped back.
    """
    np.random.seed(seed)
    n_nodes = node_cpu.shape[0]
    n_shapes = sh_p.shape[0]
    cpu_free = node_cpu[node_order].copy()
    mem_free = node_mem[node_order].copy()
    ngpu = node_ngpu[node_order].copy()
    model = node_model[node_order].copy()
    gpu_free = np.zeros((n_nodes, MAX_GPUS), dtype=np.int64)
    for n in range(n_nodes):
        for j in range(ngpu[n]):
            gpu_free[n, j] = MILLI
    max_free = np.zeros(n_nodes, dtype=np.int64)
    n_full = np.zeros(n_nodes, dtype=np.int64)
    for n in range(n_nodes):
        fit_summary(n, gpu_free, ngpu, max_free, n_full)
    allowed = np.zeros((n_nodes, n_shapes), dtype=np.bool_)
    for n in range(n_nodes):
        for m in range(n_shapes):
            allowed[n, m] = (sh_models[m] >> model[n]) & 1 == 1
    cnt = np.zeros((n_nodes, n_shapes), dtype=np.int64)
    small = np.zeros((n_nodes, n_shapes), dtype=np.int64)
    idle = np.zeros(n_nodes, dtype=np.int64)
    frag = np.zeros(n_nodes, dtype=np.float64)
    units = np.zeros((n_nodes, n_shapes), dtype=np.int64)
    frag_multi = np.zeros(n_nodes, dtype=np.float64)  # the lexicographic rule's second F
    share_vals = np.unique(sh_milli)  # the lexicographic rule's caches are per distinct share
    share_idx = np.searchsorted(share_vals, sh_milli)
    share_full = np.zeros(share_vals.shape[0], dtype=np.int64)  # tasks of each share one whole GPU holds
    for i in range(share_vals.shape[0]):
        if share_vals[i] > 0:
            share_full[i] = MILLI // share_vals[i]
    scratch = np.zeros((3, share_vals.shape[0]), dtype=np.int64)
    # 0: FGD's fragment; 1: gpuq's CPU-bounded multi-task fragment only; 2: both summed (gpuq); 3: lexicographic
    final_policy = policy
    final_packed = variant if policy == POLICY_GPUQ else 0
    packed = final_packed
    lex = packed == VARIANT_LEX
    n_first = n_fgd if n_fgd >= 0 else n_shapes  # the lexicographic rule's FGD shapes
    n_act = n_shapes
    capacity = 0
    for n in range(n_nodes):
        capacity += ngpu[n] * MILLI
    allocated = 0
    if policy == POLICY_GPUQ and not lex and n_fgd >= 0 and not multi_task_on(allocated, capacity):
        policy = POLICY_FGD  # the load rule: FGD exactly, until the cluster is nearly full
        packed = 0
        n_act = n_fgd
    use_frag = policy in (POLICY_FGD, POLICY_GPUQ)
    # score memo: a node's score (and GPU) for a task depends only on the node's state and the task's
    # (cpu, k, milli); nodes change one per arrival, so most scores are reused (exact, not approximate).
    # Indexed [task key, node]: one arrival reads one row, in node order.
    combined = (task_cpu * 16 + task_ngpu) * (MILLI + 1) + task_milli
    key_values = np.unique(combined)
    task_key = np.searchsorted(key_values, combined)
    memo = policy != POLICY_RANDOM
    n_keys = key_values.shape[0] if memo else 1
    node_ver = np.zeros(n_nodes, dtype=np.int64)
    memo_ver = np.full((n_keys, n_nodes), -1, dtype=np.int64)
    memo_score = np.zeros((n_keys, n_nodes), dtype=np.float64)
    memo_gpu = np.zeros((n_keys, n_nodes), dtype=np.int64)
    if use_frag:
        for n in range(n_nodes):
            refresh(n, lex, gpu_free, ngpu, cpu_free, cnt, small, idle, frag, frag_multi, allowed, sh_cpu, sh_milli,
                    sh_ngpu, sh_p, units, packed, n_act, n_first, share_vals, share_idx, share_full, scratch)
    else:
        for n in range(n_nodes):
            idle[n] = ngpu[n] * MILLI

    for t in range(task_cpu.shape[0]):
        if policy != final_policy and multi_task_on(allocated, capacity):
            policy = final_policy
            packed = final_packed
            n_act = n_shapes
            for n in range(n_nodes):  # every node's F and memoised scores change with the rule
                node_ver[n] += 1
                refresh(n, lex, gpu_free, ngpu, cpu_free, cnt, small, idle, frag, frag_multi, allowed, sh_cpu,
                        sh_milli, sh_ngpu, sh_p, units, packed, n_act, n_first, share_vals, share_idx, share_full,
                        scratch)
        cpu = task_cpu[t]
        mem = task_mem[t]
        k = task_ngpu[t]
        milli = task_milli[t]
        models = task_models[t]
        sharing = k == 1 and milli < MILLI
        key = task_key[t] if memo else 0
        best_node = -1
        best_gpu = -1
        best_score = -1e300
        seen = 0
        for n in range(n_nodes):
            # 1. filter: CPU, memory, model, enough GPUs with enough free share
            if cpu_free[n] < cpu or mem_free[n] < mem:
                continue
            if k > 0:
                if (models >> model[n]) & 1 == 0:
                    continue
                if k == 1:
                    if max_free[n] < milli:
                        continue
                elif milli == MILLI:
                    if n_full[n] < k:
                        continue
                else:
                    fits = 0
                    for j in range(ngpu[n]):
                        if gpu_free[n, j] >= milli:
                            fits += 1
                    if fits < k:
                        continue
            # 2. score, choosing the GPU for a sharing task
            if policy == POLICY_RANDOM:
                seen += 1
                if np.random.randint(0, seen) == 0:
                    best_node = n
                continue
            if memo_ver[key, n] == node_ver[n]:
                score = memo_score[key, n]
                if score > best_score:
                    best_score = score
                    best_node = n
                    best_gpu = memo_gpu[key, n]
                continue
            cpu_after = cpu_free[n] - cpu
            score = -1e300
            tie = 0.0
            gpu = -1
            if sharing:
                for j in range(ngpu[n]):
                    r = gpu_free[n, j]
                    if r < milli:
                        continue
                    dup = False
                    for i in range(j):
                        if gpu_free[n, i] == r:
                            dup = True
                            break
                    if dup:
                        continue  # same share as a lower-index GPU: same score, lower index wins
                    if policy == POLICY_BEST_FIT:
                        s = best_fit_score(cpu_after, idle[n] - milli)
                        tt = -r  # tightest GPU within the node
                    elif lex:
                        fa, fm = lex_frags_after(n, r, r - milli, 1, cpu_after, cnt, small, idle, allowed, sh_cpu,
                                                 sh_ngpu, sh_p, units, n_first, share_vals, share_idx, share_full,
                                                 scratch)
                        s = lex_score(frag[n] - fa, frag_multi[n] - fm, tie_weight)
                        tt = 0.0  # FGD's GPU choice: the lowest index reaching the best key
                    else:
                        fa = node_frag_after(n, r, r - milli, 1, cpu_after, cnt, small, idle,
                                             allowed, sh_cpu, sh_milli, sh_ngpu, sh_p, units, packed, n_act)
                        if policy == POLICY_FGD:
                            s = sigmoid_score(frag[n] - fa)
                            tt = 0.0
                        else:
                            s = gpuq_score(frag[n] - fa, tie_weight)
                            tt = -r
                    if s > score or (s == score and tt > tie):
                        score = s
                        tie = tt
                        gpu = j
            else:
                if policy == POLICY_BEST_FIT:
                    score = best_fit_score(cpu_after, idle[n] - k * milli)
                elif lex:
                    fa, fm = lex_frags_after(n, MILLI, 0, k, cpu_after, cnt, small, idle, allowed, sh_cpu, sh_ngpu,
                                             sh_p, units, n_first, share_vals, share_idx, share_full, scratch)
                    score = lex_score(frag[n] - fa, frag_multi[n] - fm, tie_weight)
                else:
                    fa = node_frag_after(n, MILLI, 0, k, cpu_after, cnt, small, idle,
                                         allowed, sh_cpu, sh_milli, sh_ngpu, sh_p, units, packed, n_act)
                    if policy == POLICY_FGD:
                        score = sigmoid_score(frag[n] - fa)
                    else:
                        score = gpuq_score(frag[n] - fa, tie_weight)
            memo_ver[key, n] = node_ver[n]
            memo_score[key, n] = score
            memo_gpu[key, n] = gpu
            if score > best_score:  # ties: the node first in node_order keeps it
                best_score = score
                best_node = n
                best_gpu = gpu
        out_gpu[t] = -1
        if best_node < 0:
            out_node[t] = -1
            continue
        n = best_node
        out_node[t] = node_order[n]
        allocated += k * milli
        # 3. bind: subtract, then refresh the node's caches
        node_ver[n] += 1
        cpu_free[n] -= cpu
        mem_free[n] -= mem
        if sharing:
            if best_gpu < 0:  # random policy: the tightest GPU that fits
                best_r = MILLI + 1
                for j in range(ngpu[n]):
                    r = gpu_free[n, j]
                    if r >= milli and r < best_r:
                        best_r = r
                        best_gpu = j
            gpu_free[n, best_gpu] -= milli
            out_gpu[t] = best_gpu
        elif k > 0:
            taken = 0
            for j in range(ngpu[n]):
                if taken < k and gpu_free[n, j] == MILLI:
                    gpu_free[n, j] = 0
                    taken += 1
                    if taken == 1:
                        out_gpu[t] = j
        if k > 0:
            fit_summary(n, gpu_free, ngpu, max_free, n_full)
        if use_frag:
            refresh(n, lex, gpu_free, ngpu, cpu_free, cnt, small, idle, frag, frag_multi, allowed, sh_cpu, sh_milli,
                    sh_ngpu, sh_p, units, packed, n_act, n_first, share_vals, share_idx, share_full, scratch)
        else:
            idle[n] -= k * milli
