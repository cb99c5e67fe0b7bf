"""The re-carving path before it was made cheap, kept as the reference the fast one is tested and measured against.

:func:`rebuild_propose` is the old ``partitioner.repartition.propose`` (a new packer per trial over every
idle GPU of every node); :class:`RebuiltPacker` is the partitioner's packer behind a face that is not a
``Packer``, so the admission cycle rebuilds its packer on every re-carving as it used to.
"""

from __future__ import annotations

from collections.abc import Sequence

from partitioner.place import Packer
from partitioner.repartition import _allowed, _change_for, with_changes
from partitioner.types import ClusterState, LayoutChange, NoFit, Placement, Request

__all__ = ["RebuiltPacker", "rebuild_propose"]


def rebuild_propose(cluster: ClusterState, pending_: Sequence[Request]) -> list[LayoutChange]:
    """``partitioner.repartition.propose`` as it was: a new packer per trial, every idle GPU of every node."""
    changes: list[LayoutChange] = []
    changed: set[str] = set()
    state = cluster
    packer = Packer(state)
    taken: list[Placement] = []
    for req in pending_:
        got = packer.place(req)
        if not isinstance(got, NoFit):
            packer.commit(got)
            taken.append(got)
            continue
        if got.never:
            continue
        trial_changes = []
        busy = {s.gpu_uuid for p in taken for r in p.replicas for s in r.slices}
        for n in state.nodes:
            for g in sorted(n.gpus, key=lambda g: g.index):
                if g.uuid in changed or g.uuid in busy or not _allowed(g, req):
                    continue
                change = _change_for(g, req)
                if change is not None:
                    mode, layout, shared = change
                    trial_changes.append(LayoutChange(n.node_id, g.uuid, mode, layout, "", shared))
        if not trial_changes:
            continue
        trial = Packer(with_changes(state, trial_changes))
        for earlier in taken:
            trial.commit(earlier)
        placed = trial.place(req)
        if isinstance(placed, NoFit):
            continue
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


class RebuiltPacker:
    """The partitioner's packer behind a face that is not a Packer: the cycle then rebuilds on each re-carving."""

    def __init__(self, cluster: ClusterState) -> None:
        self.inner = Packer(cluster)

    def place(self, request: Request) -> Placement | NoFit:
        return self.inner.place(request)

    def commit(self, placement: Placement) -> None:
        self.inner.commit(placement)

    def release(self, placement: Placement) -> None:
        self.inner.release(placement)
