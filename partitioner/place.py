"""Where a request goes: validate -> encode -> kernel -> decode.

:class:`Packer` encodes a :class:`ClusterState` once; :meth:`Packer.place` is a
pure query, :meth:`Packer.commit` subtracts a placement from the encoded state
(so the next query in the same admission cycle sees it) and
:meth:`Packer.release` adds it back.

Modes are strict: whole-GPU requests take free ``exclusive`` GPUs, MIG requests
take MIG instances of ``mig`` GPUs (an existing free one, or a new one at a
free valid start, ``Slice.mig_uuid`` None), blocks requests take room on a
``shared`` GPU or a shared MIG instance. Mode changes are
:mod:`partitioner.repartition`'s business.

Gangs (``replicas`` > 1) are placed member by member on a scratch commit and
rolled back unless every member fits: all or nothing.

Importing this module compiles nothing; the first placement (or
:func:`warmup`) loads the cached kernels.
"""

from __future__ import annotations

import copy
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from itertools import combinations

import numpy as np

from partitioner.catalog import MigProfile, all_mig_profile_names, lookup_model
from partitioner.coexistence import Held, gpu_reason, node_reason
from partitioner.encode import (
    KIND_GPU,
    KIND_MIG,
    KIND_MIG_SHARED,
    KIND_SHARED,
    Encoded,
    UnitInfo,
    encode,
    gpu_model_key,
)
from partitioner.mig import best_start, count_new_instances, free_starts, span_mask
from partitioner.policies import DEFAULT_POLICY, POLICIES, POLICY_IDS, gpuq_rule
from partitioner.types import (
    BLOCKS_PER_GPU,
    ClusterState,
    GpuMode,
    NoFit,
    Placement,
    ReplicaPlacement,
    Request,
    Slice,
    SliceKind,
)

__all__ = ["DEFAULT_POLICY", "POLICIES", "Packer", "place", "warmup"]

# Per GPU of the encoding: usable, profile id, size, max count, starts bitmask, the profile (None: not usable).
_MigGeometry = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[MigProfile | None]]

_DEFAULT_DEMAND = (Request(gpus=1), Request(blocks=50), Request(blocks=25), Request(blocks=10))


def warmup() -> None:
    """Compile (or load from cache) every kernel; safe to call from a background thread."""
    from partitioner.kernels.place import score_nodes
    from partitioner.kernels.replay import replay

    i64 = np.zeros(1, dtype=np.int64)
    f64 = np.ones(1, dtype=np.float64)
    score_nodes(1, 1, 0, 1, 0, 0, np.ones(1, dtype=np.bool_), i64 + 1000, i64 + 1000, i64 + 1000,
                np.array([0, 1], dtype=np.int64), i64 + 1, i64 + 100, i64 + 100,
                i64 + 1, i64 + 10, i64, i64 + 1, i64, f64, 3, 3, 1, 30.0, False, np.zeros(1),
                np.zeros(1, dtype=np.int64), np.zeros((1, 2)), np.zeros(1, dtype=np.bool_))
    from partitioner.kernels.mig import mig_pick

    mig_pick(1, 0, 0, i64 + 1, i64 + 1, i64.copy(), i64.copy(), np.ones(1, dtype=np.bool_), np.ones(1, dtype=np.bool_),
             i64 + 19, i64 + 1, i64 + 7, i64 + 127, i64.copy(), i64 + 2, i64 + 19, i64 + 100, i64.copy())
    one = np.ones(1, dtype=np.int64)
    replay(one * 1000, one * 1000, one, i64, i64, one, one, one, one * 500, one * -1,
           one, one * 500, one, one * -1, f64, 3, 42, 50.0, 2, i64.copy(), i64.copy(), 1)


