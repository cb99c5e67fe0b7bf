"""The long-queue speed-ups of the admission cycle change no decision.

``tests/support/reference_cycle.py`` keeps the cycle, ``reserve`` and ``choose_victims`` as they were
before them. On random snapshots (idle and shared GPUs, running jobs with and without time limits,
some preemptible or stopping, quotas, a queue with repeated shapes so that heads, backfill and the
per-shape memos all come into play) both cycles must return the same result: admissions with their
placements and backfill flags, every wait and never-fit reason, re-carvings, preemptions, the
reservation and the deferred jobs. Also on the openb trace's first cycles under a compressed queue.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partitioner.place import Packer
from partitioner.repartition import propose
from partitioner.types import BLOCKS_PER_GPU, ClusterState, GpuMode, NodeState, Placement, Request
from queue_service.admission.cycle import CycleResult, run_cycle
from queue_service.admission.snapshot import PendingJob, Quota, RunningJob, Snapshot
from tests.support.builders import T0, gpu, node, pending, snapshot
from tests.support.first_fit import FirstFitPacker
from tests.support.reference_cycle import reference_run_cycle

ENDS = st.sampled_from([30, 300, 900, 3600]).map(lambda s: T0 + timedelta(seconds=s))
MODELS = [("h100-80gb", 81920), ("a100-40gb", 40960)]

SHAPES = [  # few shapes, so that a queue repeats them (the memos are per shape)
    Request(gpus=1, cpus_milli=1000, memory_mib=2048),
    Request(gpus=2),
    Request(gpus=1, replicas=2),
    Request(gpus=4),
    Request(blocks=25, gpu_memory_mib=10000),
    Request(blocks=60, gpu_memory_mib=30000, cpus_milli=2000),
    Request(blocks=30, gpu_memory_mib=5000, replicas=2),
    Request(cpus_milli=4000, memory_mib=8192),
    Request(gpus=1, gpu_models=("a100-40gb",)),
    Request(gpus=9),  # never fits on these clusters
]


@st.composite
def idle_clusters(draw) -> list[NodeState]:
    nodes = []
    for n in range(draw(st.integers(1, 4))):
        gpus = []
        for g in range(draw(st.integers(0, 4))):
            model, mem = draw(st.sampled_from(MODELS))
            mode = draw(st.sampled_from([GpuMode.EXCLUSIVE, GpuMode.EXCLUSIVE, GpuMode.SHARED]))
            gpus.append(gpu(f"n{n}g{g}", index=g, model=model, memory_mib=mem, mode=mode))
        nodes.append(node(f"n{n}", *gpus, cpus_milli=draw(st.integers(4, 32)) * 1000,
                          memory_mib=draw(st.integers(8, 64)) * 1024))
    return nodes


@st.composite
def snapshots(draw) -> Snapshot:
    """A cluster partly held by running jobs placed by the partitioner, and a queue behind it."""
    nodes = draw(idle_clusters())
    packer = Packer(ClusterState(tuple(nodes)))
    held: list[RunningJob] = []
    for r in range(draw(st.integers(0, 12))):
        request = draw(st.sampled_from(SHAPES[:8]))
        got = packer.place(request)
        if not isinstance(got, Placement):
            continue
        packer.commit(got)
        started = draw(st.none() | st.sampled_from([10.0, 600.0, 7200.0]))
        held.append(RunningJob(
            job_id=f"r{r:02d}", project=draw(st.sampled_from(["a", "b", "c"])), placement=got,
            effective_priority=draw(st.sampled_from([100, 500, 1000])), preemptible=draw(st.booleans()),
            started_at=None if started is None else T0 - timedelta(seconds=started),
            expected_end=draw(st.none() | ENDS),
            gpu_equivalents=float(draw(st.integers(0, 4))), stopping=draw(st.integers(0, 9)) == 0,
        ))
    jobs = []
    for j in range(draw(st.integers(1, 40))):
        jobs.append(replace(
            pending(f"q{j:02d}", draw(st.sampled_from(SHAPES)), project=draw(st.sampled_from(["a", "b", "c"])),
                    priority=draw(st.sampled_from([100, 500, 500, 1000])), at_s=draw(st.integers(0, 5)),
                    time_limit_s=draw(st.none() | st.sampled_from([20, 100, 600, 5000])),
                    fair_share=float(draw(st.integers(0, 2)))),
        ))
    quotas = draw(st.none() | st.fixed_dictionaries({
        "a": st.builds(Quota, guaranteed=st.sampled_from([0.0, 2.0, 8.0]),
                       borrow_limit=st.none() | st.sampled_from([0.0, 4.0])),
        "b": st.builds(Quota, guaranteed=st.sampled_from([0.0, 4.0]), borrow_limit=st.none()),
    }))
    return snapshot(nodes, jobs, running=held, quotas=quotas)


def outcome(result: CycleResult) -> dict:
    """Everything a cycle decides, as comparable values."""
    return {
        "admitted": [(a.job_id, a.placement, a.backfill) for a in result.admitted],
        "waiting": result.waiting, "never": result.never, "layout_changes": result.layout_changes,
        "preemptions": result.preemptions, "reservation": result.reservation, "deferred": result.deferred,
    }


PACKERS = [
    pytest.param(FirstFitPacker, None, id="first-fit"),
    pytest.param(Packer, None, id="partitioner"),
    pytest.param(Packer, propose, id="partitioner+repartition"),
]


@pytest.mark.parametrize(("packer_factory", "repartition"), PACKERS)
@settings(max_examples=200, deadline=None)
@given(snap=snapshots(), max_recarves=st.sampled_from([0, 1, 8]))
def test_the_cycle_decides_as_the_reference(packer_factory, repartition, snap: Snapshot, max_recarves: int) -> None:
    new = run_cycle(snap, packer_factory, repartition, max_recarves=max_recarves)
    old = reference_run_cycle(snap, packer_factory, repartition, max_recarves=max_recarves)
    assert outcome(new) == outcome(old)


def test_a_long_queue_behind_a_blocked_head_decides_as_the_reference() -> None:
    """Hundreds of jobs of a few shapes behind a head that waits for one of many running jobs."""
    nodes = [node(f"n{n}", *(gpu(f"n{n}g{g}", index=g, mode=GpuMode.SHARED if (n, g) == (5, 3) else GpuMode.EXCLUSIVE)
                             for g in range(4))) for n in range(6)]
    packer = Packer(ClusterState(tuple(nodes)))
    held = []
    for r in range(30):
        request = Request(gpus=1) if r % 8 else Request(blocks=40, gpu_memory_mib=20000)
        got = packer.place(request)
        if isinstance(got, Placement):
            packer.commit(got)
            held.append(RunningJob(f"r{r:02d}", "a", got, 500, False, T0 - timedelta(hours=1),
                                   T0 + timedelta(seconds=60 * (r + 1)), gpu_equivalents=1.0))
    shapes = [Request(gpus=4), Request(gpus=1), Request(blocks=BLOCKS_PER_GPU // 4, gpu_memory_mib=8000),
              Request(gpus=2)]
    jobs: list[PendingJob] = [pending(f"q{j:03d}", shapes[j % 4], at_s=j, time_limit_s=[None, 30, 600, 7200][j % 4])
                              for j in range(400)]
    snap = snapshot(nodes, jobs, running=held)
    for packer_factory, repartition in ((Packer, propose), (Packer, None), (FirstFitPacker, None)):
        new = run_cycle(snap, packer_factory, repartition)
        old = reference_run_cycle(snap, packer_factory, repartition)
        assert new.reservation is not None and new.reservation.start is not None  # a real head, timed
        assert outcome(new) == outcome(old)
