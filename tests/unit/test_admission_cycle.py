"""One admission cycle (admission/cycle.py): strict priority, blocking, never-fit set aside, no over-allocation."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partitioner.place import Packer
from partitioner.repartition import propose
from partitioner.types import BLOCKS_PER_GPU, GpuMode, NodeState, Request, SliceKind
from queue_service.admission.cycle import CycleResult, run_cycle
from queue_service.admission.snapshot import PendingJob
from queue_service.admission.state import apply_changes, apply_placements
from tests.support.builders import cluster, gpu, node, pending, snapshot
from tests.support.first_fit import FirstFitPacker


def cycle(nodes: list[NodeState], jobs: list[PendingJob], packer_factory=FirstFitPacker,
          repartition=None) -> CycleResult:
    return run_cycle(snapshot(nodes, jobs), packer_factory, repartition)


def admitted_ids(result: CycleResult) -> list[str]:
    return [a.job_id for a in result.admitted]


def test_higher_priority_is_admitted_first_even_if_submitted_later() -> None:
    result = cycle(
        [node("n", gpu("g0"))],
        [pending("old-low", Request(gpus=1), priority=100, at_s=0),
         pending("new-high", Request(gpus=1), priority=1000, at_s=60)],
    )
    assert admitted_ids(result) == ["new-high"]
    assert "old-low" in result.waiting


def test_override_wins_over_class() -> None:
    result = cycle(
        [node("n", gpu("g0"))],
        [pending("prod", Request(gpus=1), priority=1000),
         pending("boosted", Request(gpus=1), priority=100, priority_override=2000)],
    )
    assert admitted_ids(result) == ["boosted"]


def test_admissions_follow_the_order_and_all_that_fit_are_admitted() -> None:
    result = cycle(
        [node("n", gpu("g0"), gpu("g1"), gpu("g2"))],
        [pending(f"j{i}", Request(gpus=1), at_s=i) for i in range(3)],
    )
    assert admitted_ids(result) == ["j0", "j1", "j2"]
    assert result.waiting == {} and result.never == {}
    uuids = [s.gpu_uuid for a in result.admitted for m in a.placement.replicas for s in m.slices]
    assert sorted(uuids) == ["g0", "g1", "g2"]


def test_first_non_fitting_job_blocks_lower_ones_with_a_readable_reason() -> None:
    # head wants 2 GPUs (only 1 free now); the small job behind it would fit but must not overtake.
    result = cycle(
        [node("n", gpu("g0"), gpu("g1", held=True))],
        [pending("head", Request(gpus=2), priority=1000), pending("small", Request(gpus=1), priority=100)],
    )
    assert admitted_ids(result) == []
    assert "most free on one node is 1" in result.waiting["head"]
    assert "waiting behind job head" in result.waiting["small"] and "time limit" in result.waiting["small"]


def test_jobs_before_the_blocker_are_admitted() -> None:
    result = cycle(
        [node("n", gpu("g0"), gpu("g1"))],
        [pending("a", Request(gpus=1), at_s=0), pending("big", Request(gpus=2), at_s=1),
         pending("c", Request(gpus=1), at_s=2)],
    )
    assert admitted_ids(result) == ["a"]
    assert set(result.waiting) == {"big", "c"}
    assert "waiting behind job big" in result.waiting["c"]


def test_never_fitting_jobs_are_set_aside_and_do_not_block() -> None:
    result = cycle(
        [node("n", gpu("g0", memory_mib=40960))],
        [
            pending("huge", Request(gpus=4), priority=1000),
            pending("too-much-memory", Request(blocks=10, gpu_memory_mib=50000), priority=1000),
            pending("wrong-model", Request(gpus=1, gpu_models=("t4",)), priority=1000),
            pending("ok", Request(gpus=1), priority=100),
        ],
    )
    assert admitted_ids(result) == ["ok"]
    assert set(result.never) == {"huge", "too-much-memory", "wrong-model"}
    assert "no node has that many" in result.never["huge"]
    assert "40960 MiB" in result.never["too-much-memory"]
    assert "t4" in result.never["wrong-model"]
    assert result.waiting == {}


def test_no_nodes_means_waiting_with_a_reason_not_never() -> None:
    result = cycle([], [pending("a", Request(gpus=1)), pending("b", Request(gpus=1), at_s=1)])
    assert result.admitted == [] and result.never == {}
    assert "no node is registered" in result.waiting["a"]
    assert "waiting behind job a" in result.waiting["b"]


def test_every_pending_job_gets_exactly_one_outcome() -> None:
    jobs = [pending(f"j{i}", Request(blocks=40, gpu_memory_mib=1000), at_s=i) for i in range(6)]
    jobs.append(pending("never", Request(gpus=9)))
    result = cycle([node("n", gpu("g0"), gpu("g1"))], jobs)
    # Two GPUs × two 40-block jobs each; the fifth waits, the sixth waits behind it.
    assert admitted_ids(result) == ["j0", "j1", "j2", "j3"]
    assert set(result.waiting) == {"j4", "j5"}
    assert set(result.never) == {"never"}


def test_a_gang_is_admitted_whole_or_blocks() -> None:
    nodes = [node("a", gpu("a0")), node("b", gpu("b0"))]
    ok = cycle(nodes, [pending("gang", Request(gpus=1, replicas=2))])
    assert admitted_ids(ok) == ["gang"]
    assert [m.node_id for m in ok.admitted[0].placement.replicas] == ["a", "b"]
    blocked = cycle(nodes, [pending("gang", Request(gpus=1, replicas=3)), pending("after", Request(gpus=1), at_s=1)])
    assert admitted_ids(blocked) == []
    assert set(blocked.waiting) == {"gang", "after"}


# -- property: a cycle never over-allocates -----------------------------------------------------------

MODELS = [("h100-80gb", 81920), ("a100-40gb", 40960)]


@st.composite
def clusters(draw) -> list[NodeState]:
    nodes = []
    for n in range(draw(st.integers(1, 3) | st.just(0))):
        gpus = []
        for g in range(draw(st.integers(0, 4))):
            model, mem = draw(st.sampled_from(MODELS))
            state = draw(st.sampled_from(["idle", "held", "shared", "idle-shared"]))
            used_blocks = draw(st.integers(1, BLOCKS_PER_GPU)) if state == "shared" else 0
            used_mem = draw(st.integers(0, mem)) if state == "shared" else 0
            mode = GpuMode.SHARED if state.endswith("shared") else GpuMode.EXCLUSIVE
            gpus.append(gpu(f"n{n}g{g}", model=model, memory_mib=mem, held=state == "held",
                            used_blocks=used_blocks, used_memory_mib=used_mem, mode=mode))
        cpus = draw(st.integers(1, 16))
        mem_mib = draw(st.integers(1, 64)) * 1024
        # Mostly idle CPU and RAM, so that GPUs decide most placements; sometimes anything.
        free_cpus = draw(st.just(cpus * 1000) | st.integers(0, cpus * 1000))
        free_mem = draw(st.just(mem_mib) | st.integers(0, mem_mib))
        nodes.append(node(f"n{n}", *gpus, cpus_milli=cpus * 1000, memory_mib=mem_mib,
                          free_cpus_milli=free_cpus, free_memory_mib=free_mem))
    return nodes


requests = st.one_of(
    st.builds(Request, gpus=st.integers(1, 5), cpus_milli=st.just(0) | st.integers(0, 8000),
              memory_mib=st.just(0) | st.integers(0, 16384),
              replicas=st.integers(1, 3), gpu_models=st.sampled_from([(), ("a100-40gb",)])),
    st.builds(Request, blocks=st.integers(1, 100), gpu_memory_mib=st.integers(1, 20000) | st.integers(1, 90000),
              cpus_milli=st.just(0) | st.integers(0, 4000), replicas=st.integers(1, 3),
              gpu_models=st.sampled_from([(), ("h100-80gb",)])),
    st.builds(Request, cpus_milli=st.integers(1, 8000), memory_mib=st.integers(0, 16384)),
)
pending_jobs = st.lists(
    st.builds(pending, st.just(""), requests, priority=st.sampled_from([100, 500, 1000]), at_s=st.integers(0, 3),
              priority_override=st.none() | st.integers(0, 2000)),
    min_size=1, max_size=15,
).map(lambda js: [replace(j, job_id=f"j{i:02d}") for i, j in enumerate(js)])


def _check_capacity(nodes: list[NodeState], result: CycleResult) -> None:
    gpus = {g.uuid: g for n in nodes for g in n.gpus}
    by_node = {n.node_id: n for n in nodes}
    blocks = defaultdict(int)
    memory = defaultdict(int)
    whole = defaultdict(int)
    cpus = defaultdict(int)
    ram = defaultdict(int)
    for g in gpus.values():
        blocks[g.uuid] = BLOCKS_PER_GPU if g.held else g.used_blocks
        memory[g.uuid] = g.memory_mib if g.held else g.used_memory_mib
        whole[g.uuid] = int(g.held)
    for n in nodes:
        cpus[n.node_id] = n.cpus_milli - n.free_cpus_milli
        ram[n.node_id] = n.memory_mib - n.free_memory_mib
    for admission in result.admitted:
        assert len(admission.placement.replicas) >= 1
        for member in admission.placement.replicas:
            cpus[member.node_id] += member.cpus_milli
            ram[member.node_id] += member.memory_mib
            for s in member.slices:
                assert s.gpu_uuid in {g.uuid for g in by_node[member.node_id].gpus}, "slice on another node's GPU"
                if s.kind is SliceKind.GPU:
                    assert blocks[s.gpu_uuid] == 0, f"whole GPU {s.gpu_uuid} handed out while in use"
                    whole[s.gpu_uuid] += 1
                    blocks[s.gpu_uuid] = BLOCKS_PER_GPU
                    memory[s.gpu_uuid] = gpus[s.gpu_uuid].memory_mib
                else:
                    assert whole[s.gpu_uuid] == 0, f"blocks handed out on held GPU {s.gpu_uuid}"
                    blocks[s.gpu_uuid] += s.blocks
                    memory[s.gpu_uuid] += s.memory_mib
    for uuid, g in gpus.items():
        assert blocks[uuid] <= BLOCKS_PER_GPU, f"{uuid}: {blocks[uuid]} blocks"
        assert memory[uuid] <= g.memory_mib, f"{uuid}: {memory[uuid]} MiB of {g.memory_mib}"
        assert whole[uuid] <= 1, f"{uuid} held {whole[uuid]} times"
    for nid, n in by_node.items():
        assert cpus[nid] <= n.cpus_milli, f"{nid}: CPUs over-allocated"
        assert ram[nid] <= n.memory_mib, f"{nid}: RAM over-allocated"


def _after(nodes: list[NodeState], result: CycleResult) -> list[NodeState]:
    """The cluster with the cycle's layout changes and admissions applied (what the next snapshot reads)."""
    changed = apply_changes(cluster(*nodes), result.layout_changes)
    return list(apply_placements(changed, (a.placement for a in result.admitted)).nodes)


