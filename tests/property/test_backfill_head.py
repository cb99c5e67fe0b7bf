"""Backfill never delays the blocked head, checked against an independent event sweep.

The cycle's own reservation is not trusted here. After one cycle, two futures
are swept forward with every job's time limit (``start + limit``; no limit:
it never ends): one with the running jobs and the jobs admitted in order
(not as backfill), one with the backfilled jobs added. The head's earliest
start in each is the first end time at which its whole GPUs fit, decided by
counting free GPUs per node (for whole-GPU gangs "fits" is exactly
``Σ_node ⌊free/gpus⌋ >= replicas``: no packer is involved). Backfill may
only leave that start where it was.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import hypothesis.strategies as st
from hypothesis import given, settings

from partitioner.place import Packer
from partitioner.types import Placement, Request
from queue_service.admission.cycle import CycleResult, run_cycle
from queue_service.admission.ordering import ordered
from queue_service.admission.snapshot import PendingJob, Snapshot
from tests.support.builders import T0, cluster, gpu, node, pending, running, snapshot, whole_gpus
from tests.support.first_fit import FirstFitPacker

NEVER = datetime.max


def earliest_start(nodes: dict[str, int], holders: list[tuple[Placement, datetime]], request: Request,
                   now: datetime) -> datetime:
    """The first instant (now or a holder's end) at which ``request`` fits; NEVER if none."""
    for t in sorted({now, *(end for _, end in holders if end is not NEVER)}):
        free = dict(nodes)
        for placement, end in holders:
            if end > t:
                for member in placement.replicas:
                    free[member.node_id] -= len(member.slices)
        if sum(f // request.gpus for f in free.values()) >= request.replicas:
            return t
    return NEVER


def ends(now: datetime, limit_s: int | None) -> datetime:
    return NEVER if limit_s is None else now + timedelta(seconds=limit_s)


def check_backfill_never_delays_head(snap: Snapshot, result: CycleResult, nodes: dict[str, int]) -> None:
    queue = ordered(snap.pending)
    admitted = {a.job_id: a for a in result.admitted}
    blocked = [j for j in queue if j.job_id not in admitted and j.job_id not in result.never]
    if not blocked:
        assert not any(a.backfill for a in result.admitted), "backfill without a blocked head"
        return
    head = blocked[0]
    assert result.reservation is not None and result.reservation.job_id == head.job_id
    limits = {j.job_id: j.time_limit_s for j in queue}
    base = [(r.placement, NEVER if r.expected_end is None else r.expected_end) for r in snap.running]
    in_order = [(a.placement, ends(snap.now, limits[a.job_id])) for a in result.admitted if not a.backfill]
    backfilled = [(a.placement, ends(snap.now, limits[a.job_id])) for a in result.admitted if a.backfill]
    without = earliest_start(nodes, base + in_order, head.request, snap.now)
    with_backfill = earliest_start(nodes, base + in_order + backfilled, head.request, snap.now)
    assert with_backfill <= without, (
        f"backfill moved the head {head.job_id} from {without} to {with_backfill}")


@st.composite
def scenarios(draw) -> tuple[Snapshot, dict[str, int]]:
    sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    nodes = {f"n{i}": size for i, size in enumerate(sizes)}
    base = cluster(*(node(n, *(gpu(f"{n}-g{j}", index=j) for j in range(size))) for n, size in nodes.items()))
    free = {n: [f"{n}-g{j}" for j in range(size)] for n, size in nodes.items()}
    held = []
    for i in range(draw(st.integers(0, 4))):
        n = draw(st.sampled_from(sorted(nodes)))
        count = draw(st.integers(1, 2))
        if len(free[n]) < count:
            continue
        taken, free[n] = free[n][:count], free[n][count:]
        held.append(running(f"r{i}", whole_gpus(n, *taken), ends_in_s=draw(st.one_of(st.none(), st.integers(1, 500))),
                            gpu_equivalents=count))
    jobs: list[PendingJob] = []
    for i in range(draw(st.integers(2, 8))):
        request = Request(gpus=draw(st.sampled_from([1, 1, 2, 3])), replicas=draw(st.sampled_from([1, 1, 1, 2])))
        jobs.append(pending(f"j{i}", request, priority=draw(st.sampled_from([100, 500, 1000])), at_s=i,
                            time_limit_s=draw(st.sampled_from([None, 5, 60, 1000]))))
    return snapshot(base, jobs, running=held, now=T0), nodes


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_backfill_never_delays_the_head_gpuq(scenario) -> None:
    snap, nodes = scenario
    check_backfill_never_delays_head(snap, run_cycle(snap, Packer), nodes)


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_backfill_never_delays_the_head_first_fit(scenario) -> None:
    snap, nodes = scenario
    check_backfill_never_delays_head(snap, run_cycle(snap, FirstFitPacker), nodes)


def test_the_check_bites_on_the_issue_scenario() -> None:
    """The sweep sees the delay of issue 14 when the backfilled job is admitted regardless."""
    nodes = {"n": 2}
    a = whole_gpus("n", "n-g0")
    b = whole_gpus("n", "n-g1")
    head = Request(gpus=2)
    without = earliest_start(nodes, [(a, T0 + timedelta(seconds=8))], head, T0)
    delayed = earliest_start(nodes, [(a, T0 + timedelta(seconds=8)), (b, T0 + timedelta(seconds=1000))], head, T0)
    assert without == T0 + timedelta(seconds=8) and delayed == T0 + timedelta(seconds=1000)
