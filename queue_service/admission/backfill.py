"""The blocked head's reservation, and which later jobs may backfill around it.

Rules (EASY backfilling, one reservation):

- The first job in order that does not fit gets a **reservation**: the
  earliest time its resources free up, from running jobs' expected ends
  (start + time limit, or the stop deadline of a job being stopped), and the
  slices it would take then.
- A later job may **backfill** only if it fits now and either its time limit
  ends before the reservation starts, or it fits without touching any
  capacity the reservation needs.
- A job without a time limit cannot promise to end before the reservation,
  so it cannot backfill at all.
- If the head would fit only once jobs without a time limit end, the
  reservation has no start time; backfill is then limited to capacity it
  does not need.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from partitioner.types import BLOCKS_PER_GPU, ClusterState, Placement, Request
from queue_service.admission.packer import PackerFactory
from queue_service.admission.recarve import Repartitioner, fits_on
from queue_service.admission.snapshot import RunningJob
from queue_service.admission.state import release_placements


@dataclass(frozen=True, slots=True)
class Reservation:
    """Where and from when the blocked head will run."""

    job_id: str
    start: datetime | None  # None: not before jobs without a time limit end
    placement: Placement | None  # None: it does not fit even on the emptied cluster


def reserve(
    job_id: str,
    request: Request,
    cluster: ClusterState,
    running: Sequence[RunningJob],
    packer_factory: PackerFactory,
    repartition: Repartitioner | None = None,
) -> Reservation:
    """Find the earliest moment ``request`` fits as running jobs end.

    Releasing more jobs only frees capacity, so "fits once the first k have
    ended" is monotone in k. One packer walks k up and down by releasing and
    re-committing placements: a galloping search (k = 1, 2, 4, …) then a
    binary search, O(log n) placements and no re-encoding of the cluster.
    The gallop runs first and "fits once all have ended" is asked only if it
    found nothing (by monotonicity it holds whenever the gallop found a k),
    so a head that waits for a few of thousands of running jobs releases a
    few placements, not all of them. Only if the head needs idle GPUs
    re-carved does it fall back to building the freed cluster for each probe.
    """
    timed = _ByEnd([r for r in running if r.expected_end is not None])
    untimed = [r for r in running if r.expected_end is None]
    packer = packer_factory(cluster)
    released = 0

    def fits_after_release(k: int) -> Placement | None:
        nonlocal released
        while released < k:
            packer.release(timed[released].placement)
            released += 1
        while released > k:
            released -= 1
            packer.commit(timed[released].placement)
        got = packer.place(request)
        return got if isinstance(got, Placement) else None

    def fits_after(k: int, extra: Sequence[RunningJob] = ()) -> Placement | None:
        freed = release_placements(cluster, [r.placement for r in [*timed.first(k), *extra]])
        return fits_on(freed, request, packer_factory, repartition)  # idle GPUs may be re-carved by then

    if timed:
        found = _earliest(fits_after_release, len(timed), verify_last=True)
        if found is not None:
            hi, placement = found
            return Reservation(job_id, timed[hi - 1].expected_end if hi > 0 else None, placement)
    if fits_after(len(timed)) is None:
        return Reservation(job_id, None, fits_after(len(timed), untimed))
    # it fits only with re-carving: probe on rebuilt clusters
    found = _earliest(fits_after, len(timed), verify_last=False)
    if found is None:
        raise RuntimeError("a search that need not verify its last probe always answers")  # see _earliest
    hi, placement = found
    return Reservation(job_id, timed[hi - 1].expected_end if hi > 0 else None, placement)


class _ByEnd:
    """Timed running jobs in order of (expected end, id), sorted lazily: a heap, popped as far as asked.

    A search that needs only the first few ends (the usual case) costs O(n) for the heap and
    O(log n) per end it looks at, instead of sorting thousands of running jobs every cycle.
    """

    def __init__(self, jobs: list[RunningJob]) -> None:
        self._heap = [(r.expected_end, r.job_id, i) for i, r in enumerate(jobs)]
        heapq.heapify(self._heap)
        self._jobs = jobs
        self._sorted: list[RunningJob] = []

    def __len__(self) -> int:
        return len(self._jobs)

    def __getitem__(self, k: int) -> RunningJob:
        while len(self._sorted) <= k:
            self._sorted.append(self._jobs[heapq.heappop(self._heap)[2]])
        return self._sorted[k]

    def first(self, k: int) -> list[RunningJob]:
        """The ``k`` earliest-ending jobs, in order."""
        if k > 0:
            self[k - 1]
        return self._sorted[:k]


def _earliest(probe: Callable[[int], Placement | None], n: int, *, verify_last: bool
              ) -> tuple[int, Placement | None] | None:
    """The least k in 1..n with ``probe(k)`` (monotone in k), and ``probe`` at it.

    ``verify_last``: probe(n) is not known to hold; None if it does not. Otherwise it is taken as known.
    """
    lo, hi, k = 0, n, 1  # invariant: fits after hi endings (once verified), not after lo
    found = False
    while k < hi:  # gallop: small k first, the head usually needs only a few jobs to end
        if probe(k) is not None:
            hi, found = k, True
            break
        lo, k = k, k * 2
    if not found and verify_last and probe(n) is None:
        return None
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        if probe(mid) is not None:
            hi = mid
        else:
            lo = mid
    return hi, probe(hi)


def reserved_view(cluster: ClusterState, reservation: Reservation) -> ClusterState:
    """The cluster with every GPU the reservation uses taken whole, and its CPU and RAM taken.

    Whole GPUs, not just the reserved slices: the reservation may need a GPU
    re-carved (another mode or MIG layout), so any use of that GPU by a
    backfilled job could delay it. CPU and RAM the reservation needs that are
    held now are taken again (free goes below zero), which only makes the
    view stricter.
    """
    if reservation.placement is None:
        return cluster
    gpus = {s.gpu_uuid for member in reservation.placement.replicas for s in member.slices}
    cpu: dict[str, int] = {}
    mem: dict[str, int] = {}
    for member in reservation.placement.replicas:
        cpu[member.node_id] = cpu.get(member.node_id, 0) + member.cpus_milli
        mem[member.node_id] = mem.get(member.node_id, 0) + member.memory_mib
    nodes = []
    for node in cluster.nodes:
        if node.node_id not in cpu:
            nodes.append(node)  # untouched: the same object (see state.apply_placements)
            continue
        node_gpus = tuple(
            replace(g, held=True, used_blocks=BLOCKS_PER_GPU, used_memory_mib=g.memory_mib,
                    mig_instances=tuple(replace(i, held=True) for i in g.mig_instances))
            if g.uuid in gpus else g
            for g in node.gpus
        )
        nodes.append(replace(node, gpus=node_gpus, free_cpus_milli=node.free_cpus_milli - cpu.get(node.node_id, 0),
                             free_memory_mib=node.free_memory_mib - mem.get(node.node_id, 0)))
    return ClusterState(tuple(nodes))


def ends_before(now: datetime, time_limit_s: int | None, reservation: Reservation) -> bool:
    """True if a job started now surely ends before the reservation starts."""
    if time_limit_s is None or reservation.start is None:
        return False
    return (reservation.start - now).total_seconds() >= time_limit_s

