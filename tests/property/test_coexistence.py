"""Coexistence, by hypothesis: random mixes of workload classes on shared GPUs and MIG instances.

For every request of a random sequence (each placement committed before the next):
- no placement puts a class on a GPU that holds one it may not share with (the table's rule);
- nothing waits that the rule allows somewhere: a brute-force search over the packer's own free
  capacity (shared units with room; MIG GPUs with a free instance or a free start) finds nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from partitioner.catalog import lookup_model
from partitioner.coexistence import breaks
from partitioner.encode import KIND_MIG, KIND_MIG_SHARED, KIND_SHARED
from partitioner.mig import count_new_instances, span_mask
from partitioner.place import Packer
from partitioner.types import BLOCKS_PER_GPU, ClusterState, GpuMode, MigInstance, NoFit, Request
from tests.governance.test_coexistence_placement import GPU_PEERS
from tests.support.builders import gpu, node

CLASSES = sorted(GPU_PEERS)
A100 = "a100-40gb"
PROFILE = "1g.5gb"


@st.composite
def gpus_(draw, uuid: str, index: int):
    kind = draw(st.sampled_from(["shared", "mig", "mig-shared"]))
    if kind == "shared":
        held = draw(st.lists(st.tuples(st.sampled_from(CLASSES), st.integers(5, 40)), max_size=3))
        used = min(sum(b for _, b in held), BLOCKS_PER_GPU)
        return replace(gpu(uuid, index=index, model=A100, mode=GpuMode.SHARED, used_blocks=used,
                           used_memory_mib=used * 100), workloads=tuple(c for c, _ in held))
    starts = draw(st.lists(st.integers(0, 6), max_size=5, unique=True))
    instances, workloads = [], []
    for start in sorted(starts):
        cls = draw(st.sampled_from(CLASSES))
        if kind == "mig-shared":
            used = draw(st.integers(0, 60))
            instances.append(MigInstance(profile=PROFILE, start=start, mode=GpuMode.SHARED, used_blocks=used,
                                         used_memory_mib=used * 10, workloads=(cls,) if used else ()))
            workloads += [cls] if used else []
        else:
            held = draw(st.booleans())
            instances.append(MigInstance(profile=PROFILE, start=start, held=held, workloads=(cls,) if held else ()))
            workloads += [cls] if held else []
    return replace(gpu(uuid, index=index, model=A100, mode=GpuMode.MIG, mig_instances=tuple(instances)),
                   workloads=tuple(workloads))


@st.composite
def clusters(draw) -> ClusterState:
    nodes = []
    for n in range(draw(st.integers(1, 3))):
        count = draw(st.integers(1, 2))
        nodes.append(node(f"n{n}", *(draw(gpus_(f"n{n}g{i}", i)) for i in range(count)),
                          free_cpus_milli=draw(st.sampled_from([0, 8000, 64000]))))
    return ClusterState(tuple(nodes))


REQUESTS = st.lists(st.tuples(st.sampled_from(CLASSES), st.one_of(st.none(), st.integers(5, 60)),
                              st.sampled_from([0, 4000])), min_size=1, max_size=5)


def _request(workload: str, blocks: int | None, cpus_milli: int) -> Request:
    if blocks is None:
        return Request(mig_profile=PROFILE, cpus_milli=cpus_milli, workload=workload, gpu_peers=GPU_PEERS[workload])
    return Request(blocks=blocks, gpu_memory_mib=blocks * 10, cpus_milli=cpus_milli, workload=workload,
                   gpu_peers=GPU_PEERS[workload])


def _allowed_somewhere(packer: Packer, req: Request, held: dict[str, Counter[str]]) -> str | None:
    """Brute force over the packer's free capacity: a GPU where ``req`` fits and the rule lets it in."""
    enc = packer.enc
    for g, state in enumerate(enc.gpus):
        n = int(enc.gpu_node[g])
        if enc.node_free_cpu[n] < req.cpus_milli or breaks(+held[state.uuid], req.gpu_peers) is not None:
            continue
        units = [u for u in range(len(enc.units)) if enc.unit_gpu[u] == g]
        if req.blocks:
            if any(enc.unit_kind[u] in (KIND_SHARED, KIND_MIG_SHARED) and enc.unit_free_blocks[u] >= req.blocks
                   and enc.unit_free_mem[u] >= req.gpu_memory_mib for u in units):
                return state.uuid
            continue
        if state.mode is not GpuMode.MIG:
            continue
        profile = lookup_model(state.model).mig_profile(PROFILE)
        if any(enc.unit_kind[u] == KIND_MIG and enc.unit_free_blocks[u] == BLOCKS_PER_GPU
               and enc.unit_profile[u] == profile.profile_id for u in units):
            return state.uuid
        existing = sum(1 for u in units if enc.unit_profile[u] == profile.profile_id)
        if count_new_instances(profile, int(enc.gpu_mig_mask[g]), existing) >= 1:
            return state.uuid
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), REQUESTS)
def test_no_placement_breaks_a_rule_and_nothing_waits_that_a_rule_allows(cluster: ClusterState, asks) -> None:
    packer = Packer(cluster)
    held = {g.uuid: Counter(g.workloads) for n in cluster.nodes for g in n.gpus}
    for ask in asks:
        req = _request(*ask)
        placed = packer.place(req)
        if isinstance(placed, NoFit):
            where = _allowed_somewhere(packer, req, held)
            assert where is None, f"{req} waits ({placed.reason}) but fits on {where} within the rules"
            continue
        for member in placed.replicas:
            for s in member.slices:
                broken = breaks(+held[s.gpu_uuid], req.gpu_peers)
                assert broken is None, f"{req.workload} placed on {s.gpu_uuid}, which holds {broken}"
                held[s.gpu_uuid][req.workload] += 1
        packer.commit(placed)


def test_the_brute_force_sees_mig_room() -> None:
    """The reference itself: an empty MIG GPU has room; a full one (seven 1g.5gb held) has none."""
    full = tuple(MigInstance(profile=PROFILE, start=s, held=True) for s in range(7))
    empty = Packer(ClusterState((node("n", gpu("m", model=A100, mode=GpuMode.MIG)),)))
    packed = Packer(ClusterState((node("n", gpu("m", model=A100, mode=GpuMode.MIG, mig_instances=full)),)))
    req = _request("batch", None, 0)
    assert _allowed_somewhere(empty, req, {"m": Counter()}) == "m"
    assert _allowed_somewhere(packed, req, {"m": Counter()}) is None
    assert span_mask(0, 1) == 1
