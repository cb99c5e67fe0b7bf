"""A queued replay of the whole scheduler in simulated time: the real admission cycle, not a copy.

Jobs arrive at their trace time; at every instant something happens (an arrival or an end) one
:func:`queue_service.admission.cycle.run_cycle` decides (order, reservation, backfill; fair share
and quotas off), and each admitted job runs for its trace duration, which is also its time limit
(so reservations and backfill see exact ends). ``strict_fifo`` is the baseline of a team with no
scheduler: submission order, the first job that does not fit blocks everyone behind it.

Reports per run: mean / p50 / p95 wait, time-weighted GPU allocation ratio, makespan, and the jobs
that never started. Pure: no DB, web or broker.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

from partitioner.types import BLOCKS_PER_GPU, ClusterState, LayoutChange, NoFit, Placement, Request, SliceKind
from queue_service.admission.cycle import run_cycle
from queue_service.admission.packer import PackerFactory, PackerLike
from queue_service.admission.recarve import Repartitioner, place_on
from queue_service.admission.snapshot import PendingJob, RunningJob, Snapshot
from queue_service.admission.state import apply_changes, apply_placements, release_placements
from queue_service.admission.units import request_equivalents

EPOCH = datetime(2026, 1, 1)


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job of a trace: what it asks for, when it arrives, how long it runs once started."""

    job_id: str
    request: Request
    arrive_s: float
    duration_s: float
    priority: int = 500
    project: str = "trace"


@dataclass(slots=True)
class QueuedResult:
    """Waits (seconds) of the jobs that started, allocation over time, makespan, jobs never started."""

    waits_s: list[float] = field(default_factory=list)
    never_started: int = 0
    makespan_s: float = 0.0
    allocation_ratio: float = 0.0  # time-weighted mean of allocated / total GPU capacity
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (time s, allocated share)
    cycles: int = 0

    def percentile(self, q: float) -> float:
        if not self.waits_s:
            return math.nan
        ordered = sorted(self.waits_s)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    @property
    def mean_wait_s(self) -> float:
        return sum(self.waits_s) / len(self.waits_s) if self.waits_s else math.nan


def _gpu_share(placement: Placement) -> float:
    """Whole GPUs a placement holds (blocks / 100 for shared slices)."""
    total = 0.0
    for member in placement.replicas:
        for s in member.slices:
            total += 1.0 if s.kind is not SliceKind.BLOCKS else s.blocks / BLOCKS_PER_GPU
    return total


class ForkingFactory:
    """A packer factory that forks one packer kept in step with the replay, instead of encoding anew.

    Every cycle asks for packers over views of the same cluster (now, the head's reservation
    taken, after earlier admissions); they differ from the replay's cluster in a few nodes.
    Nodes that changed are found by identity (``state.apply_placements`` keeps the others) and
    re-encoded alone (``Packer.refresh_nodes``). Packers without ``fork`` are built as usual.
    """

    def __init__(self, make: PackerFactory) -> None:
        self._make = make
        self._base: Any = None

    def sync(self, cluster: ClusterState) -> None:
        """Keep the kept packer in step with ``cluster`` (the replay's free capacity now)."""
        base = self._base
        if base is not None and base.refresh_nodes(cluster, _changed(base.cluster, cluster)):
            return
        made = self._make(cluster)
        self._base = made if hasattr(made, "fork") and hasattr(made, "refresh_nodes") else None

    def __call__(self, cluster: ClusterState) -> PackerLike:
        base = self._base
        if base is None:
            return self._make(cluster)
        twin = base.fork()
        if twin.refresh_nodes(cluster, _changed(base.cluster, cluster)):
            return cast(PackerLike, twin)
        return self._make(cluster)


def _changed(before: ClusterState, after: ClusterState) -> list[int]:
    """Indices of the nodes that are not the same objects (all of them if the node lists differ)."""
    if len(before.nodes) != len(after.nodes):
        return list(range(len(after.nodes)))
    return [i for i, (a, b) in enumerate(zip(before.nodes, after.nodes, strict=True)) if a is not b]


@dataclass(slots=True)
class _FairShare:
    """Decayed usage per project, kept exactly between events (the held rate is constant in between)."""

    half_life_s: float
    usage: dict[str, float] = field(default_factory=dict)  # decayed GPU-equivalent seconds at ``t``
    rate: dict[str, float] = field(default_factory=dict)  # GPU equivalents held now
    t: float = 0.0

    def advance(self, t: float) -> None:
        if t <= self.t:
            return
        decay = 2 ** (-(t - self.t) / self.half_life_s)
        scale = self.half_life_s / math.log(2) * (1 - decay)
        for project in set(self.usage) | set(self.rate):
            self.usage[project] = self.usage.get(project, 0.0) * decay + self.rate.get(project, 0.0) * scale
        self.t = t


