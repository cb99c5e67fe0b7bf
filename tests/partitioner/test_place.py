"""Packer: table-driven fit cases with reasons, and invariants under random sequences."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partitioner.mig import validate_layout
from partitioner.place import DEFAULT_POLICY, POLICIES, Packer, place
from partitioner.repartition import propose
from partitioner.types import GpuMode, MigInstance, NoFit, Placement, Request, SliceKind
from tests.support.builders import cluster, gpu, node

CLUSTER = cluster(
    node("n0", *(gpu(f"GPU-0-{i}", index=i, nvlink_peers=(i ^ 1,)) for i in range(4))),
    node("n1", gpu("GPU-1-0", mode=GpuMode.SHARED, used_blocks=50, used_memory_mib=1000),
         gpu("GPU-1-1", index=1, mode=GpuMode.MIG, mig_instances=(MigInstance("3g.40gb", 0, "MIG-a"),))),
    node("n2", gpu("GPU-2-0", model="t4"), gpu("GPU-2-1", index=1, model="t4", held=True), cpus_milli=8000),
)

CASES = [
    # request, fits, reason fragment, never
    (Request(gpus=2), True, "", False),
    (Request(gpus=4), True, "", False),
    (Request(gpus=5), False, "needs 5 whole GPUs on one node; the largest node has 4", True),
    (Request(gpus=1, gpu_models=("a100-40gb",)), False, "no GPU model matches a100-40gb", True),
    (Request(gpus=2, gpu_models=("t4",)), False, "needs 2 whole GPUs on one node; the most free on one node is 1",
     False),
    (Request(gpus=1, gpu_models=("t4",), cpus_milli=9000), False, "needs 9 CPUs", False),
    (Request(gpus=1, gpu_models=("t4",), cpus_milli=7000, memory_mib=1000), True, "", False),
    (Request(blocks=40, gpu_memory_mib=4096), True, "", False),
    (Request(blocks=60), False, "no shared GPU has 60 free blocks", False),
    (Request(blocks=10, gpu_memory_mib=10**6), False, "needs 1000000 MiB of GPU memory", True),
    (Request(blocks=10, gpu_models=("t4",)), False, "no shared GPU of an allowed model", False),
    (Request(mig_profile="3g.40gb", mig_count=2), True, "", False),
    (Request(mig_profile="3g.40gb", mig_count=3), False, "no MIG GPU has room", False),
    (Request(mig_profile="9g.1gb"), False, "unknown MIG profile 9g.1gb", True),
    (Request(mig_profile="1g.6gb"), False, "no allowed GPU model has MIG profile 1g.6gb", True),
    (Request(cpus_milli=2000, memory_mib=1000), True, "", False),
    (Request(cpus_milli=10**6), False, "the largest node has 64 CPUs", True),
    (Request(gpus=2, replicas=2), True, "", False),
    (Request(gpus=3, replicas=2), False, "a gang of 2 replicas (3 GPUs each)", True),  # one node has 3+ GPUs
    (Request(gpus=1, replicas=2, gpu_models=("t4",)), False, "gang of 2: only 1 members fit", False),  # one held
    (Request(gpus=1, replicas=3, gpu_models=("t4",)), False, "holds at most 2", True),
    (Request(gpus=1, blocks=10), False, "one of", True),
]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("req,fits,reason,never", CASES)
def test_fit_cases(policy, req, fits, reason, never):
    got = Packer(CLUSTER, policy=policy).place(req)
    if fits:
        assert isinstance(got, Placement), got
        assert len(got.replicas) == req.replicas
    else:
        assert isinstance(got, NoFit), got
        assert reason in got.reason and got.never == never


def test_whole_gpus_prefer_nvlink_peers():
    got = place(CLUSTER, Request(gpus=2))
    assert {s.gpu_uuid for s in got.replicas[0].slices} in ({"GPU-0-0", "GPU-0-1"}, {"GPU-0-2", "GPU-0-3"})


def test_mig_reuses_existing_then_creates():
    got = place(CLUSTER, Request(mig_profile="3g.40gb", mig_count=2))
    slices = got.replicas[0].slices
    assert [(s.kind, s.mig_start, s.mig_uuid) for s in slices] == [(SliceKind.MIG, 0, "MIG-a"),
                                                                     (SliceKind.MIG, 4, None)]


def test_default_policy():
    assert DEFAULT_POLICY in POLICIES and DEFAULT_POLICY == "gpuq"


def test_import_compiles_nothing():
    import subprocess
    import sys
    code = ("import partitioner, partitioner.place, partitioner.catalog, sys; "
            "print('numba.core.registry' in sys.modules and any('partitioner.kernels' in m for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# -- invariants under random request sequences --------------------------------

req_st = st.one_of(
    st.builds(Request, gpus=st.integers(1, 4), cpus_milli=st.sampled_from([0, 4000]), replicas=st.integers(1, 2)),
    st.builds(Request, blocks=st.integers(1, 100), gpu_memory_mib=st.sampled_from([0, 8192, 40000]),
              cpus_milli=st.sampled_from([0, 2000])),
    st.builds(Request, mig_profile=st.sampled_from(["1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb", "1g.20gb"]),
              mig_count=st.integers(1, 3), replicas=st.integers(1, 2)),
    st.builds(Request, cpus_milli=st.integers(1, 20000)),
)


def _cluster():
    modes = [GpuMode.EXCLUSIVE, GpuMode.SHARED, GpuMode.MIG]
    return cluster(*(
        node(f"n{n}", *(gpu(f"GPU-{n}-{i}", index=i, mode=modes[(n + i) % 3]) for i in range(4)), cpus_milli=32000)
        for n in range(3)))


@settings(max_examples=40, deadline=None)
@given(st.lists(req_st, min_size=1, max_size=25), st.sampled_from(POLICIES))
def test_no_overallocation_valid_mig_gangs_whole(requests, policy):
    state = _cluster()
    packer = Packer(state, policy=policy, demand=requests)
    committed = []
    for req in requests:
        got = packer.place(req)
        if isinstance(got, NoFit):
            continue
        assert len(got.replicas) == req.replicas  # all or nothing
        packer.commit(got)
        committed.append(got)
    blocks, mem, whole, mig, cpu = {}, {}, {}, {}, {}
    for p in committed:
        for r in p.replicas:
            cpu[r.node_id] = cpu.get(r.node_id, 0) + r.cpus_milli
            for s in r.slices:
                if s.kind is SliceKind.BLOCKS:
                    blocks[s.gpu_uuid] = blocks.get(s.gpu_uuid, 0) + s.blocks
                    mem[s.gpu_uuid] = mem.get(s.gpu_uuid, 0) + s.memory_mib
                elif s.kind is SliceKind.GPU:
                    whole[s.gpu_uuid] = whole.get(s.gpu_uuid, 0) + 1
                else:
                    mig.setdefault(s.gpu_uuid, []).append((s.mig_profile, s.mig_start))
    gpus = {g.uuid: g for n in state.nodes for g in n.gpus}
    assert all(v <= 100 for v in blocks.values())
    assert all(mem[u] <= gpus[u].memory_mib for u in mem)
    assert all(v == 1 and gpus[u].mode is GpuMode.EXCLUSIVE for u, v in whole.items())
    assert all(gpus[u].mode is GpuMode.SHARED for u in blocks)
    assert all(v <= 32000 for v in cpu.values())
    for u, layout in mig.items():
        assert gpus[u].mode is GpuMode.MIG and validate_layout("h100-80gb", layout) == []


@settings(max_examples=30, deadline=None)
@given(st.lists(req_st, min_size=1, max_size=12))
def test_commit_release_round_trip(requests):
    packer = Packer(_cluster())
    before = [packer.place(r) for r in requests]
    placed = []
    for req in requests:
        got = packer.place(req)
        if isinstance(got, Placement):
            packer.commit(got)
            placed.append(got)
    for p in reversed(placed):
        packer.release(p)
    assert [packer.place(r) for r in requests] == before


@settings(max_examples=30, deadline=None)
@given(st.lists(req_st, min_size=1, max_size=6))
def test_repartition_only_idle_and_valid(pending):
    idle = cluster(node("n0", gpu("GPU-0-0"), gpu("GPU-0-1", index=1, held=True),
                        gpu("GPU-0-2", index=2, mode=GpuMode.SHARED), gpu("GPU-0-3", index=3)))
    changes = propose(idle, pending)
    gpus = {g.uuid: g for g in idle.nodes[0].gpus}
    assert len({c.gpu_uuid for c in changes}) == len(changes)
    for c in changes:
        assert not gpus[c.gpu_uuid].held
        if c.mode is GpuMode.MIG:
            assert c.mig_layout and validate_layout("h100-80gb", c.mig_layout) == []


def test_repartition_turns_idle_gpu_shared_for_blocks():
    idle = cluster(node("n0", gpu("GPU-0-0"), gpu("GPU-0-1", index=1, held=True)))
    changes = propose(idle, [Request(blocks=30)])
    assert [(c.gpu_uuid, c.mode) for c in changes] == [("GPU-0-0", GpuMode.SHARED)]
    assert propose(idle, [Request(gpus=1)]) == []  # fits already: no change


@settings(max_examples=30, deadline=None)
@given(st.lists(req_st, min_size=1, max_size=20), st.sampled_from(["fgd", "gpuq"]))
def test_fragment_cache_matches_fresh_scoring(requests, policy):
    """The per-node F cache (refreshed only for committed nodes) answers as a full recompute would."""
    cached = Packer(_cluster(), policy=policy, demand=requests)
    fresh = Packer(_cluster(), policy=policy, demand=requests)
    for req in requests:
        fresh._frag_ok[:] = False  # forget every cached F
        got = cached.place(req)
        assert got == fresh.place(req)
        if isinstance(got, Placement):
            cached.commit(got)
            fresh.commit(got)


def test_mig_gpu_without_instances_takes_new_ones():
    mig = cluster(node("n0", gpu("GPU-0-0", mode=GpuMode.MIG)))
    got = place(mig, Request(mig_profile="1g.10gb", mig_count=2))
    assert [(s.mig_start, s.mig_uuid) for s in got.replicas[0].slices] == [(0, None), (1, None)]
    assert isinstance(place(mig, Request(mig_profile="1g.10gb", gpu_models=("a100-40gb",))), NoFit)
