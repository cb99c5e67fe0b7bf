"""Mode and MIG layout changes for idle GPUs, proposed only when they let waiting work run.

Invariants of :func:`propose`:

* only idle GPUs change (nothing held: no exclusive holder, no used blocks or
  memory, no held or used MIG instance);
* each GPU changes at most once per call;
* a change is proposed only if, with it, a pending request that does not fit
  now does fit (checked with :class:`~partitioner.place.Packer`); the request
  is then counted as placed so later ones do not claim the same room;
* every proposed MIG layout passes :func:`partitioner.mig.validate_layout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from partitioner.catalog import lookup_model
from partitioner.mig import span_mask, validate_layout
from partitioner.place import Packer
from partitioner.types import ClusterState, GpuMode, GpuState, LayoutChange, MigInstance, NoFit, Placement, Request

__all__ = ["is_idle", "propose", "with_changes"]


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


def _change_for(gpu: GpuState, req: Request) -> tuple[GpuMode, tuple[tuple[str, int], ...]] | None:
    """The change of ``gpu`` (mode, MIG layout) that could serve ``req``, or None."""
    if req.mig_profile:
        layout = _mig_layout(gpu, req)
        return (GpuMode.MIG, layout) if layout is not None else None
    if req.gpus > 0:
        return None if gpu.mode is GpuMode.EXCLUSIVE else (GpuMode.EXCLUSIVE, ())
    if req.blocks > 0:
        if gpu.mode is GpuMode.SHARED or gpu.memory_mib < req.gpu_memory_mib:
            return None
        return (GpuMode.SHARED, ())
    return None


def propose(cluster: ClusterState, pending: Sequence[Request]) -> list[LayoutChange]:
    """Layout changes of idle GPUs that let some of ``pending`` (in order) run.

    For each request that does not fit, every idle allowed GPU gets the
    change that could serve it at once, the request is placed once on that
    trial cluster (after what earlier requests took), and only the changes
    its placement uses are kept: two packers per request, whatever the
    cluster size.
    """
    changes: list[LayoutChange] = []
    changed: set[str] = set()
    state = cluster
    packer = Packer(state)
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
        for node in state.nodes:
            for gpu in sorted(node.gpus, key=lambda g: g.index):
                if gpu.uuid in changed or gpu.uuid in busy or not is_idle(gpu) or not _allowed(gpu, req):
                    continue
                change = _change_for(gpu, req)
                if change is None:
                    continue
                mode, layout = change
                why = {GpuMode.MIG: f"{req.mig_count} x {req.mig_profile} waiting",
                       GpuMode.SHARED: f"blocks request ({req.blocks} blocks) waiting with no shared GPU room",
                       GpuMode.EXCLUSIVE: f"request for {req.gpus} whole GPU(s) waiting"}[mode]
                trial_changes.append(LayoutChange(node.node_id, gpu.uuid, mode, layout, why))
        if not trial_changes:
            continue
        trial = Packer(with_changes(state, trial_changes))
        for earlier in taken:
            trial.commit(earlier)
        placed = trial.place(req)
        if isinstance(placed, NoFit):
            continue
        # keep only the changes the placement actually uses
        used = {s.gpu_uuid for r in placed.replicas for s in r.slices}
        kept = [c for c in trial_changes if c.gpu_uuid in used]
        state = with_changes(state, kept)
        changed.update(c.gpu_uuid for c in kept)
        changes.extend(kept)
        packer = Packer(state)
        for earlier in taken:
            packer.commit(earlier)
        again = packer.place(req)
        if not isinstance(again, NoFit):
            packer.commit(again)
            taken.append(again)
    return changes


def with_changes(cluster: ClusterState, changes: Sequence[LayoutChange]) -> ClusterState:
    """``cluster`` with every change applied to its (idle) GPUs, in one pass."""
    by_gpu = {c.gpu_uuid: c for c in changes}
    if not by_gpu:
        return cluster
    nodes = []
    for node in cluster.nodes:
        if any(g.uuid in by_gpu for g in node.gpus):
            gpus = tuple(
                replace(g, mode=by_gpu[g.uuid].mode, held=False, used_blocks=0, used_memory_mib=0,
                        mig_instances=tuple(MigInstance(p, st) for p, st in by_gpu[g.uuid].mig_layout))
                if g.uuid in by_gpu else g
                for g in node.gpus
            )
            node = replace(node, gpus=gpus)
        nodes.append(node)
    return ClusterState(nodes=tuple(nodes))
