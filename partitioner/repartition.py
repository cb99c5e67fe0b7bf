"""Mode and MIG layout changes for idle GPUs, proposed only when they let waiting work run.

Invariants of :func:`propose`:

* only idle GPUs change mode or layout (nothing held: no exclusive holder, no
  used blocks or memory, no held or used MIG instance), with one exception
  that never touches what is held: for a blocks request, a GPU in MIG mode
  may gain one *shared* MIG instance in free memory slices, or turn one idle
  exclusive instance shared, while its other instances run (every instance
  it had stays, at the same start, with what it holds);
* each GPU changes at most once per call;
* a change is proposed only if, with it, a pending request that does not fit
  now does fit (checked with :class:`~partitioner.place.Packer`); the request
  is then counted as placed so later ones do not claim the same room;
* every proposed MIG layout passes :func:`partitioner.mig.validate_layout`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace

from partitioner.catalog import lookup_model
from partitioner.mig import best_start, layout_mask, shared_profiles, span_mask, validate_layout
from partitioner.place import Packer
from partitioner.types import (
    ClusterState,
    GpuMode,
    GpuState,
    LayoutChange,
    MigInstance,
    NodeState,
    NoFit,
    Placement,
    Request,
)

__all__ = ["MAX_TRIAL_NODES", "encoded_as", "is_idle", "propose", "with_changes"]


def is_idle(gpu: GpuState) -> bool:
    """True when nothing is held on ``gpu``."""
    if gpu.held or gpu.used_blocks or gpu.used_memory_mib:
        return False
    return not any(i.held or i.used_blocks or i.used_memory_mib for i in gpu.mig_instances)


def _allowed(gpu: GpuState, req: Request) -> bool:
    if not req.gpu_models:
        return True
    model = lookup_model(gpu.model)
    key = model.key if model else gpu.model.lower()
    return any((known.key if (known := lookup_model(m)) else m.lower()) == key for m in req.gpu_models)


def _mig_layout(gpu: GpuState, req: Request) -> tuple[tuple[str, int], ...] | None:
    """A layout of ``req.mig_count`` instances of the profile from an empty GPU, lowest starts first."""
    model = lookup_model(gpu.model)
    if model is None:
        return None
    profile = model.mig_profile(req.mig_profile or "")
    if profile is None or req.mig_count > profile.max_count:
        return None
    mask = 0
    layout: list[tuple[str, int]] = []
    for start in profile.starts:
        if len(layout) == req.mig_count:
            break
        span = span_mask(start, profile.memory_slices)
        if mask & span == 0:
            mask |= span
            layout.append((profile.name, start))
    if len(layout) < req.mig_count or validate_layout(model.key, layout):
        return None
    return tuple(layout)


_Layout = tuple[tuple[str, int], ...]
_Change = tuple[GpuMode, _Layout, tuple[int, ...]]  # mode, MIG layout, shared starts


def _change_for(gpu: GpuState, req: Request) -> _Change | None:
    """The change of ``gpu`` (mode, MIG layout, shared instances) that could serve ``req``, or None.

    Blocks on a GPU in MIG mode go to a shared MIG instance (:func:`_shared_instance`), never to a
    whole-GPU shared mode: MIG mode is the driver's on real GPUs, and the instances may be busy.
    """
    if req.blocks > 0 and gpu.mode is GpuMode.MIG:
        found = _shared_instance(gpu, req)
        return (GpuMode.MIG, *found) if found is not None else None
    if req.mig_profile and gpu.mode is GpuMode.MIG and not is_idle(gpu):
        return _unshared(gpu, req)
    if not is_idle(gpu):
        return None
    if req.mig_profile:
        layout = _mig_layout(gpu, req)
        return (GpuMode.MIG, layout, ()) if layout is not None else None
    if req.gpus > 0:
        return None if gpu.mode is GpuMode.EXCLUSIVE else (GpuMode.EXCLUSIVE, (), ())
    if req.blocks > 0:
        if gpu.mode is GpuMode.SHARED or gpu.memory_mib < req.gpu_memory_mib or gpu.mps_failed:
            return None  # (its MPS daemon cannot start: shared, it would take no block job either)
        return (GpuMode.SHARED, (), ())
    return None


def _unshared(gpu: GpuState, req: Request) -> _Change | None:
    """Idle shared instances of the requested profile on a busy MIG GPU turned exclusive again (None: none).

    A shared instance whose block jobs have ended is an instance like any other for a whole-profile job;
    on an idle GPU the whole layout is re-carved instead (``_mig_layout``).
    """
    model = lookup_model(gpu.model)
    wanted = model.mig_profile(req.mig_profile or "") if model else None
    if model is None or wanted is None:
        return None
    free = [i.start for i in gpu.mig_instances if i.mode is GpuMode.SHARED and not i.used_blocks
            and not i.used_memory_mib and (p := model.mig_profile(i.profile)) is not None
            and p.profile_id == wanted.profile_id][:req.mig_count]
    if not free:
        return None
    layout = tuple((i.profile, i.start) for i in sorted(gpu.mig_instances, key=lambda i: i.start))
    shared = tuple(i.start for i in gpu.mig_instances if i.mode is GpuMode.SHARED and i.start not in free)
    return GpuMode.MIG, layout, tuple(sorted(shared))


def _shared_instance(gpu: GpuState, req: Request) -> tuple[_Layout, tuple[int, ...]] | None:
    """``gpu``'s MIG layout with one more shared instance that can hold ``req``'s memory, or None.

    In order: (1) a new instance carved in free memory slices (the smallest profile that holds the
    memory, :func:`partitioner.mig.shared_profiles`, at :func:`~partitioner.mig.best_start`); the running
    instances are untouched; (2) the smallest idle exclusive instance that holds the memory turns
    shared; (3) an idle GPU whose layout has no room is re-carved to that one shared instance.
    """
    model = lookup_model(gpu.model)
    if model is None or not model.mig_capable:
        return None
    fits = shared_profiles(model, req.gpu_memory_mib)
    if not fits:
        return None
    instances = sorted(gpu.mig_instances, key=lambda i: i.start)
    current = tuple((i.profile, i.start) for i in instances)
    shared = tuple(i.start for i in instances if i.mode is GpuMode.SHARED)
    mask = layout_mask(model, current)
    ids = [model.mig_profile(i.profile) for i in instances]
    counts = [sum(1 for p in ids if p is not None and p.profile_id == q.profile_id) for q in model.mig_profiles]
    for profile in fits:  # 1. carve beside what runs
        start = best_start(model, profile, mask, counts)
        if start is not None:
            layout = tuple(sorted((*current, (profile.name, start)), key=lambda e: e[1]))
            if not validate_layout(model.key, layout):
                return layout, tuple(sorted((*shared, start)))
    idle = [(p, i) for p, i in zip(ids, instances, strict=True)
            if p is not None and i.mode is GpuMode.EXCLUSIVE and not i.held and p.memory_mib >= req.gpu_memory_mib
            and not i.mps_failed]
    if idle:  # 2. an idle instance turns shared
        _p, pick = min(idle, key=lambda e: (e[0].memory_slices, -e[0].compute_slices, e[1].start))
        return current, tuple(sorted((*shared, pick.start)))
    if is_idle(gpu) and current:  # 3. re-carve the idle GPU
        start = best_start(model, fits[0], 0, [0] * len(model.mig_profiles))
        if start is not None:
            return ((fits[0].name, start),), (start,)
    return None


# A trial re-carves idle GPUs on at most this many nodes (the first, in node order, where a change could
# make the request fit): the trial placement then costs the same on 10 nodes as on 1,000.
MAX_TRIAL_NODES = 16

_KNOWN: ContextVar[tuple[ClusterState, Packer] | None] = ContextVar("gpuq_repartition_known", default=None)


@contextmanager
def encoded_as(cluster: ClusterState, packer: Packer) -> Iterator[None]:
    """Within the block, :func:`propose` on this very ``cluster`` object forks ``packer`` instead of encoding it.

    ``packer`` must encode exactly ``cluster`` (the admission cycle's packer, with its admissions committed,
    and the cluster with those admissions taken); it is never changed.
    """
    token = _KNOWN.set((cluster, packer))
    try:
        yield
    finally:
        _KNOWN.reset(token)


def _packer_for(cluster: ClusterState) -> Packer:
    known = _KNOWN.get()
    if known is not None and known[0] is cluster:
        return known[1].fork()
    return Packer(cluster)


def _refreshed(packer: Packer, cluster: ClusterState, changes: Sequence[LayoutChange],
               taken: Sequence[Placement]) -> Packer:
    """``packer`` with the nodes of ``changes`` re-encoded from ``cluster`` (a fork; what ``taken`` holds on those
    nodes committed again), or, where MIG nodes make that impossible, a new packer with every ``taken`` committed."""
    touched = {c.node_id for c in changes}
    nodes = [i for i, n in enumerate(cluster.nodes) if n.node_id in touched]
    twin = packer.fork()
    if twin.refresh_nodes(cluster, nodes):
        again = tuple(m for p in taken for m in p.replicas if m.node_id in touched)
        if again:
            twin.commit(Placement(replicas=again))
        return twin
    fresh = Packer(cluster, policy=packer.policy)
    for earlier in taken:
        fresh.commit(earlier)
    return fresh


def _node_may_fit(node: NodeState, req: Request, fixed: set[str]) -> bool:
    """A quick bound before any change is worked out: CPU, RAM and, for whole GPUs, enough GPUs that are free
    or idle and not ``fixed`` (changed or taken earlier in this call)."""
    if node.free_cpus_milli < req.cpus_milli or node.free_memory_mib < req.memory_mib:
        return False
    if req.gpus > 0:
        return sum(1 for g in node.gpus if g.uuid not in fixed and is_idle(g)) >= req.gpus
    return True


def _node_could_fit(node: NodeState, node_changes: Sequence[LayoutChange], req: Request, busy: set[str]) -> bool:
    """With ``node_changes`` applied, could ``node`` hold one member of ``req`` (CPU, RAM, whole GPUs counted)?"""
    if node.free_cpus_milli < req.cpus_milli or node.free_memory_mib < req.memory_mib:
        return False
    if req.gpus > 0:
        free = sum(1 for g in node.gpus if g.mode is GpuMode.EXCLUSIVE and not g.held and g.uuid not in busy)
        return free + sum(1 for c in node_changes if c.mode is GpuMode.EXCLUSIVE) >= req.gpus
    return True


def propose(cluster: ClusterState, pending: Sequence[Request]) -> list[LayoutChange]:
    """Layout changes of idle GPUs that let some of ``pending`` (in order) run.

    For each request that does not fit, every idle allowed GPU of the first
    :data:`MAX_TRIAL_NODES` nodes where that could make it fit gets the change
    that could serve it at once, the request is placed once on that trial
    cluster (after what earlier requests took), and only the changes its
    placement uses are kept. One packer per call (forked from the caller's
    under :func:`encoded_as`), and the trials re-encode only the nodes they
    change, whatever the cluster size.
    """
    changes: list[LayoutChange] = []
    changed: set[str] = set()
    state = cluster
    packer = _packer_for(state)
    taken: list[Placement] = []  # placements of earlier requests in this call
    for req in pending:
        got = packer.place(req)
        if not isinstance(got, NoFit):
            packer.commit(got)
            taken.append(got)
            continue
        if got.never:
            continue
        trial_changes: list[LayoutChange] = []
        busy = {s.gpu_uuid for p in taken for r in p.replicas for s in r.slices}  # idle no more
        trial_nodes = 0
        for node in state.nodes:
            if req.replicas == 1 and not _node_may_fit(node, req, changed | busy):
                continue
            node_changes = []
            for gpu in sorted(node.gpus, key=lambda g: g.index):
                if gpu.uuid in changed or gpu.uuid in busy or not _allowed(gpu, req):
                    continue
                change = _change_for(gpu, req)
                if change is None:
                    continue
                mode, layout, shared = change
                why = (f"blocks request ({req.blocks} blocks) waiting with no shared MIG instance room"
                       if req.blocks > 0 and mode is GpuMode.MIG else
                       {GpuMode.MIG: f"{req.mig_count} x {req.mig_profile} waiting",
                        GpuMode.SHARED: f"blocks request ({req.blocks} blocks) waiting with no shared GPU room",
                        GpuMode.EXCLUSIVE: f"request for {req.gpus} whole GPU(s) waiting"}[mode])
                node_changes.append(LayoutChange(node.node_id, gpu.uuid, mode, layout, why, shared))
            if node_changes and (req.replicas > 1 or _node_could_fit(node, node_changes, req, busy)):
                trial_changes.extend(node_changes)
                trial_nodes += 1
                if trial_nodes >= MAX_TRIAL_NODES and req.replicas == 1:
                    break
        if not trial_changes:
            continue
        trial = _refreshed(packer, with_changes(state, trial_changes), trial_changes, taken)
        placed = trial.place(req)
        if isinstance(placed, NoFit):
            continue
        # keep only the changes the placement actually uses
        used = {s.gpu_uuid for r in placed.replicas for s in r.slices}
        kept = [c for c in trial_changes if c.gpu_uuid in used]
        state = with_changes(state, kept)
        changed.update(c.gpu_uuid for c in kept)
        changes.extend(kept)
        packer = _refreshed(packer, state, kept, taken)
        again = packer.place(req)
        if not isinstance(again, NoFit):
            packer.commit(again)
            taken.append(again)
    return changes


def with_changes(cluster: ClusterState, changes: Sequence[LayoutChange]) -> ClusterState:
    """``cluster`` with every change applied to its GPUs, in one pass.

    A MIG instance the new layout keeps (same profile, same start) keeps its UUID and what it holds;
    its mode is the change's (shared where ``shared_starts`` lists it).
    """
    by_gpu = {c.gpu_uuid: c for c in changes}
    if not by_gpu:
        return cluster
    touched = {c.node_id for c in changes}
    nodes = []
    for node in cluster.nodes:
        if node.node_id in touched:
            gpus = tuple(_changed(g, by_gpu[g.uuid]) if g.uuid in by_gpu else g for g in node.gpus)
            node = replace(node, gpus=gpus)
        nodes.append(node)
    return ClusterState(nodes=tuple(nodes), unschedulable=cluster.unschedulable)


def _changed(gpu: GpuState, change: LayoutChange) -> GpuState:
    if change.mode is not GpuMode.MIG:
        return replace(gpu, mode=change.mode, held=False, used_blocks=0, used_memory_mib=0, mig_instances=())
    kept = {(i.profile, i.start): i for i in gpu.mig_instances} if gpu.mode is GpuMode.MIG else {}
    shared = set(change.shared_starts)
    instances = []
    for profile, start in change.mig_layout:
        mode = GpuMode.SHARED if start in shared else GpuMode.EXCLUSIVE
        was = kept.get((profile, start))
        instances.append(MigInstance(profile, start, mode=mode) if was is None else replace(was, mode=mode))
    if gpu.mode is GpuMode.MIG:  # what its instances hold stays counted on the GPU too
        return replace(gpu, mig_instances=tuple(instances))
    return replace(gpu, mode=GpuMode.MIG, held=False, used_blocks=0, used_memory_mib=0,
                   mig_instances=tuple(instances))