PACKERS = [
    pytest.param(FirstFitPacker, None, id="first-fit"),
    pytest.param(Packer, None, id="partitioner"),
    pytest.param(Packer, propose, id="partitioner+repartition"),
]


@pytest.mark.parametrize(("packer_factory", "repartition"), PACKERS)
@settings(max_examples=150, deadline=None)
@given(nodes=clusters(), jobs=pending_jobs)
def test_a_cycle_never_over_allocates(packer_factory, repartition, nodes: list[NodeState],
                                      jobs: list[PendingJob]) -> None:
    result = cycle(nodes, jobs, packer_factory, repartition)
    _check_capacity(nodes, result)
    # Every job has exactly one outcome.
    outcomes = admitted_ids(result) + list(result.waiting) + list(result.never)
    assert sorted(outcomes) == sorted(j.job_id for j in jobs)
    # Gangs are whole.
    by_id = {j.job_id: j for j in jobs}
    for a in result.admitted:
        assert len(a.placement.replicas) == by_id[a.job_id].request.replicas

    # A second cycle on the state after committing: still within capacity, summed over both cycles.
    after = _after(nodes, result)
    rest = [j for j in jobs if j.job_id not in set(admitted_ids(result))]
    second = cycle(after, rest, packer_factory, repartition)
    _check_capacity(after, second)
    combined = CycleResult(admitted=result.admitted + second.admitted)
    _check_capacity(nodes, combined)
    # Nothing changed between the cycles, so the head that waited still waits: the second cycle admits nothing.
    assert second.admitted == [], "a job refused by the first cycle was admitted with no capacity freed"
