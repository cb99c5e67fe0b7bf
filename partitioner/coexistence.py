"""Coexistence: which workload classes may share one physical GPU, and which one node.

A request names its class (``Request.workload``) and the classes it may share
with (``gpu_peers``, ``node_peers``; ``None``: any). The cluster says what each
GPU and node holds (``GpuState.workloads``, ``NodeState.workloads``: one entry
per allocation, so a release takes exactly one away). The service hands the
request one row of a *symmetric* table, so "every class the GPU holds is among
my peers" is the whole rule: nobody already there objects to me either.

A GPU is shared by blocks under MPS and by the MIG instances carved from it
alike; a whole exclusive GPU holds one job and is free of classes when free.

:class:`Held` keeps the counts as one array per class over the encoded GPUs
and nodes, so a rule check is a handful of vectorised comparisons and a
commit or release a few increments. :func:`gpu_reason` and
:func:`node_reason` are the one place the wait reason's words are made.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from partitioner.types import GpuState, NodeState, Request


def gpu_reason(*, gpu: str, held: str, workload: str) -> str:
    """Why a request waits for a GPU it has room on: e.g. "GPU 0 on n1 holds training work; inference may not
    share it"."""
    return f"GPU {gpu} holds {held} work; {workload or 'this job'} may not share it"


def node_reason(*, node: str, held: str, workload: str) -> str:
    """Why a request waits for a node it has room on."""
    return f"node {node} holds {held} work; {workload or 'this job'} may not share it"


def breaks(held: Iterable[str], peers: Sequence[str] | None) -> str | None:
    """The first held class (sorted) that ``peers`` does not admit, or None (the plain rule, for reference
    checks and tests)."""
    if peers is None:
        return None
    allowed = set(peers)
    return next((h for h in sorted(set(held)) if h not in allowed), None)


class Held:
    """Counts of the workload classes each encoded GPU and node holds."""

    def __init__(self, gpus: Sequence[GpuState], gpu_node: np.ndarray, nodes: Sequence[NodeState]) -> None:
        self.n_gpus, self.n_nodes = len(gpus), len(nodes)
        self.gpu: dict[str, np.ndarray] = {}
        self.node: dict[str, np.ndarray] = {}
        for g, gpu in enumerate(gpus):
            for name in gpu.workloads:
                self._column(self.gpu, name, self.n_gpus)[g] += 1
        for n, node in enumerate(nodes):
            for name in node.workloads:
                self._column(self.node, name, self.n_nodes)[n] += 1
        self.gpu_node = gpu_node

    @staticmethod
    def _column(table: dict[str, np.ndarray], name: str, size: int) -> np.ndarray:
        col = table.get(name)
        if col is None:
            col = table[name] = np.zeros(size, dtype=np.int64)
        return col

    @property
    def empty(self) -> bool:
        """Nothing held anywhere carries a class (every rule check passes)."""
        return not any(c.any() for c in self.gpu.values()) and not any(c.any() for c in self.node.values())

    def copy(self) -> Held:
        twin = object.__new__(Held)
        twin.__dict__.update(self.__dict__)
        twin.gpu = {k: v.copy() for k, v in self.gpu.items()}
        twin.node = {k: v.copy() for k, v in self.node.items()}
        return twin

    def gpu_ok(self, req: Request) -> np.ndarray | None:
        """Per encoded GPU: everything it holds may share it with ``req`` (None: no GPU rule applies)."""
        return _ok(self.gpu, req.gpu_peers, self.n_gpus)

    def node_ok(self, req: Request) -> np.ndarray | None:
        """Per node: everything it holds may share it with ``req`` (None: no node rule applies)."""
        return _ok(self.node, req.node_peers, self.n_nodes)

    def first_gpu_objection(self, g: int, req: Request) -> str | None:
        return breaks((k for k, v in self.gpu.items() if v[g] > 0), req.gpu_peers)

    def first_node_objection(self, n: int, req: Request) -> str | None:
        return breaks((k for k, v in self.node.items() if v[n] > 0), req.node_peers)

    def add(self, workload: str, *, node: int, gpus: Iterable[int], sign: int) -> None:
        """A member of class ``workload`` placed on (+1) or taken off (-1) ``node`` and ``gpus``."""
        if not workload:
            return
        col = self._column(self.node, workload, self.n_nodes)
        col[node] = max(col[node] + sign, 0)
        gcol = self._column(self.gpu, workload, self.n_gpus)
        for g in gpus:
            gcol[g] = max(gcol[g] + sign, 0)

    def reset(self, *, node: int, state: NodeState, gpus: Iterable[tuple[int, GpuState]]) -> None:
        """Node ``node`` as ``state`` says now, and its GPUs as (encoded index, state) pairs."""
        for col in self.node.values():
            col[node] = 0
        for name in state.workloads:
            self._column(self.node, name, self.n_nodes)[node] += 1
        for g, gpu in gpus:
            for col in self.gpu.values():
                col[g] = 0
            for name in gpu.workloads:
                self._column(self.gpu, name, self.n_gpus)[g] += 1


def _ok(table: dict[str, np.ndarray], peers: Sequence[str] | None, size: int) -> np.ndarray | None:
    """Per GPU or node: holds nothing outside ``peers``; None when the rule bars nothing (the common case:
    no mask to build, the packer's paths run as without rules)."""
    if peers is None:
        return None
    allowed = set(peers)
    barring = [col for name, col in table.items() if name not in allowed and col.any()]
    if not barring:
        return None
    out = np.ones(size, dtype=np.bool_)
    for col in barring:
        out &= col == 0
    return out
