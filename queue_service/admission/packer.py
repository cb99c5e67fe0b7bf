"""What admission needs from a packer, as a Protocol: the domain names no implementation.

``partitioner.place.Packer`` satisfies it (and so does the first-fit packer in
``tests/support``). A cycle builds several packers over views of one snapshot
(``PackerFactory``): the cluster now, the head's reservation taken, a re-carved
layout; each one's ``commit`` and ``release`` change only its own view.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from partitioner.types import ClusterState, NoFit, Placement, Request

__all__ = ["PackerFactory", "PackerLike"]


class PackerLike(Protocol):
    """Places requests on one cluster view and tracks what it has committed."""

    def place(self, request: Request) -> Placement | NoFit:
        """Where ``request`` would go now, or why it does not fit (nothing is held)."""
        ...

    def commit(self, placement: Placement) -> None:
        """Take ``placement``'s slices in this view."""
        ...

    def release(self, placement: Placement) -> None:
        """Give ``placement``'s slices back in this view."""
        ...


PackerFactory = Callable[[ClusterState], PackerLike]
