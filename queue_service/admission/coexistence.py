"""Coexistence rules: which workload classes may share one physical GPU, and which one node (pure).

A table is one row per class: the classes it may share with, or ``["*"]`` for
any class (also ones configured later). A row left out means ``["*"]``. Two
classes share only when each row admits the other, so every effective rule
holds both ways; a table whose rows disagree (``training`` admits
``experiment`` but ``experiment`` does not admit ``training``) contradicts
itself and is refused by :func:`check`, as is a class nobody configured. (A
class configured later, with no row, shares with exactly the rows that admit
it: no contradiction.)

The default, for latency and for noisy experiments::

    GPU     training     batch interactive training
            inference    inference
            batch        batch experiment interactive training
            interactive  batch experiment interactive training
            experiment   batch experiment interactive
    node    every class  *

:class:`Rules` turns a table (and the classes that may not share a GPU at
all) into the peer tuples a :class:`partitioner.types.Request` carries.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

ANY = "*"

Table = Mapping[str, Sequence[str]]

DEFAULT_GPU: dict[str, list[str]] = {
    "training": ["batch", "interactive", "training"],
    "inference": ["inference"],
    "batch": ["batch", "experiment", "interactive", "training"],
    "interactive": ["batch", "experiment", "interactive", "training"],
    "experiment": ["batch", "experiment", "interactive"],
}
DEFAULT_NODE: dict[str, list[str]] = {name: [ANY] for name in DEFAULT_GPU}


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a table is refused, and the field at fault (e.g. ``gpu.experiment``)."""

    field: str
    message: str


def _admits(table: Table, a: str, b: str) -> bool:
    row = table.get(a)
    return row is None or ANY in row or b in row


def check(table: Table, *, classes: Collection[str], field: str) -> Problem | None:
    """The first thing wrong with ``table`` (unknown classes, a rule that does not hold both ways), or None."""
    known = set(classes)
    for name, row in table.items():
        if name not in known:
            return Problem(f"{field}.{name}", f"{field}: unknown workload class {name!r} (known: "
                                              f"{', '.join(sorted(known))})")
        for other in row:
            if other != ANY and other not in known:
                return Problem(f"{field}.{name}", f"{field}.{name}: unknown workload class {other!r}")
        if ANY in row and len(row) > 1:
            return Problem(f"{field}.{name}", f"{field}.{name}: '*' stands alone (any class)")
    present = sorted(table)  # a row left out takes no side: the other row alone decides (both must admit)
    for a in present:
        for b in present:
            if a < b and _admits(table, a, b) != _admits(table, b, a):
                yes, no = (a, b) if _admits(table, a, b) else (b, a)
                return Problem(f"{field}.{no}", f"{field}: {yes} may share with {no} but {no} may not share with "
                                                f"{yes}; a rule holds both ways")
    return None


@dataclass(frozen=True, slots=True)
class Rules:
    """The effective rules over the configured classes: who may share a GPU, a node, with whom."""

    gpu: Mapping[str, Sequence[str]]
    node: Mapping[str, Sequence[str]]
    classes: tuple[str, ...]
    alone_on_gpu: frozenset[str] = frozenset()  # classes whose GPU holds them alone (may_share_gpu False)

    def gpu_peers(self, workload: str) -> tuple[str, ...]:
        """The classes ``workload`` may share one physical GPU with (blocks under MPS, MIG instances of it)."""
        if workload in self.alone_on_gpu:
            return ()
        return tuple(c for c in self.classes if c not in self.alone_on_gpu
                     and _admits(self.gpu, workload, c) and _admits(self.gpu, c, workload))

    def node_peers(self, workload: str) -> tuple[str, ...] | None:
        """The classes ``workload`` may share a node with (None: any, the usual case)."""
        if all(ANY in self.node.get(c, [ANY]) for c in self.classes):
            return None
        return tuple(c for c in self.classes if _admits(self.node, workload, c) and _admits(self.node, c, workload))
