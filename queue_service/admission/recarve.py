"""Fit checks that may re-carve idle GPUs (mode or MIG layout) the way the cycle would, and the cycle's re-carving.

A re-carving in the cycle costs no new encoding of the cluster when the cycle's packer is the
partitioner's: the repartitioner forks it (``repartition.encoded_as``), and the trial packer is a fork
with only the re-carved nodes re-encoded (``Packer.refresh_nodes``). Other packers (the first-fit
baseline in tests) are rebuilt from the factory as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from partitioner.place import Packer
from partitioner.repartition import encoded_as
from partitioner.types import ClusterState, LayoutChange, NoFit, Placement, Request
from queue_service.admission.packer import PackerFactory, PackerLike
from queue_service.admission.state import apply_changes, apply_placements

Repartitioner = Callable[[ClusterState, list[Request]], list[LayoutChange]]


def place_on(
    cluster: ClusterState, request: Request, packer_factory: PackerFactory, repartition: Repartitioner | None
) -> tuple[Placement | NoFit, list[LayoutChange]]:
    """Place on ``cluster``; if it does not fit, try once more with idle GPUs re-carved for it."""
    got = packer_factory(cluster).place(request)
    if isinstance(got, NoFit) and not got.never and repartition is not None:
        changes = repartition(cluster, [request])
        if changes:
            retry = packer_factory(apply_changes(cluster, changes)).place(request)
            if isinstance(retry, Placement):
                return retry, changes
    return got, []


def fits_on(cluster: ClusterState, request: Request, packer_factory: PackerFactory,
            repartition: Repartitioner | None) -> Placement | None:
    got, _changes = place_on(cluster, request, packer_factory, repartition)
    return got if isinstance(got, Placement) else None


def recarve(request: Request, cluster: ClusterState, packer: PackerLike, admitted: Iterable[Placement],
            packer_factory: PackerFactory, repartition: Repartitioner
            ) -> tuple[Placement, PackerLike, ClusterState, list[LayoutChange]] | None:
    """Re-carve idle GPUs for ``request`` with only what is idle after ``admitted`` (the cycle's admissions so far).

    ``packer`` encodes ``cluster`` with ``admitted`` committed. Returns the placement, the packer and cluster
    with the changes (``admitted`` still committed) and the changes; None if no change lets it fit.
    """
    admitted = list(admitted)
    taken = apply_placements(cluster, admitted)
    if isinstance(packer, Packer):
        with encoded_as(taken, packer):
            changes = repartition(taken, [request])
    else:
        changes = repartition(taken, [request])
    if not changes:
        return None
    trial_cluster = apply_changes(cluster, changes)
    trial: PackerLike | None = _forked(packer, apply_changes(taken, changes), changes)
    if trial is None:
        trial = packer_factory(trial_cluster)
        for earlier in admitted:
            trial.commit(earlier)
    retry = trial.place(request)
    if not isinstance(retry, Placement):
        return None
    return retry, trial, trial_cluster, changes


def _forked(packer: PackerLike, taken: ClusterState, changes: list[LayoutChange]) -> Packer | None:
    """A fork of the partitioner's ``packer`` with the re-carved nodes re-encoded from ``taken`` (None: rebuild)."""
    if not isinstance(packer, Packer):
        return None
    touched = {c.node_id for c in changes}
    twin = packer.fork()
    if twin.refresh_nodes(taken, [i for i, n in enumerate(taken.nodes) if n.node_id in touched]):
        return twin
    return None