_Shapes = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _demand_shapes(demand: Sequence[Request]) -> tuple[_Shapes, int, gpuq_rule.TargetWorkload]:
    """The demand's target workload as the replay takes it from a trace (``simulate.target_shapes``).

    Shapes (kind, blocks, GPU memory, count, CPU, models) counted over the demand's members
    (MIG requests left out), the most frequent covering gpuq's 98 % kept, most frequent first,
    frequencies over all members; returns the kernel arrays, how many leading shapes are FGD's
    95 % and the shapes as gpuq's rule reads them (share in thousandths: blocks x 10).
    """
    counts: Counter[tuple[int, int, int, int, int, tuple[str, ...]]] = Counter()
    for req in demand or _DEFAULT_DEMAND:
        if req.mig_profile:
            continue
        models = tuple(sorted(_model_keys(req.gpu_models))) if req.gpu_models else ()
        if req.gpus > 0:
            key = (2, 100, 0, req.gpus, req.cpus_milli, models)
        elif req.blocks > 0:
            key = (1, req.blocks, req.gpu_memory_mib, 1, req.cpus_milli, models)
        else:
            key = (0, 0, 0, 0, req.cpus_milli, ())
        counts[key] += max(req.replicas, 1)
    total = sum(counts.values()) or 1
    chosen = gpuq_rule.most_common_covering(counts, gpuq_rule.GPUQ_COVERAGE)
    n_fgd = len(gpuq_rule.most_common_covering(counts, gpuq_rule.FGD_COVERAGE))  # a prefix of ``chosen``

    def col(i: int) -> np.ndarray:
        return np.array([k[i] for k, _ in chosen], dtype=np.int64)

    kind, blocks = col(0), col(1)
    p = np.array([c / total for _, c in chosen], dtype=np.float64)
    workload = gpuq_rule.TargetWorkload(
        p=p, ngpu=np.where(kind == 2, col(3), np.where(kind == 1, 1, 0)),
        milli=np.where(kind == 2, 1000, blocks * (1000 // BLOCKS_PER_GPU)), cpu=col(4),
        pinned=np.array([bool(k[5]) for k, _ in chosen], dtype=np.bool_))
    return (kind, blocks, col(2), col(3), col(4), p), n_fgd, workload


class Packer:
    """The cluster encoded once, answering placements for one admission cycle."""

    def __init__(self, cluster: ClusterState, *, policy: str = DEFAULT_POLICY, demand: Sequence[Request] = (),
                 fit_ties: bool = False) -> None:
        """``demand``: the requests to pack for (their shapes are the target workload, gpuq's rule is chosen from them).

        ``fit_ties``: gpuq breaks ties of its score by best fit; by default by node order, the replay's rule
        (both measured by ``benchmarks/partitioner_bench.py --live``, docs/partitioner.md). ``variant`` is gpuq's
        rule for this demand and cluster (``policies.gpuq_rule.choose_variant``, the replay's choice).
        """
        if policy not in POLICY_IDS:
            raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
        self.cluster = cluster
        self.policy = policy
        self.fit_ties = fit_ties
        self.enc: Encoded = encode(cluster)
        self._shapes, self._n_fgd, workload = _demand_shapes(demand)
        # gpuq's rule, chosen once from the demand and the cluster's GPUs and CPU (the replay's choice, same function):
        # the GPUs the shapes can use (not MIG, as the load rule counts them) and every node's CPU
        gpu_capacity_milli = 1000 * int((self.enc.unit_kind <= KIND_SHARED).sum())
        self.variant = gpuq_rule.choose_variant(workload, gpu_capacity_milli, int(self.enc.node_cpu.sum()),
                                                fgd_is_prefix=True)  # FGD's 95 % and the 98 % come from one count
        self._rng = np.random.default_rng(42)
        self._gpu_index = {g.uuid: i for i, g in enumerate(self.enc.gpus)}
        self._unit_of: dict[str, int] = {}  # GPU uuid, or "uuid:start" for a MIG instance -> unit
        self._node_of: dict[str, int] = {}
        self._reindex()
        self._empty_enc: Encoded | None = None  # the emptied cluster, encoded on first need (never-fit checks)
        # per-cycle memos: "never" answers and model filters do not change with commits
        self._never_memo: dict[Request, NoFit | None] = {}
        self._allowed_memo: dict[tuple[str, ...], np.ndarray] = {}
        self._gpu_keys = [gpu_model_key(g) for g in self.enc.gpus]
        self._per_node_memo: dict[frozenset[str], Counter[int]] = {}
        self._biggest_memo: dict[frozenset[str], int] = {}
        self._mig_memo: dict[tuple[str, tuple[str, ...]], _MigGeometry] = {}
        self._gpu_is_mig = np.array([g.mode is GpuMode.MIG for g in self.enc.gpus], dtype=np.bool_)
        self._node_labels = {n.node_id: frozenset(n.labels) for n in cluster.nodes}
        self._label_memo: dict[tuple[tuple[str, str], ...], np.ndarray] = {}
        self._avoiding: frozenset[str] = frozenset()  # node ids left out of this pass (Request.avoid_nodes)
        # coexistence: the workload classes each GPU and node holds, kept in step by commits and releases
        self._held = Held(self.enc.gpus, self.enc.gpu_node, cluster.nodes)
        self._node_names = [n.name or n.node_id for n in cluster.nodes]
        # per-node fragmentation F, recomputed by the kernel only for nodes a commit changed
        self._frag = np.zeros((len(self.enc.node_ids), 2), dtype=np.float64)  # (F, F_multi of the lex rule)
        self._frag_ok = np.zeros(len(self.enc.node_ids), dtype=np.bool_)
        self._frag_policy = -1  # the policy id the cached F was computed under (gpuq's load rule switches it)
        self._frag_variant = self.variant  # and gpuq's variant (fixed per packer unless set by hand)
        # NVLink: only clusters that report peers pay for the clique search (node choice and GPU choice)
        self._nvlink = any(g.nvlink_peers for g in self.enc.gpus)
        self._clique_memo: dict[tuple, tuple[int, ...] | None] = {}
        self._no_clique = 0  # the last whole-GPU member was placed without an NVLink clique of this size
        self._gpu_start_memo: np.ndarray | None = None

    # -- public --------------------------------------------------------------

    def place(self, request: Request) -> Placement | NoFit:
        """Where ``request`` (all its replicas) would go now; changes nothing.

        ``request.avoid_nodes`` is a soft preference: placed without those nodes if it fits so, else as if
        there were none (the nodes that failed its launches are only the last choice).
        """
        if request.avoid_nodes and not self._avoiding:
            self._avoiding = frozenset(request.avoid_nodes)
            try:
                elsewhere = self.place(request)
            finally:
                self._avoiding = frozenset()
            if isinstance(elsewhere, Placement):
                return elsewhere
        problem = self._validate(request)
        if problem is not None:
            return problem
        memo_key = replace(request, replicas=1)
        if memo_key not in self._never_memo:
            self._never_memo[memo_key] = self._never(request)
        never = self._never_memo[memo_key]
        if never is None and request.replicas > 1:
            if request not in self._never_memo:
                self._never_memo[request] = self._never_gang(request)
            never = self._never_memo[request]
        if never is not None:
            return never
        replicas: list[ReplicaPlacement] = []
        score = 0.0
        no_clique = 0
        try:
            for _ in range(request.replicas):  # >= 1: _validate refused fewer
                one = self._place_one(request)
                if isinstance(one, NoFit):
                    if request.replicas > 1:
                        return NoFit(f"gang of {request.replicas}: only {len(replicas)} members fit; {one.reason}")
                    return one
                member, member_score = one
                if request.workload:
                    member = replace(member, workload=request.workload)
                no_clique, self._no_clique = max(no_clique, self._no_clique), 0
                replicas.append(member)
                score = max(score, member_score)
                self._apply(member, +1)  # scratch commit so the next member sees it
        finally:
            for member in reversed(replicas):
                self._apply(member, -1)
        note = f"no NVLink-connected set of {no_clique} free GPUs on any node: placed without one" if no_clique else ""
        return Placement(replicas=tuple(replicas), score=int(score), note=note)

    def commit(self, placement: Placement) -> None:
        """Subtract ``placement`` from the encoded state."""
        for member in placement.replicas:
            self._apply(member, +1)

    def release(self, placement: Placement) -> None:
        """Add ``placement`` back to the encoded state (undoes :meth:`commit`)."""
        for member in reversed(placement.replicas):
            self._apply(member, -1)

    def fork(self) -> Packer:
        """An independent copy of this packer (its commits and releases do not touch this one).

        Copies the encoded arrays and the fragment cache; shares the memos that depend only on
        the nodes and GPUs (never-fit answers, model filters, cliques). Far cheaper than encoding
        the cluster again: a simulation keeps one packer in step and forks it for every cycle.
        """
        if self._empty_enc is None:  # computed once here, not once per fork
            self._empty_enc = _emptied_encoding(self.cluster)
        twin = object.__new__(Packer)
        twin.__dict__.update(self.__dict__)
        enc = self.enc
        twin.enc = copy.copy(enc)
        for name, value in vars(enc).items():
            if isinstance(value, (np.ndarray, list)):
                setattr(twin.enc, name, value.copy())
        twin._frag, twin._frag_ok = self._frag.copy(), self._frag_ok.copy()
        twin._gpu_is_mig = self._gpu_is_mig.copy()
        twin._mig_memo = {}
        twin._allowed_memo = {}  # per unit: a fork's new MIG instances may shift its units (same count, other order)
        twin._held = self._held.copy()
        return twin

    def refresh_nodes(self, cluster: ClusterState, changed: Sequence[int]) -> bool:
        """Re-encode nodes ``changed`` (indices) from ``cluster``, in place; False if it cannot.

        ``cluster`` must have the same nodes and GPUs in the same order; only what they hold and
        their modes may differ. Nodes with MIG GPUs (before or after) are refused (their units
        come and go): the caller then builds a new packer.
        """
        enc = self.enc
        if len(cluster.nodes) != len(enc.node_ids):
            return False
        if not changed:
            self.cluster = cluster
            return True
        sub = encode(ClusterState(tuple(cluster.nodes[i] for i in changed)))
        gpu_start = self._gpu_start()
        for j, n in enumerate(changed):
            lo, hi = int(enc.node_unit_start[n]), int(enc.node_unit_start[n + 1])
            slo, shi = int(sub.node_unit_start[j]), int(sub.node_unit_start[j + 1])
            g0, g1 = int(gpu_start[n]), int(gpu_start[n + 1])
            sg = np.flatnonzero(sub.gpu_node == j)
            if (hi - lo != shi - slo or g1 - g0 != len(sg) or enc.node_ids[n] != sub.node_ids[j]
                    or self._gpu_is_mig[g0:g1].any() or any(sub.gpus[g].mode is GpuMode.MIG for g in sg)):
                return False
        for j, n in enumerate(changed):
            lo, hi = int(enc.node_unit_start[n]), int(enc.node_unit_start[n + 1])
            slo, shi = int(sub.node_unit_start[j]), int(sub.node_unit_start[j + 1])
            enc.node_free_cpu[n], enc.node_free_mem[n] = sub.node_free_cpu[j], sub.node_free_mem[j]
            for name in ("unit_kind", "unit_free_blocks", "unit_free_mem", "unit_mem", "unit_profile", "unit_start"):
                getattr(enc, name)[lo:hi] = getattr(sub, name)[slo:shi]
            enc.units[lo:hi] = sub.units[slo:shi]
            g0 = int(gpu_start[n])
            for k, g in enumerate(np.flatnonzero(sub.gpu_node == j)):
                enc.gpus[g0 + k] = sub.gpus[g]
            self._held.reset(node=n, state=cluster.nodes[n],
                             gpus=[(g, enc.gpus[g]) for g in range(g0, int(gpu_start[n + 1]))])
            self._frag_ok[n] = False
        self._mig_memo = {}
        self.cluster = cluster
        return True

    def _gpu_start(self) -> np.ndarray:
        """GPUs of node ``n`` are ``start[n] .. start[n+1]-1`` in the encoding (they are listed node by node)."""
        found = self._gpu_start_memo
        if found is None:
            found = np.searchsorted(self.enc.gpu_node, np.arange(len(self.enc.node_ids) + 1))
            self._gpu_start_memo = found
        return found

    # -- validation ----------------------------------------------------------

    def _validate(self, req: Request) -> NoFit | None:
        kinds = sum([req.gpus > 0, bool(req.mig_profile), req.blocks > 0])
        if kinds > 1:
            return NoFit("ask for one of: whole GPUs, a MIG profile, or blocks", never=True)
        if req.gpus < 0 or req.blocks < 0 or req.blocks > BLOCKS_PER_GPU or req.cpus_milli < 0 or req.memory_mib < 0:
            return NoFit("negative resources or more than 100 blocks", never=True)
        if req.gpu_memory_mib < 0 or req.replicas < 1 or req.mig_count < 1:
            return NoFit("gpu_memory_mib must be >= 0, replicas and mig_count >= 1", never=True)
        if req.gpu_memory_mib > 0 and req.blocks == 0:
            return NoFit("gpu_memory_mib needs blocks", never=True)
        if req.mig_profile and req.mig_profile.strip().lower() not in all_mig_profile_names():
            return NoFit(f"unknown MIG profile {req.mig_profile}", never=True)
        return None

    def _nodes_ok(self, req: Request) -> np.ndarray | None:
        """Per node: it carries every label the request needs and is not avoided in this pass (None: any node)."""
        labels_ok = self._labels_ok(req)
        if not self._avoiding:
            return labels_ok
        away = np.array([node_id not in self._avoiding for node_id in self.enc.node_ids], dtype=np.bool_)
        return away if labels_ok is None else labels_ok & away

    def _labels_ok(self, req: Request) -> np.ndarray | None:
        """Per node: it carries every label the request needs (None: the request needs none)."""
        if not req.node_labels:
            return None
        memo = self._label_memo.get(req.node_labels)
        if memo is not None and memo.shape[0] == len(self.enc.node_ids):
            return memo
        wanted = frozenset(req.node_labels)
        out = np.array([wanted <= self._node_labels.get(node_id, frozenset()) for node_id in self.enc.node_ids],
                       dtype=np.bool_)
        self._label_memo[req.node_labels] = out
        return out

    def _allowed(self, req: Request) -> np.ndarray:
        """Per unit: the GPU's model is allowed (memoized until a new MIG instance changes the units)."""
        enc = self.enc
        if not req.gpu_models:
            return np.ones(enc.unit_kind.shape[0], dtype=np.bool_)
        memo = self._allowed_memo.get(req.gpu_models)
        if memo is not None and memo.shape[0] == enc.unit_kind.shape[0]:
            return memo
        wanted = _model_keys(req.gpu_models)
        ok_gpu = np.array([gpu_model_key(g) in wanted for g in enc.gpus], dtype=np.bool_)
        out = ok_gpu[enc.unit_gpu] if enc.unit_gpu.shape[0] else np.zeros(0, dtype=np.bool_)
        self._allowed_memo[req.gpu_models] = out
        return out

    def _never(self, req: Request) -> NoFit | None:
        """A NoFit with ``never=True`` when even the emptied cluster cannot hold one member."""
        if self._empty_enc is None:
            self._empty_enc = _emptied_encoding(self.cluster)
        empty = self._empty_enc
        if not empty.node_ids:
            return NoFit("the cluster has no nodes", never=True)
        if req.cpus_milli > empty.node_cpu.max() or req.memory_mib > empty.node_mem.max():
            return NoFit(f"needs {req.cpus_milli / 1000:g} CPUs and {req.memory_mib} MiB on one node; "
                         f"the largest node has {int(empty.node_cpu.max()) / 1000:g} CPUs and "
                         f"{int(empty.node_mem.max())} MiB", never=True)
        if req.gpus == 0 and not req.mig_profile and req.blocks == 0:
            return None
        keys = self._gpu_keys  # same GPU order in the emptied encoding
        models = set(keys)
        allowed = models if not req.gpu_models else _model_keys(req.gpu_models) & models
        if not allowed:
            return NoFit(f"no GPU model matches {', '.join(req.gpu_models)}", never=True)
        per_node = self._per_node_memo.get(frozenset(allowed))
        if per_node is None:
            per_node = Counter(int(empty.gpu_node[i]) for i, k in enumerate(keys) if k in allowed)
            self._per_node_memo[frozenset(allowed)] = per_node
        most = max(per_node.values(), default=0)
        if req.gpus > most:
            return NoFit(f"needs {req.gpus} whole GPUs on one node; the largest node has {most}", never=True)
        if req.blocks > 0:
            biggest = self._biggest_memo.get(frozenset(allowed))
            if biggest is None:
                biggest = max((g.memory_mib for g, k in zip(empty.gpus, keys, strict=True) if k in allowed),
                              default=0)
                self._biggest_memo[frozenset(allowed)] = biggest
            if req.gpu_memory_mib > biggest:
                return NoFit(f"needs {req.gpu_memory_mib} MiB of GPU memory; the largest allowed GPU has {biggest}",
                             never=True)
        if req.mig_profile:
            fits = []
            for key in allowed:
                model = lookup_model(key)
                profile = model.mig_profile(req.mig_profile) if model else None
                if profile is not None and req.mig_count <= profile.max_count * most:
                    fits.append(key)
            if not fits:
                return NoFit(f"no allowed GPU model has MIG profile {req.mig_profile} (x{req.mig_count})", never=True)
        return None

    def _never_gang(self, req: Request) -> NoFit | None:
        """``never=True`` when the emptied cluster cannot hold all ``replicas`` members at once.

        Counts, per node, how many members its full capacity could hold (any GPU mode: idle GPUs
        can be re-carved): whole GPUs ``⌊allowed GPUs / gpus⌋``, blocks ``Σ_gpu min(⌊100/blocks⌋,
        ⌊memory/gpu_memory⌋)``, MIG ``⌊Σ_gpu max_count / mig_count⌋``, each capped by the node's CPU and
        RAM. The member check alone (memoised with ``replicas=1``) would accept 4 × 1 GPU on 3 GPUs.
        """
        empty = self._empty_enc
        if empty is None:
            empty = self._empty_enc = _emptied_encoding(self.cluster)
        keys = self._gpu_keys
        wanted = _model_keys(req.gpu_models) if req.gpu_models else None
        per_node = np.zeros(len(empty.node_ids), dtype=np.int64)
        if req.gpus > 0:  # the common case, vectorised (thousands of GPUs)
            allowed = (np.ones(len(keys), dtype=np.bool_) if wanted is None
                       else np.array([k in wanted for k in keys], dtype=np.bool_))
            per_node = np.bincount(empty.gpu_node[allowed], minlength=len(empty.node_ids)) // req.gpus
        elif req.blocks > 0 or req.mig_profile:
            name = (req.mig_profile or "").strip().lower()
            for g, gpu in enumerate(empty.gpus):
                if wanted is not None and keys[g] not in wanted:
                    continue
                n = int(empty.gpu_node[g])
                if req.blocks > 0:
                    by_mem = gpu.memory_mib // req.gpu_memory_mib if req.gpu_memory_mib > 0 else BLOCKS_PER_GPU
                    per_node[n] += min(BLOCKS_PER_GPU // req.blocks, by_mem)
                else:
                    model = lookup_model(gpu.model)
                    profile = model.mig_profile(name) if model else None
                    per_node[n] += profile.max_count if profile is not None else 0
            if req.mig_profile:
                per_node //= req.mig_count
        else:
            per_node[:] = req.replicas  # CPU-only: bounded by CPU and RAM below
        if req.cpus_milli > 0:
            per_node = np.minimum(per_node, empty.node_cpu // req.cpus_milli)
        if req.memory_mib > 0:
            per_node = np.minimum(per_node, empty.node_mem // req.memory_mib)
        most = int(per_node.sum())
        if most >= req.replicas:
            return None
        return NoFit(f"a gang of {req.replicas} replicas ({_member_text(req)} each) needs room for all of them at "
                     f"once; the emptied cluster holds at most {most}", never=True)

    # -- one member ----------------------------------------------------------

    def _place_one(self, req: Request) -> tuple[ReplicaPlacement, float] | NoFit:
        if req.mig_profile:
            return self._place_mig(req)
        enc = self.enc
        nodes_ok = self._nodes_ok(req)
        if req.gpus == 0 and req.blocks == 0:
            ok = (enc.node_free_cpu >= req.cpus_milli) & (enc.node_free_mem >= req.memory_mib)
            if nodes_ok is not None:
                ok &= nodes_ok
                if not nodes_ok.any():
                    return NoFit(f"no node carries {_labels_text(req)}")
            node_coex = self._held.node_ok(req)
            if node_coex is not None:
                blocked = np.flatnonzero(ok & ~node_coex)
                ok &= node_coex
                if not ok.any() and blocked.size:
                    return NoFit(self._objection(req, gpu=-1, node=int(blocked[0])))
            if not ok.any():
                return NoFit(self._cpu_reason(req, np.ones(len(enc.node_ids), dtype=np.bool_)))
            # CPU-only: the node with the least CPU left that fits (keeps big nodes whole),
            # preferring nodes without idle GPUs so GPU nodes keep CPU for GPU work
            idle = np.zeros(len(enc.node_ids), dtype=np.int64)
            np.add.at(idle, enc.unit_node, enc.unit_free_blocks)
            order = np.lexsort((np.arange(len(ok)), enc.node_free_cpu - req.cpus_milli, idle))
            n = int(next(i for i in order if ok[i]))
            return ReplicaPlacement(enc.node_ids[n], (), req.cpus_milli, req.memory_mib), 0.0
        from partitioner.kernels.place import REQ_BLOCKS, REQ_WHOLE, score_nodes

        unit_ok = self._allowed(req)
        if nodes_ok is not None:
            if not nodes_ok.any():
                return NoFit(f"no node carries {_labels_text(req)}")
            unit_ok = unit_ok & nodes_ok[enc.unit_node]  # a copy: the model memo stays as it was
        coex = self._coexistence_units(req)
        rule_free_ok = unit_ok
        if coex is not None:
            unit_ok = unit_ok & coex
        n_nodes = len(enc.node_ids)
        out_score = np.empty(n_nodes, dtype=np.float64)
        out_unit = np.empty(n_nodes, dtype=np.int64)
        kind = REQ_WHOLE if req.gpus > 0 else REQ_BLOCKS
        if self.policy == "random":
            np.random.seed(int(self._rng.integers(2**31)))
        score_nodes(kind, req.blocks, req.gpu_memory_mib, max(req.gpus, 1), req.cpus_milli, req.memory_mib, unit_ok,
                    enc.node_free_cpu, enc.node_free_mem, enc.node_cpu, enc.node_unit_start,
                    enc.unit_kind, enc.unit_free_blocks, enc.unit_free_mem, *self._shapes,
                    self._scoring_policy(), self.variant, self._n_fgd, gpuq_rule.GPUQ_LEVELS, self.fit_ties,
                    out_score, out_unit, self._frag, self._frag_ok)
        n = int(np.argmax(out_score))
        if not np.isfinite(out_score[n]):
            objection = None if coex is None else self._coexistence_blocked(req, rule_free_ok, coex)
            return NoFit(objection or self._why_not(req, unit_ok))
        if kind == REQ_WHOLE and req.gpus > 1 and self._nvlink:
            n = self._nvlink_node(n, req.gpus, out_score, unit_ok)
        if kind == REQ_BLOCKS:
            u = int(out_unit[n])
            info = enc.units[u]
            slice_ = Slice(gpu_uuid=info.gpu.uuid, kind=SliceKind.BLOCKS, blocks=req.blocks,
                           memory_mib=req.gpu_memory_mib, mig_profile=info.mig_profile, mig_start=info.mig_start,
                           mig_uuid=info.mig_uuid)
            slices: tuple[Slice, ...] = (slice_,)
        else:
            slices = self._pick_whole(n, req.gpus, unit_ok)
        return ReplicaPlacement(enc.node_ids[n], slices, req.cpus_milli, req.memory_mib), float(out_score[n])

    def _scoring_policy(self) -> int:
        """The policy id ``score_nodes`` scores with: gpuq is fgd until its load rule turns the multi-task term on.

        The load rule is the replay's (``kernels.replay.multi_task_on``) over the blocks held on
        the whole and shared GPUs; as in the replay, the lexicographic variant has none (its first
        key is FGD's score from the first request). A change of policy invalidates every cached F.
        """
        from partitioner.kernels.replay import multi_task_on

        policy = POLICY_IDS[self.policy]
        if self.policy == "gpuq" and self.variant != gpuq_rule.VARIANT_LEX:
            enc = self.enc
            gpu_units = enc.unit_kind <= 1
            capacity = 100 * int(gpu_units.sum())
            allocated = capacity - int(enc.unit_free_blocks[gpu_units].sum())
            if not multi_task_on(allocated, capacity):
                policy = POLICY_IDS["fgd"]
        if policy != self._frag_policy or self.variant != self._frag_variant:
            self._frag_ok[:] = False
            self._frag_policy, self._frag_variant = policy, self.variant
        return policy

    def _free_whole(self, n: int, unit_ok: np.ndarray) -> list[int]:
        enc = self.enc
        lo, hi = enc.node_unit_start[n], enc.node_unit_start[n + 1]
        return [u for u in range(lo, hi)
                if unit_ok[u] and enc.unit_kind[u] == KIND_GPU and enc.unit_free_blocks[u] == BLOCKS_PER_GPU]

    def _clique(self, free: list[int], count: int) -> tuple[int, ...] | None:
        """``count`` of the units ``free`` that are all NVLink peers of each other (first in index order), if any."""
        enc = self.enc
        key = (tuple((enc.units[u].gpu.index, enc.units[u].gpu.nvlink_peers) for u in free), count)
        if key not in self._clique_memo:
            found: tuple[int, ...] | None = None
            for trial in combinations(range(len(free)), count):
                picked = [key[0][p] for p in trial]
                if all(a[0] in b[1] for a, b in combinations(picked, 2)):
                    found = trial
                    break
            self._clique_memo[key] = found
        chosen = self._clique_memo[key]
        return None if chosen is None else tuple(free[p] for p in chosen)

    def _nvlink_node(self, best: int, count: int, out_score: np.ndarray, unit_ok: np.ndarray) -> int:
        """The best-scoring node whose free GPUs hold an NVLink clique of ``count`` (else ``best``).

        Nodes are tried in score order and the first with a clique wins, so a multi-GPU job runs over
        NVLink when any node can offer it, and packing decides among those that can.
        """
        feasible = np.flatnonzero(np.isfinite(out_score))
        for n in feasible[np.argsort(-out_score[feasible], kind="stable")]:
            if self._clique(self._free_whole(int(n), unit_ok), count) is not None:
                return int(n)
        self._no_clique = count
        return best

    def _pick_whole(self, n: int, count: int, unit_ok: np.ndarray) -> tuple[Slice, ...]:
        """``count`` free exclusive GPUs of node ``n``, NVLink-connected ones first."""
        enc = self.enc
        free = self._free_whole(n, unit_ok)
        by_index = {enc.units[u].gpu.index: u for u in free}
        clique = self._clique(free, count) if count > 1 and self._nvlink else None
        if clique is not None:
            return tuple(Slice(gpu_uuid=enc.units[u].gpu.uuid, kind=SliceKind.GPU, blocks=BLOCKS_PER_GPU,
                               memory_mib=enc.units[u].gpu.memory_mib) for u in sorted(clique))

        def links(u: int, chosen: list[int]) -> int:
            peers = set(enc.units[u].gpu.nvlink_peers)
            return sum(1 for c in chosen if enc.units[c].gpu.index in peers)

        chosen: list[int] = []
        if count > 1 and any(enc.units[u].gpu.nvlink_peers for u in free):
            # greedy: start at the GPU with most free peers, then add the best-connected
            start = max(free, key=lambda u: (sum(p in by_index for p in enc.units[u].gpu.nvlink_peers), -u))
            chosen.append(start)
            while len(chosen) < count:
                rest = [u for u in free if u not in chosen]
                chosen.append(max(rest, key=lambda u: (links(u, chosen), -u)))
        else:
            chosen = free[:count]
        return tuple(Slice(gpu_uuid=enc.units[u].gpu.uuid, kind=SliceKind.GPU, blocks=BLOCKS_PER_GPU,
                           memory_mib=enc.units[u].gpu.memory_mib) for u in sorted(chosen))

    def _mig_geometry(self, req: Request, enc: Encoded) -> _MigGeometry:
        """Per GPU: usable (MIG mode, allowed, has the profile), profile id, size, max count, starts bitmask,
        and the profile itself (None where not usable)."""
        name = (req.mig_profile or "").strip().lower()
        key = (name, req.gpu_models)
        memo = self._mig_memo.get(key)
        if memo is not None:
            return memo
        # per GPU, not per unit: a MIG GPU with no instance yet has no unit but can take new ones
        wanted = _model_keys(req.gpu_models)
        gpu_ok = np.array([not req.gpu_models or k in wanted for k in self._gpu_keys], dtype=np.bool_)
        n = len(enc.gpus)
        ok = np.zeros(n, dtype=np.bool_)
        gp_id, gp_size, gp_max, gp_starts = (np.zeros(n, dtype=np.int64) for _ in range(4))
        profiles: list[MigProfile | None] = [None] * n
        for g, gpu in enumerate(enc.gpus):
            model = lookup_model(gpu.model)
            profile = model.mig_profile(name) if model else None
            if profile is None or gpu.mode is not GpuMode.MIG or not gpu_ok[g]:
                continue
            ok[g] = True
            profiles[g] = profile
            gp_id[g], gp_size[g], gp_max[g] = profile.profile_id, profile.memory_slices, profile.max_count
            gp_starts[g] = sum(1 << st for st in profile.starts)
        memo = (ok, gp_id, gp_size, gp_max, gp_starts, profiles)
        self._mig_memo[key] = memo
        return memo

    def _place_mig(self, req: Request) -> tuple[ReplicaPlacement, float] | NoFit:
        """``mig_count`` instances of the profile on one node: free instances first, then new ones.

        The node is chosen by the bitmask kernel :func:`partitioner.kernels.mig.mig_pick` (reuse most,
        then fullest node, then node order); the slices of that one node are then spelled out here.
        """
        from partitioner.kernels.mig import mig_pick

        enc = self.enc
        ok, gp_id, gp_size, gp_max, gp_starts, profiles = self._mig_geometry(req, enc)
        nodes_ok = self._nodes_ok(req)
        if nodes_ok is not None:
            ok = ok & nodes_ok[enc.gpu_node]  # a copy: the geometry memo stays as it was
        coex = self._coexistence_gpus(req)
        rule_free_ok = ok
        if coex is not None:
            ok = ok & coex
        reused = np.empty(len(enc.node_ids), dtype=np.int64)
        n = int(mig_pick(req.mig_count, req.cpus_milli, req.memory_mib, enc.node_free_cpu, enc.node_free_mem,
                         enc.gpu_node, enc.gpu_mig_mask, self._gpu_is_mig, ok, gp_id, gp_size, gp_max, gp_starts,
                         enc.unit_gpu, enc.unit_kind, enc.unit_profile, enc.unit_free_blocks, reused))
        if n < 0 and coex is not None and (rule_free_ok & ~coex).any():
            # would it fit were it not for a rule? then the rule is the reason (the kernel again, unconstrained)
            without = int(mig_pick(req.mig_count, req.cpus_milli, req.memory_mib, enc.node_free_cpu,
                                   enc.node_free_mem, enc.gpu_node, enc.gpu_mig_mask, self._gpu_is_mig, rule_free_ok,
                                   gp_id, gp_size, gp_max, gp_starts, enc.unit_gpu, enc.unit_kind, enc.unit_profile,
                                   enc.unit_free_blocks, np.empty(len(enc.node_ids), dtype=np.int64)))
            if without >= 0:
                barred = int(np.flatnonzero(rule_free_ok & ~coex & (enc.gpu_node == without))[0])
                return NoFit(self._objection(req, gpu=barred, node=without))
        if n == -2:
            return NoFit(self._cpu_reason(req, np.ones(len(enc.node_ids), dtype=np.bool_)))
        if n < 0:
            return NoFit(f"no MIG GPU has room for {req.mig_count} x {req.mig_profile} on one node "
                         f"(idle GPUs can be repartitioned)")
        slices: list[Slice] = []
        lo, hi = enc.node_unit_start[n], enc.node_unit_start[n + 1]
        for g in np.flatnonzero(enc.gpu_node == n):
            profile = profiles[g]  # None where the model cannot; ok[g] False also where a rule bars the GPU
            if profile is None or not ok[g] or len(slices) >= req.mig_count:
                continue
            gpu = enc.gpus[g]
            existing = 0
            for u in range(lo, hi):
                if enc.unit_gpu[u] == g and enc.unit_profile[u] == profile.profile_id:
                    existing += 1
                    free = enc.unit_kind[u] == KIND_MIG and enc.unit_free_blocks[u] == BLOCKS_PER_GPU
                    if free and len(slices) < req.mig_count:
                        info = enc.units[u]
                        slices.append(Slice(gpu.uuid, SliceKind.MIG, 0, profile.memory_mib, profile.name,
                                            info.mig_start, info.mig_uuid))
            mask = int(enc.gpu_mig_mask[g])
            make = min(req.mig_count - len(slices), count_new_instances(profile, mask, existing))
            if make <= 0:
                continue
            model = lookup_model(gpu.model)
            if model is None:
                continue
            counts = [sum(1 for u in range(lo, hi) if enc.unit_gpu[u] == g and enc.unit_profile[u] == q.profile_id)
                      for q in model.mig_profiles]
            for left in range(make - 1, -1, -1):
                # the start that keeps the most future placements (mig.best_start), unless it would leave
                # too little room for this request's other new instances on this GPU (then: lowest start)
                start = best_start(model, profile, mask, counts)
                if start is None:
                    break
                if left and count_new_instances(profile, mask | span_mask(start, profile.memory_slices),
                                                existing + 1) < left:
                    start = free_starts(profile, mask)[0]
                mask |= span_mask(start, profile.memory_slices)
                existing += 1
                counts[model.mig_profiles.index(profile)] += 1
                slices.append(Slice(gpu.uuid, SliceKind.MIG, 0, profile.memory_mib, profile.name, start, None))
        return ReplicaPlacement(enc.node_ids[n], tuple(slices), req.cpus_milli, req.memory_mib), float(reused[n])

    # -- coexistence ---------------------------------------------------------

    def _coexistence_gpus(self, req: Request) -> np.ndarray | None:
        """Per encoded GPU: ``req`` may join what it and its node hold (None: no rule applies)."""
        gpu_ok, node_ok = self._held.gpu_ok(req), self._held.node_ok(req)
        if node_ok is None:
            return gpu_ok
        by_node = node_ok[self.enc.gpu_node]
        return by_node if gpu_ok is None else gpu_ok & by_node

    def _coexistence_units(self, req: Request) -> np.ndarray | None:
        """Per unit, for whole-GPU and blocks requests (a free exclusive GPU holds no class: the node rule only)."""
        enc = self.enc
        if req.blocks > 0:
            per_gpu = self._coexistence_gpus(req)
            return None if per_gpu is None else per_gpu[enc.unit_gpu]
        node_ok = self._held.node_ok(req)
        return None if node_ok is None else node_ok[enc.unit_node]

    def _coexistence_blocked(self, req: Request, unit_ok: np.ndarray, coex: np.ndarray) -> str | None:
        """The rule's words when a unit (``unit_ok``: every other constraint met) had room but a rule barred it."""
        enc = self.enc
        cpu_ok = (enc.node_free_cpu >= req.cpus_milli) & (enc.node_free_mem >= req.memory_mib)
        if req.blocks > 0:
            shared = (enc.unit_kind == KIND_SHARED) | (enc.unit_kind == KIND_MIG_SHARED)
            room = (unit_ok & shared & (enc.unit_free_blocks >= req.blocks) & (enc.unit_free_mem >= req.gpu_memory_mib)
                    & cpu_ok[enc.unit_node])
        else:
            whole = unit_ok & (enc.unit_kind == KIND_GPU) & (enc.unit_free_blocks == BLOCKS_PER_GPU)
            per_node = np.bincount(enc.unit_node[whole], minlength=len(enc.node_ids))
            room = whole & ((per_node >= req.gpus) & cpu_ok)[enc.unit_node]
        barred = np.flatnonzero(room & ~coex)
        if not barred.size:
            return None
        u = int(barred[0])
        return self._objection(req, gpu=int(enc.unit_gpu[u]) if req.blocks > 0 else -1, node=int(enc.unit_node[u]))

    def _objection(self, req: Request, *, gpu: int, node: int) -> str:
        """The wait reason for a rule that bars GPU ``gpu`` (-1: none) or node ``node``."""
        held = self._held.first_gpu_objection(gpu, req) if gpu >= 0 else None
        if held is not None:
            where = f"{self.enc.gpus[gpu].index} on {self._node_names[node]}"
            return gpu_reason(gpu=where, held=held, workload=req.workload)
        return node_reason(node=self._node_names[node], held=self._held.first_node_objection(node, req) or "other",
                           workload=req.workload)

    # -- reasons -------------------------------------------------------------

    def _cpu_reason(self, req: Request, candidates: np.ndarray) -> str:
        """What CPU or RAM is short on the best of ``candidates`` (a node mask with at least one True)."""
        enc = self.enc
        cpu = int(enc.node_free_cpu[candidates].max())
        mem = int(enc.node_free_mem[candidates].max())
        if req.cpus_milli > cpu:
            return (f"not enough free CPU: needs {req.cpus_milli / 1000:g} CPUs; the most free on a candidate node is "
                    f"{cpu / 1000:g}")
        return f"not enough free memory: needs {req.memory_mib} MiB; the most free on a candidate node is {mem}"

    def _why_not(self, req: Request, unit_ok: np.ndarray) -> str:
        enc = self.enc
        n_nodes = len(enc.node_ids)
        if req.gpus > 0:
            usable = unit_ok & (enc.unit_kind == KIND_GPU) & (enc.unit_free_blocks == BLOCKS_PER_GPU)
            per_node = np.bincount(enc.unit_node[usable], minlength=n_nodes)
            most = int(per_node.max(initial=0))
            if most < req.gpus:
                exclusive = (unit_ok & (enc.unit_kind == KIND_GPU)).any()
                hint = "" if exclusive else " (no exclusive GPU of an allowed model)"
                return f"needs {req.gpus} whole GPUs on one node; the most free on one node is {most}{hint}"
            return self._cpu_reason(req, per_node >= req.gpus)
        shared = unit_ok & ((enc.unit_kind == KIND_SHARED) | (enc.unit_kind == KIND_MIG_SHARED))
        if not shared.any():
            return (self._mps_failed(unit_ok)
                    or "no shared GPU of an allowed model (idle GPUs can be turned shared by repartitioning)")
        room = shared & (enc.unit_free_blocks >= req.blocks) & (enc.unit_free_mem >= req.gpu_memory_mib)
        if not room.any():
            return self._mps_failed(unit_ok) or (
                    f"no shared GPU has {req.blocks} free blocks and {req.gpu_memory_mib} MiB free; "
                    f"the most free blocks on one is {int(enc.unit_free_blocks[shared].max())}")
        nodes = np.zeros(n_nodes, dtype=np.bool_)
        nodes[enc.unit_node[room]] = True
        return self._cpu_reason(req, nodes)

    def _mps_failed(self, units: np.ndarray) -> str:
        """``MPS on <device> failed: <why>`` for the first of ``units`` whose MPS daemon is not ready, else ""."""
        for u in np.flatnonzero(units):
            info = self.enc.units[int(u)]
            if info.mig_start is None:
                if info.gpu.mps_failed:
                    return f"MPS on {info.gpu.uuid} failed: {info.gpu.mps_failed}"
                continue
            inst = next((i for i in info.gpu.mig_instances if i.start == info.mig_start), None)
            if inst is not None and inst.mps_failed:
                return f"MPS on {inst.uuid or f'{info.gpu.uuid} slice {inst.start}'} failed: {inst.mps_failed}"
        return ""

    # -- state changes -------------------------------------------------------

    def _reindex(self) -> None:
        self._unit_of = {}
        for u, info in enumerate(self.enc.units):
            key = info.gpu.uuid if info.mig_start is None else f"{info.gpu.uuid}:{info.mig_start}"
            self._unit_of[key] = u
        self._node_of = {node_id: n for n, node_id in enumerate(self.enc.node_ids)}

    def _apply(self, member: ReplicaPlacement, sign: int) -> None:
        """Subtract (``sign`` +1) or add back (-1) one member's resources."""
        enc = self.enc
        n = self._node_of[member.node_id]
        self._frag_ok[n] = False
        enc.node_free_cpu[n] -= sign * member.cpus_milli
        enc.node_free_mem[n] -= sign * member.memory_mib
        for s in member.slices:
            key = s.gpu_uuid if s.mig_start is None else f"{s.gpu_uuid}:{s.mig_start}"
            u = self._unit_of.get(key)
            if s.kind is SliceKind.MIG and s.mig_uuid is None and (u is None or enc.units[u].created):
                self._new_instance(s, sign, n)
                continue
            if u is None:
                raise ValueError(f"unknown slice {key} in placement")
            if s.kind is SliceKind.BLOCKS:
                enc.unit_free_blocks[u] -= sign * s.blocks
                enc.unit_free_mem[u] -= sign * s.memory_mib
            else:
                enc.unit_free_blocks[u] = 0 if sign > 0 else BLOCKS_PER_GPU
                enc.unit_free_mem[u] = 0 if sign > 0 else enc.unit_mem[u]
        if member.workload:
            self._held.add(member.workload, node=n, gpus=[self._gpu_index[s.gpu_uuid] for s in member.slices],
                           sign=sign)

    def _new_instance(self, s: Slice, sign: int, n: int) -> None:
        """Add (commit) or remove (release) a MIG instance the placement creates."""
        enc = self.enc
        g = self._gpu_index[s.gpu_uuid]
        model = lookup_model(enc.gpus[g].model)
        profile = model.mig_profile(s.mig_profile or "") if model else None
        if profile is None or s.mig_start is None:
            raise ValueError(f"bad MIG slice {s}")
        span = span_mask(s.mig_start, profile.memory_slices)
        key = f"{s.gpu_uuid}:{s.mig_start}"
        if sign > 0:
            enc.gpu_mig_mask[g] |= span
            pos = int(enc.node_unit_start[n + 1])
            cols = ("unit_kind", "unit_node", "unit_gpu", "unit_free_blocks", "unit_free_mem", "unit_mem",
                    "unit_profile", "unit_start")
            vals = (KIND_MIG, n, g, 0, 0, profile.memory_mib, profile.profile_id, s.mig_start)
            for col, val in zip(cols, vals, strict=True):
                setattr(enc, col, np.insert(getattr(enc, col), pos, val))
            enc.units.insert(pos, UnitInfo(enc.node_ids[n], enc.gpus[g], profile.name, s.mig_start, None, created=True))
            enc.node_unit_start[n + 1:] += 1
        else:
            u = self._unit_of[key]
            enc.gpu_mig_mask[g] &= ~span
            for col in ("unit_kind", "unit_node", "unit_gpu", "unit_free_blocks", "unit_free_mem", "unit_mem",
                        "unit_profile", "unit_start"):
                setattr(enc, col, np.delete(getattr(enc, col), u))
            del enc.units[u]
            enc.node_unit_start[n + 1:] -= 1
        self._reindex()


def _member_text(req: Request) -> str:
    """'2 GPUs', '25 blocks', '1g.10gb x2', 'CPU' for reasons."""
    if req.gpus > 0:
        return f"{req.gpus} GPU" + ("s" if req.gpus > 1 else "")
    if req.blocks > 0:
        return f"{req.blocks} blocks"
    if req.mig_profile:
        return f"{req.mig_profile} x{req.mig_count}"
    return "CPU only"


def _model_keys(names: Sequence[str]) -> set[str]:
    """Catalogue keys of the allowed model names (an unknown name stands for itself, lower-cased)."""
    return {model.key if (model := lookup_model(m)) else m.strip().lower() for m in names}


_EMPTIED_CACHE: OrderedDict[tuple, Encoded] = OrderedDict()


def _emptied_encoding(cluster: ClusterState) -> Encoded:
    """``encode(_emptied(cluster))``, shared by every Packer built on the same nodes and GPUs.

    An admission cycle builds many packers on one cluster (re-carving,
    reservation, preemption checks); the emptied cluster depends only on what
    the nodes and GPUs are, not on what is held, so it is encoded once.
    """
    key = tuple(
        (n.node_id, n.cpus_milli, n.memory_mib, tuple((g.uuid, g.model, g.memory_mib) for g in n.gpus))
        for n in cluster.nodes
    )
    found = _EMPTIED_CACHE.get(key)
    if found is None:
        found = encode(_emptied(cluster))
        _EMPTIED_CACHE[key] = found
        while len(_EMPTIED_CACHE) > 8:
            _EMPTIED_CACHE.popitem(last=False)
    else:
        _EMPTIED_CACHE.move_to_end(key)
    return found


def _emptied(cluster: ClusterState) -> ClusterState:
    """The cluster with nothing held and every GPU free (for "never fits" checks)."""
    nodes = []
    for node in cluster.nodes:
        gpus = tuple(replace(g, held=False, used_blocks=0, used_memory_mib=0, mig_instances=(), mps_failed="")
                     for g in node.gpus)
        nodes.append(replace(node, free_cpus_milli=node.cpus_milli, free_memory_mib=node.memory_mib, gpus=gpus))
    return ClusterState(nodes=tuple(nodes))


def place(cluster: ClusterState, request: Request, *, policy: str = DEFAULT_POLICY) -> Placement | NoFit:
    """One-off :meth:`Packer.place` on ``cluster``."""
    return Packer(cluster, policy=policy).place(request)


def _labels_text(req: Request) -> str:
    return ", ".join(f"{k}={v}" for k, v in req.node_labels)
