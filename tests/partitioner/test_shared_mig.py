"""Shared MIG instances: block jobs on MIG-mode GPUs, through the repartitioner and the admission cycle.

Blocks on a shared instance count that instance's SMs (100 blocks = the instance) and its memory.
"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from partitioner.catalog import lookup_model
from partitioner.encode import KIND_MIG_SHARED
from partitioner.mig import shared_profiles, validate_layout
from partitioner.place import Packer
from partitioner.repartition import propose, with_changes
from partitioner.types import BLOCKS_PER_GPU, ClusterState, GpuMode, MigInstance, NoFit, Placement, Request, SliceKind
from queue_service.admission.cycle import run_cycle
from queue_service.admission.state import apply_changes, apply_placements
from tests.support.builders import cluster, gpu, node, pending, snapshot

H100 = lookup_model("h100-80gb")


def _place_with_recarve(state: ClusterState, req: Request) -> tuple[ClusterState, Placement | NoFit]:
    got = Packer(state).place(req)
    if isinstance(got, NoFit) and not got.never:
        changes = propose(state, [req])
        if changes:
            state = with_changes(state, changes)
            got = Packer(state).place(req)
    return state, got


def test_two_block_jobs_stack_on_one_shared_instance_and_a_3g_takes_another_slot() -> None:
    state = cluster(node("n", gpu("G", mode=GpuMode.MIG)))
    assert isinstance(Packer(state).place(Request(blocks=20, gpu_memory_mib=4096)), NoFit)  # no shared room yet
    [change] = propose(state, [Request(blocks=20, gpu_memory_mib=4096)])
    assert change.mode is GpuMode.MIG and change.mig_layout == (("1g.10gb", 0),) and change.shared_starts == (0,)
    state = with_changes(state, [change])
    taken = []
    for _ in range(2):
        got = Packer(apply_placements(state, taken)).place(Request(blocks=20, gpu_memory_mib=4096))
        assert isinstance(got, Placement)
        [s] = got.replicas[0].slices
        assert (s.kind, s.mig_start, s.mig_profile, s.blocks) == (SliceKind.BLOCKS, 0, "1g.10gb", 20)
        taken.append(got)
    after = apply_placements(state, taken)
    inst = after.nodes[0].gpus[0].mig_instances[0]
    assert (inst.mode, inst.used_blocks, inst.used_memory_mib) == (GpuMode.SHARED, 40, 8192)
    mig = Packer(after).place(Request(mig_profile="3g.40gb"))
    assert isinstance(mig, Placement) and mig.replicas[0].slices[0].mig_start == 4  # not on the shared one
    # a third block job that its memory does not fit on the 1g.10gb gets its own instance beside the first
    after, third = _place_with_recarve(after, Request(blocks=50, gpu_memory_mib=9000))
    assert isinstance(third, Placement) and third.replicas[0].slices[0].mig_start != 0


def test_a_busy_mig_gpu_gains_a_shared_instance_and_keeps_what_runs() -> None:
    held = MigInstance("3g.40gb", 0, "MIG-held", held=True)
    state = cluster(node("n", gpu("G", mode=GpuMode.MIG, mig_instances=(held,))))
    [change] = propose(state, [Request(blocks=30, gpu_memory_mib=30000)])
    assert change.shared_starts and change.shared_starts[0] >= 4 and ("3g.40gb", 0) in change.mig_layout
    assert validate_layout("h100-80gb", change.mig_layout) == []
    kept = with_changes(state, [change]).nodes[0].gpus[0].mig_instances
    assert kept[0] == held  # same UUID, still held, still exclusive


def test_an_idle_exclusive_instance_turns_shared_when_no_slice_is_free() -> None:
    whole = MigInstance("7g.80gb", 0, "MIG-whole")
    state = cluster(node("n", gpu("G", mode=GpuMode.MIG, mig_instances=(whole,))))
    [change] = propose(state, [Request(blocks=100, gpu_memory_mib=70000)])
    assert change.mig_layout == (("7g.80gb", 0),) and change.shared_starts == (0,)
    [inst] = with_changes(state, [change]).nodes[0].gpus[0].mig_instances
    assert inst.uuid == "MIG-whole" and inst.mode is GpuMode.SHARED


def test_shared_profiles_smallest_footprint_then_most_compute() -> None:
    assert [p.name for p in shared_profiles(H100, 15000)][:3] == ["2g.20gb", "1g.20gb", "4g.40gb"]
    assert shared_profiles(H100, 10**6) == []
    assert all("+me" not in p.name for p in shared_profiles(H100, 0))


def test_whole_mig_jobs_never_take_a_shared_instance_even_an_idle_one() -> None:
    shared = MigInstance("3g.40gb", 0, "MIG-s", mode=GpuMode.SHARED)
    state = cluster(node("n", gpu("G", mode=GpuMode.MIG, mig_instances=(shared,))))
    got = Packer(state).place(Request(mig_profile="3g.40gb", mig_count=2))
    assert isinstance(got, NoFit)
    one = Packer(state).place(Request(mig_profile="3g.40gb"))
    assert isinstance(one, Placement) and one.replicas[0].slices[0].mig_start == 4


def test_an_idle_shared_instance_goes_back_to_a_whole_profile_job_on_a_busy_gpu() -> None:
    done = MigInstance("4g.40gb", 0, "MIG-done", mode=GpuMode.SHARED)  # its block jobs have ended
    busy = MigInstance("3g.40gb", 4, "MIG-busy", held=True)
    state = cluster(node("n", gpu("G", mode=GpuMode.MIG, mig_instances=(done, busy))))
    assert isinstance(Packer(state).place(Request(mig_profile="4g.40gb")), NoFit)
    [change] = propose(state, [Request(mig_profile="4g.40gb")])
    assert change.mig_layout == (("4g.40gb", 0), ("3g.40gb", 4)) and change.shared_starts == ()
    got = Packer(with_changes(state, [change])).place(Request(mig_profile="4g.40gb"))
    assert isinstance(got, Placement) and got.replicas[0].slices[0].mig_uuid == "MIG-done"
    used = MigInstance("4g.40gb", 0, "MIG-used", mode=GpuMode.SHARED, used_blocks=10, used_memory_mib=100)
    assert propose(cluster(node("n", gpu("G", mode=GpuMode.MIG, mig_instances=(used, busy)))),
                   [Request(mig_profile="4g.40gb")]) == []  # a shared instance in use stays shared


# -- property: a cycle on MIG GPUs never over-allocates a shared instance ------------------------------

_req = st.one_of(
    st.builds(Request, blocks=st.integers(1, 100), gpu_memory_mib=st.sampled_from([0, 2048, 8000, 15000, 39000])),
    st.builds(Request, mig_profile=st.sampled_from(["1g.10gb", "2g.20gb", "3g.40gb", "1g.20gb"])),
    st.builds(Request, gpus=st.just(1)),
)
_existing = st.lists(st.sampled_from([
    MigInstance("3g.40gb", 0, "MIG-a", held=True),
    MigInstance("2g.20gb", 4, "MIG-b", mode=GpuMode.SHARED, used_blocks=60, used_memory_mib=5000),
    MigInstance("1g.10gb", 6, "MIG-c"),
]), unique_by=lambda i: i.start, max_size=3)


@settings(max_examples=40, deadline=None)
@given(st.lists(_req, min_size=1, max_size=14), _existing, _existing)
def test_cycles_on_mig_gpus_never_over_allocate_shared_instances(requests, first, second) -> None:
    state = cluster(node("n", gpu("G0", mode=GpuMode.MIG, mig_instances=tuple(first)),
                         gpu("G1", index=1, mode=GpuMode.MIG, mig_instances=tuple(second)), gpu("G2", index=2)))
    before = {(g.uuid, i.start): i for g in state.nodes[0].gpus for i in g.mig_instances}
    jobs = [pending(f"j{k:02d}", r, at_s=k, time_limit_s=600) for k, r in enumerate(requests)]
    placements: list[Placement] = []
    for _cycle in range(4):  # the admitter runs cycles until nothing changes
        result = run_cycle(snapshot(list(state.nodes), jobs), Packer, propose)
        state = apply_placements(apply_changes(state, result.layout_changes), (a.placement for a in result.admitted))
        placements += [a.placement for a in result.admitted]
        done = {a.job_id for a in result.admitted}
        jobs = [j for j in jobs if j.job_id not in done]
        if not result.admitted and not result.layout_changes:
            break
    gpus = {g.uuid: g for g in state.nodes[0].gpus}
    blocks: dict[tuple[str, int], int] = defaultdict(int)
    memory: dict[tuple[str, int], int] = defaultdict(int)
    exclusive: list[tuple[str, int | None]] = []
    for p in placements:
        for s in p.replicas[0].slices:
            if s.kind is SliceKind.BLOCKS and s.mig_start is not None:
                blocks[(s.gpu_uuid, s.mig_start)] += s.blocks
                memory[(s.gpu_uuid, s.mig_start)] += s.memory_mib
            elif s.kind is not SliceKind.BLOCKS:
                exclusive.append((s.gpu_uuid, s.mig_start))
    assert len(exclusive) == len(set(exclusive))  # no whole GPU or whole instance handed out twice
    for g in gpus.values():
        if g.mode is GpuMode.MIG:
            layout = [(i.profile, i.start) for i in g.mig_instances]
            assert validate_layout("h100-80gb", layout) == []
    for (uuid, start), inst in before.items():  # what was held stays where it was, as it was
        if inst.held or inst.used_blocks:
            now = {i.start: i for i in gpus[uuid].mig_instances}[start]
            assert (now.profile, now.uuid, now.mode, now.held) == (inst.profile, inst.uuid, inst.mode, inst.held)
    for (uuid, start), used in blocks.items():
        inst = {i.start: i for i in gpus[uuid].mig_instances}[start]
        profile = H100.mig_profile(inst.profile)
        assert inst.mode is GpuMode.SHARED and (uuid, start) not in exclusive
        was = before.get((uuid, start), MigInstance("", 0))
        assert inst.used_blocks == used + was.used_blocks <= BLOCKS_PER_GPU
        assert inst.used_memory_mib == memory[(uuid, start)] + was.used_memory_mib
        assert inst.used_memory_mib <= profile.memory_mib
    # free-capacity accounting: a packer built on the final state sees exactly what is left
    enc = Packer(state).enc
    for u, info in enumerate(enc.units):
        if enc.unit_kind[u] == KIND_MIG_SHARED:
            inst = {i.start: i for i in info.gpu.mig_instances}[info.mig_start]
            assert enc.unit_free_blocks[u] == BLOCKS_PER_GPU - inst.used_blocks
            assert enc.unit_free_mem[u] == enc.unit_mem[u] - inst.used_memory_mib
