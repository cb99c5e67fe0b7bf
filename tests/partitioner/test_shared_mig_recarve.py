"""The cheap re-carving path decides as the old one did on small clusters.

``propose`` now forks the caller's packer (``encoded_as``), re-encodes only the nodes a trial changes,
bounds a trial to ``MAX_TRIAL_NODES`` candidate nodes and skips nodes that cannot fit; the cycle's
re-carving forks its packer instead of rebuilding it. On clusters under the bound, every decision must
be the old path's: ``tests.support.rebuild_recarve`` keeps the previous implementation (a new packer per trial,
every idle GPU of every node) and a packer that is not a ``Packer``, with which the cycle rebuilds as before.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from partitioner.place import Packer
from partitioner.repartition import encoded_as, propose
from partitioner.types import ClusterState, GpuMode, LayoutChange, MigInstance, Request
from queue_service.admission.cycle import run_cycle
from tests.support.builders import gpu, node, pending, snapshot
from tests.support.rebuild_recarve import RebuiltPacker, rebuild_propose


def _key(changes: list[LayoutChange]) -> list[tuple]:
    return [(c.node_id, c.gpu_uuid, c.mode, c.mig_layout, c.shared_starts) for c in changes]


_gpu = st.one_of(
    st.builds(dict, mode=st.just(GpuMode.EXCLUSIVE), held=st.booleans()),
    st.builds(dict, mode=st.just(GpuMode.SHARED), used_blocks=st.sampled_from([0, 50, 90]),
              used_memory_mib=st.sampled_from([0, 30000])),
    st.builds(dict, mode=st.just(GpuMode.MIG), mig_instances=st.sampled_from([
        (), (MigInstance("3g.40gb", 0, "MIG-x", held=True),), (MigInstance("7g.80gb", 0, "MIG-y"),),
        (MigInstance("2g.20gb", 0, "MIG-z", mode=GpuMode.SHARED, used_blocks=70, used_memory_mib=9000),)])),
)


@st.composite
def _clusters(draw) -> ClusterState:
    nodes = []
    for n in range(draw(st.integers(1, 4))):
        specs = draw(st.lists(_gpu, min_size=1, max_size=4))
        gpus = tuple(gpu(f"G{n}-{i}", index=i, **spec) for i, spec in enumerate(specs))
        nodes.append(node(f"n{n}", *gpus, cpus_milli=draw(st.sampled_from([8000, 64000])),
                          free_cpus_milli=draw(st.sampled_from([2000, 8000]))))
    return ClusterState(tuple(nodes))


_reqs = st.lists(st.one_of(
    st.builds(Request, gpus=st.integers(1, 4), cpus_milli=st.sampled_from([0, 4000]), replicas=st.integers(1, 2)),
    st.builds(Request, blocks=st.integers(1, 100), gpu_memory_mib=st.sampled_from([0, 8000, 30000, 70000])),
    st.builds(Request, mig_profile=st.sampled_from(["1g.10gb", "3g.40gb", "7g.80gb"]), mig_count=st.integers(1, 2)),
), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(_clusters(), _reqs)
def test_propose_decides_as_the_old_path(cluster, requests) -> None:
    assert _key(propose(cluster, requests)) == _key(rebuild_propose(cluster, requests))
    with encoded_as(cluster, Packer(cluster)):  # the cycle's way in: its packer forked, not a new one
        assert _key(propose(cluster, requests)) == _key(rebuild_propose(cluster, requests))


@settings(max_examples=40, deadline=None)
@given(_clusters(), _reqs)
def test_a_cycle_with_forked_recarving_admits_as_one_that_rebuilds(cluster, requests) -> None:
    jobs = [pending(f"j{k}", r, at_s=k, time_limit_s=600) for k, r in enumerate(requests)]
    fast = run_cycle(snapshot(cluster, jobs), Packer, propose)
    slow = run_cycle(snapshot(cluster, jobs), RebuiltPacker, rebuild_propose)
    assert [(a.job_id, a.placement) for a in fast.admitted] == [(a.job_id, a.placement) for a in slow.admitted]
    assert _key(fast.layout_changes) == _key(slow.layout_changes)
    assert fast.waiting == slow.waiting and fast.never == slow.never
