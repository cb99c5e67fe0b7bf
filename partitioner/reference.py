"""Slow, obvious pure-Python twins of the numba kernels: the test oracles.

Each function recomputes everything from scratch (no caches, no incremental
updates) so a kernel bug cannot hide behind a shared helper.
"""

from __future__ import annotations

import math
import random

MILLI = 1000


def fgd_fragment(cpu, gpu_free, model, shapes, packed=0):
    """F of a node with free CPU ``cpu`` and GPU shares ``gpu_free`` (README formula; gpuq variants)."""
    idle = sum(gpu_free)
    total = 0.0
    for cpu_m, milli_m, ngpu_m, models_m, p in shapes:
        allowed = (models_m >> model) & 1 == 1
        if packed:
            if ngpu_m == 0 or not allowed:
                f = idle
            else:
                fit = sum(r // milli_m for r in gpu_free) // ngpu_m
                if cpu_m > 0:
                    fit = min(fit, cpu // cpu_m)
                f = idle - fit * ngpu_m * milli_m
            total += p * f
            if packed == 1:
                continue
        if ngpu_m == 0 or not allowed or cpu < cpu_m or sum(r >= milli_m for r in gpu_free) < ngpu_m:
            f = idle
        else:
            f = sum(r for r in gpu_free if r < milli_m)
        total += p * f
    return total


def replay(nodes, tasks, shapes, node_order, policy, seed=42, levels=50.0, variant=2, n_fgd=-1):
    """Reference openb replay. ``nodes``: (cpu, mem, ngpu, model); ``tasks``: (cpu, mem, ngpu, milli, models).

    Returns the chosen node per task (-1 = dropped). Policies: 0 random, 1 best-fit, 2 fgd, 3 gpuq.
    gpuq with ``variant`` 3 (lexicographic): every option keyed by the pair (FGD's score over
    ``shapes[:n_fgd]``, all shapes if ``n_fgd`` < 0; the multi-task fragment's ``levels``-level
    score over all shapes), compared as a tuple, from the first arrival. Other variants with
    ``n_fgd`` >= 0: fgd over ``shapes[:n_fgd]`` until the placed GPU share reaches
    ``MULTI_TASK_FROM`` of the capacity (the load rule), gpuq over all shapes from then on.
    """
    from partitioner.kernels.replay import MULTI_TASK_FROM

    rng = random.Random(seed)
    cpu = [n[0] for n in nodes]
    mem = [n[1] for n in nodes]
    gpus = [[MILLI] * n[2] for n in nodes]
    capacity = MILLI * sum(n[2] for n in nodes)
    placed = 0
    gpuq = policy == 3
    lex = gpuq and variant == 3
    all_shapes = shapes
    first_shapes = shapes[:n_fgd] if n_fgd >= 0 else shapes
    out = []
    for t_cpu, t_mem, k, milli, models in tasks:
        if gpuq and not lex and n_fgd >= 0 and placed < MULTI_TASK_FROM * capacity:  # lex: no load rule
            policy, shapes = 2, all_shapes[:n_fgd]
        elif gpuq:
            policy, shapes = 3, all_shapes
        packed = variant if policy == 3 else 0
        sharing = k == 1 and milli < MILLI
        best = None  # (score, node, gpu)
        feasible = []
        for n in node_order:
            if cpu[n] < t_cpu or mem[n] < t_mem:
                continue
            if k > 0 and ((models >> nodes[n][3]) & 1 == 0 or sum(r >= milli for r in gpus[n]) < k):
                continue
            feasible.append(n)
            if policy == 0:
                continue
            if lex:
                before_fgd = fgd_fragment(cpu[n], gpus[n], nodes[n][3], first_shapes, 0)
                before_multi = fgd_fragment(cpu[n], gpus[n], nodes[n][3], all_shapes, 1)
            else:
                before = fgd_fragment(cpu[n], gpus[n], nodes[n][3], shapes, packed)
            options = []
            if sharing:
                for j, r in enumerate(gpus[n]):
                    if r >= milli:
                        after = list(gpus[n])
                        after[j] -= milli
                        options.append((j, after))
            else:
                after = list(gpus[n])
                taken = 0
                for j, r in enumerate(after):
                    if taken < k and r == MILLI:
                        after[j] = 0
                        taken += 1
                options.append((-1, after))
            node_best = None
            for j, after in options:
                if policy == 1:
                    s = math.floor(100 * (1 - (0.5 * (cpu[n] - t_cpu) / 128000 + 0.5 * sum(after) / 8000)))
                    tie = -gpus[n][j] if j >= 0 else 0
                elif lex:
                    d_fgd = before_fgd - fgd_fragment(cpu[n] - t_cpu, after, nodes[n][3], first_shapes, 0)
                    d_multi = before_multi - fgd_fragment(cpu[n] - t_cpu, after, nodes[n][3], all_shapes, 1)
                    s = (math.floor(100 / (1 + math.exp(-d_fgd / 1000))),
                         math.floor(levels / (1 + math.exp(-d_multi / 1000))))
                    tie = 0  # the first GPU reaching the best pair, as fgd
                else:
                    delta = before - fgd_fragment(cpu[n] - t_cpu, after, nodes[n][3], shapes, packed)
                    s = math.floor((100 if policy == 2 else levels) / (1 + math.exp(-delta / 1000)))
                    tie = -gpus[n][j] if (j >= 0 and policy == 3) else 0
                if node_best is None or (s, tie) > node_best[:2]:
                    node_best = (s, tie, j)
            if node_best is None:  # never: a feasible node has at least one option
                continue
            if best is None or node_best[0] > best[0]:
                best = (node_best[0], n, node_best[2])
        if policy == 0 and feasible:
            raise NotImplementedError("random policy: compare only the feasible sets")
        if best is None:
            out.append(-1)
            continue
        _, n, j = best
        placed += k * milli
        cpu[n] -= t_cpu
        mem[n] -= t_mem
        if sharing:
            gpus[n][j] -= milli
        else:
            taken = 0
            for jj, r in enumerate(gpus[n]):
                if taken < k and r == MILLI:
                    gpus[n][jj] = 0
                    taken += 1
        out.append(n)
    del rng
    return out


def place_node_fragment(units, cpu_after, shapes, packed):
    """Service fragment in thousandths of a GPU (10 per block): ``units`` = [(kind, free_blocks, free_mem)] of one
    node after the change.

    ``packed`` 0: FGD's fragment; 1: the CPU-bounded multi-task fragment; 2: both, summed shape by
    shape (multi-task term first, as the replay adds them).
    """
    idle = sum(b for k, b, _ in units if k <= 1)
    total = 0.0
    for kind, blocks, mem, count, cpu_m, p in shapes:
        if kind == 0:
            fgd = multi = idle * 10
        else:
            usable = units_fit = unusable = 0
            for k, b, m in units:
                if k > 1:
                    continue
                ok = (k == 1 and b >= blocks and m >= mem) if kind == 1 else (k == 0 and b == 100)
                if ok:
                    usable += 1
                    units_fit += b // blocks if kind == 1 else 1
                else:
                    unusable += b
            room = cpu_after >= cpu_m and usable >= count
            fgd = 10 * (unusable if room and units_fit // count > 0 else idle)
            fits = min(units_fit // count, cpu_after // cpu_m) if cpu_m > 0 else units_fit // count
            multi = 10 * (idle - fits * count * (blocks if kind == 1 else 100) if room and fits > 0 else idle)
        if packed in (1, 2):
            total += p * multi
        if packed in (0, 2):
            total += p * fgd
    return total


def mig_pick(need, req_cpu, req_ram, nodes, gpus, units):
    """Twin of :func:`partitioner.kernels.mig.mig_pick` on plain lists.

    ``nodes``: [(free_cpu, free_mem)]; ``gpus``: [(node, mask, is_mig, ok, profile_id, size, max_count, starts)]
    with ``starts`` a list of allowed starts; ``units``: [(gpu, kind, profile_id, free_blocks)].
    Returns (best node or -1 / -2, reused per node or -1).
    """
    cands = []
    any_cpu = False
    reused_out = []
    for n, (cpu, mem) in enumerate(nodes):
        if cpu < req_cpu or mem < req_ram:
            reused_out.append(-1)
            continue
        any_cpu = True
        found = reused = 0
        free_slices = 0
        for g, (node, mask, is_mig, ok, pid, size, max_count, starts) in enumerate(gpus):
            if node != n:
                continue
            if is_mig:
                free_slices += 8 - bin(mask).count("1")
            if not ok or found >= need:
                continue
            mine = [u for u in units if u[0] == g and u[2] == pid]
            free = sum(1 for u in mine if u[1] == 2 and u[3] == 100)
            take = min(free, need - found)
            found += take
            reused += take
            existing = len(mine)
            for s in sorted(starts):
                if found >= need or existing >= max_count:
                    break
                span = ((1 << size) - 1) << s
                if mask & span == 0:
                    mask |= span
                    existing += 1
                    found += 1
        if found >= need:
            reused_out.append(reused)
            cands.append(((reused, -free_slices, -n), n))
        else:
            reused_out.append(-1)
    if not cands:
        return (-1 if any_cpu else -2), reused_out
    return max(cands)[1], reused_out


def mig_future(model, mask: int, counts: tuple[int, ...], memo=None) -> frozenset[tuple[str, ...]]:
    """Every multiset of profile names that could still be added to a GPU in state (mask, counts).

    ``memo`` lives for one top-level call only (the recursion revisits states many times).
    """
    memo = {} if memo is None else memo
    if (mask, counts) in memo:
        return memo[mask, counts]
    out = {()}
    for i, p in enumerate(model.mig_profiles):
        if counts[i] >= p.max_count:
            continue
        after = (*counts[:i], counts[i] + 1, *counts[i + 1:])
        for s in p.starts:
            span = ((1 << p.memory_slices) - 1) << s
            if mask & span == 0:
                out |= {tuple(sorted((*rest, p.name))) for rest in mig_future(model, mask | span, after, memo)}
    memo[mask, counts] = result = frozenset(out)
    return result


def best_start(model, profile, mask: int, counts) -> int | None:
    """Twin of :func:`partitioner.mig.best_start`: the free valid start whose future contains the
    lowest start's and is the largest (ties: lowest), by plain set arithmetic."""
    i = model.mig_profiles.index(profile)
    if counts[i] >= profile.max_count:
        return None
    size = profile.memory_slices
    free = [s for s in profile.starts if mask & (((1 << size) - 1) << s) == 0]
    if not free:
        return None
    after = (*counts[:i], counts[i] + 1, *counts[i + 1:])
    futures = {s: mig_future(model, mask | (((1 << size) - 1) << s), after) for s in free}
    base = futures[free[0]]
    keep = [s for s in free if futures[s] >= base]
    return max(keep, key=lambda s: (len(futures[s]), -s))


def score_nodes(request, nodes, shapes, policy, variant=1, n_fgd=-1, levels=100.0, fit_ties=False):
    """Twin of :func:`partitioner.kernels.place.score_nodes` (policies best-fit 1, fgd 2, gpuq 3, first-fit 4).

    ``request`` = (kind 2 whole / 1 blocks, blocks, gpu memory, count, cpu, ram); ``nodes`` =
    [(free_cpu, free_ram, cpu, units)] with ``units`` = [(kind, free_blocks, free_mem, ok)], kinds as in
    :mod:`partitioner.encode`; ``shapes`` = [(kind, blocks, mem, count, cpu, p)], FGD's target
    workload ``shapes[:n_fgd]`` (all if ``n_fgd`` < 0). fgd scores ⌊100·σ(ΔF/1000)⌋ over FGD's shapes
    (F in thousandths); gpuq's ``variant`` 0-2 ⌊levels·σ(ΔF/1000)⌋ over all shapes with fragment ``packed`` = variant,
    the tightest unit among a node's equal scores; ``variant`` 3 the pair (FGD's ⌊100·σ⌋ over
    FGD's shapes, the multi-task ⌊levels·σ⌋ over all) as ``pair[0] * LEX_BASE + pair[1]``;
    ``fit_ties``: gpuq adds 0.999·fit. Returns per node (score or -inf, the unit index on that node
    a blocks request takes or -1). No cache, no de-duplication of alike units: every unit is scored,
    the first best one kept.
    """
    from partitioner.kernels.replay import LEX_BASE

    kind, blocks, mem, count, cpu, ram = request
    gpuq = policy == 3
    lex = gpuq and variant == 3
    fgd_shapes = shapes[:n_fgd] if 0 <= n_fgd <= len(shapes) else shapes

    def sig(delta, lv):
        return math.floor(lv / (1.0 + math.exp(-delta / 1000.0)))

    def fragments(units_after, cpu_left):
        """What the score compares: (F,) or, for the lexicographic key, (F_fgd, F_multi)."""
        if lex:
            return (place_node_fragment(units_after, cpu_left, fgd_shapes, 0),
                    place_node_fragment(units_after, cpu_left, shapes, 1))
        if gpuq:
            return (place_node_fragment(units_after, cpu_left, shapes, variant),)
        return (place_node_fragment(units_after, cpu_left, fgd_shapes, 0),)

    def score(before, after, fit):
        if lex:
            return sig(before[0] - after[0], 100.0) * LEX_BASE + sig(before[1] - after[1], levels) + (
                0.999 * fit if fit_ties else 0.0)
        if gpuq:
            return sig(before[0] - after[0], levels) + (0.999 * fit if fit_ties else 0.0)
        return sig(before[0] - after[0], 100.0)

    out = []
    for free_cpu, free_ram, node_cpu, units in nodes:
        if free_cpu < cpu or free_ram < ram:
            out.append((-math.inf, -1))
            continue
        cpu_after = free_cpu - cpu
        own = [(k, b, m) for k, b, m, _ in units]
        before = fragments(own, free_cpu)
        idle = sum(b for k, b, _, _ in units if k <= 1)
        gpus = sum(1 for k, *_ in units if k <= 1)
        cpu_share = cpu_after / node_cpu if node_cpu > 0 else 0.0
        if kind == 2:
            free = [i for i, (k, b, _, ok) in enumerate(units) if ok and k == 0 and b == 100]
            if len(free) < count:
                out.append((-math.inf, -1))
                continue
            fit = 1.0 - 0.5 * cpu_share - 0.5 * (idle - 100 * count) / max(100 * gpus, 1)
            if policy in (1, 4):
                out.append((math.floor(100.0 * fit) if policy == 1 else -float(len(out)), -1))
                continue
            # the fragment counts the first ``count`` free exclusive GPUs of the node as taken
            taken = [i for i, (k, b, _, _) in enumerate(units) if k == 0 and b == 100][:count]
            after_units = [(k, 0 if i in taken else b, m) for i, (k, b, m, _) in enumerate(units)]
            out.append((score(before, fragments(after_units, cpu_after), fit), -1))
            continue
        best, best_unit = (-math.inf, -math.inf), -1
        for i, (k, b, m, ok) in enumerate(units):
            if not ok or k not in (1, 3) or b < blocks or m < mem:
                continue
            fit = 1.0 - 0.5 * cpu_share - 0.5 * (idle - (blocks if k == 1 else 0)) / max(100 * gpus, 1)
            tight = (100 - b + blocks) / 1000.0
            tie = 0.0
            if policy == 1:
                s = math.floor(100.0 * fit) + tight * 0.1
            elif policy == 4:
                s = -float(len(out))
            else:
                after = before
                if k == 1:
                    after_units = [(kk, bb - blocks, mm - mem) if j == i else (kk, bb, mm)
                                   for j, (kk, bb, mm) in enumerate(own)]
                    after = fragments(after_units, cpu_after)
                s = score(before, after, fit)
                if gpuq and not lex:
                    tie = -float(b)  # the replay's sharing GPU: the tightest among equal scores
            if (s, tie) > best:
                best, best_unit = (s, tie), i
        out.append((best[0], best_unit))
    return out
