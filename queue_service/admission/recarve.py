"""Fit checks that may re-carve idle GPUs (mode or MIG layout) the way the cycle would."""

from __future__ import annotations

from collections.abc import Callable

from partitioner.types import ClusterState, LayoutChange, NoFit, Placement, Request
from queue_service.admission.packer import PackerFactory
from queue_service.admission.state import apply_changes

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