def replay_queue(cluster: ClusterState, jobs: Sequence[TraceJob], packer_factory: PackerFactory, *,
                 strict_fifo: bool = False, horizon_s: float | None = None,
                 repartition: Repartitioner | None = None, fair_share_half_life_s: float | None = None
                 ) -> QueuedResult:
    """Replay ``jobs`` on the idle ``cluster`` through the admission cycle (or strict FIFO).

    ``fair_share_half_life_s`` turns fair share on: each job's ``project`` standing is its decayed
    usage (``fair_share.py``'s rule, kept incrementally), so a project that used less runs first.
    """
    forking = ForkingFactory(packer_factory)
    packer_factory = forking
    share = _FairShare(fair_share_half_life_s) if fair_share_half_life_s else None
    capacity = float(sum(len(n.gpus) for n in cluster.nodes)) or 1.0
    arrivals = sorted(jobs, key=lambda j: (j.arrive_s, j.job_id))
    by_id = {j.job_id: j for j in arrivals}
    result = QueuedResult()
    pending: dict[str, PendingJob] = {}
    running: dict[str, RunningJob] = {}
    ends: list[tuple[float, str]] = []
    free = cluster
    allocated = 0.0
    t_prev = 0.0
    area = 0.0
    i = 0
    while i < len(arrivals) or ends:
        t = min(arrivals[i].arrive_s if i < len(arrivals) else math.inf, ends[0][0] if ends else math.inf)
        if horizon_s is not None and t > horizon_s:
            break
        area += allocated * (t - t_prev)
        t_prev = t
        done = []
        while ends and ends[0][0] <= t:
            _, job_id = heapq.heappop(ends)
            done.append(running.pop(job_id))
        if share is not None:
            share.advance(t)
        if done:
            free = release_placements(free, [r.placement for r in done])
            allocated -= sum(_gpu_share(r.placement) for r in done)
            if share is not None:
                for r in done:
                    share.rate[r.project] -= r.gpu_equivalents
        while i < len(arrivals) and arrivals[i].arrive_s <= t:
            job = arrivals[i]
            pending[job.job_id] = PendingJob(job.job_id, job.project, job.request, job.priority,
                                             EPOCH + timedelta(seconds=job.arrive_s),
                                             time_limit_s=max(1, math.ceil(job.duration_s)))
            i += 1
        if not pending:
            continue
        if share is not None:
            pending = {k: replace(j, fair_share=share.usage.get(j.project, 0.0)) for k, j in pending.items()}
        now = EPOCH + timedelta(seconds=t)
        forking.sync(free)
        if strict_fifo:
            admitted, changes = _fifo(free, pending, packer_factory, repartition)
            if changes:
                free = apply_changes(free, changes)
        else:
            snapshot = Snapshot(cluster=free, pending=tuple(pending.values()), now=now,
                                running=tuple(running.values()))
            decided = run_cycle(snapshot, packer_factory, repartition)
            if decided.layout_changes:
                free = apply_changes(free, decided.layout_changes)
            admitted = [(a.job_id, a.placement) for a in decided.admitted]
        result.cycles += 1
        if admitted:
            free = apply_placements(free, [p for _, p in admitted])
        for job_id, placement in admitted:
            queued = pending.pop(job_id)
            trace = by_id[job_id]
            result.waits_s.append(t - trace.arrive_s)
            end_s = t + trace.duration_s
            equivalents = request_equivalents(trace.request)
            running[job_id] = RunningJob(job_id, queued.project, placement, queued.priority, False, now,
                                         EPOCH + timedelta(seconds=end_s), gpu_equivalents=equivalents)
            if share is not None:
                share.rate[queued.project] = share.rate.get(queued.project, 0.0) + equivalents
            heapq.heappush(ends, (end_s, job_id))
            allocated += _gpu_share(placement)
            result.makespan_s = max(result.makespan_s, end_s)
        result.timeline.append((t, allocated / capacity))
    result.never_started = len(pending) + (len(arrivals) - i)
    result.allocation_ratio = area / capacity / t_prev if t_prev > 0 else 0.0
    return result


def _fifo(free: ClusterState, pending: dict[str, PendingJob], packer_factory: PackerFactory,
          repartition: Repartitioner | None) -> tuple[list[tuple[str, Placement]], list[LayoutChange]]:
    """Submission order; the first job that does not fit blocks the rest (no reservation, no backfill).

    Idle GPUs are re-carved for the job at the front (as the cycle would), so the baseline is not
    stuck on a GPU mode no one chose.
    """
    packer = packer_factory(free)
    out: list[tuple[str, Placement]] = []
    changes: list[LayoutChange] = []
    for job in sorted(pending.values(), key=lambda j: (j.submitted_at, j.job_id)):
        got = packer.place(job.request)
        if isinstance(got, NoFit) and not got.never and repartition is not None:
            taken = apply_placements(free, [p for _, p in out])
            retry, made = place_on(taken, job.request, packer_factory, repartition)
            if isinstance(retry, Placement) and made:
                free = apply_changes(free, made)
                changes.extend(made)
                packer = packer_factory(free)
                for _, earlier in out:
                    packer.commit(earlier)
                got = retry
        if not isinstance(got, Placement):
            if got.never:
                continue
            break
        packer.commit(got)
        out.append((job.job_id, got))
    return out, changes
