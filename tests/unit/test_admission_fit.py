"""The first-fit baseline packer (tests/support/first_fit.py): GPUs, blocks + memory, CPU/RAM, models, gangs, never."""

from __future__ import annotations

import pytest

from partitioner.types import BLOCKS_PER_GPU, NodeState, NoFit, Placement, Request, SliceKind
from tests.support.builders import A100_40_MIB, H100_MIB, cluster, gpu, node
from tests.support.first_fit import FirstFitPacker


def packer(*nodes: NodeState) -> FirstFitPacker:
    return FirstFitPacker(cluster(*nodes))


def placed(decision: Placement | NoFit) -> Placement:
    assert isinstance(decision, Placement), f"expected a placement, got {decision!r}"
    return decision


def refused(decision: Placement | NoFit, *, never: bool) -> NoFit:
    assert isinstance(decision, NoFit), f"expected NoFit, got {decision!r}"
    assert decision.never is never, decision
    return decision


# -- whole GPUs -------------------------------------------------------------------


def test_whole_gpus_come_from_one_node() -> None:
    p = packer(node("small", gpu("s0")), node("big", gpu("b0"), gpu("b1"), gpu("b2")))
    placement = placed(p.place(Request(gpus=2)))
    [member] = placement.replicas
    assert member.node_id == "big"
    assert [s.gpu_uuid for s in member.slices] == ["b0", "b1"]
    assert all(s.kind is SliceKind.GPU and s.blocks == BLOCKS_PER_GPU and s.memory_mib == H100_MIB
               for s in member.slices)


def test_whole_gpu_request_skips_held_and_shared_gpus() -> None:
    p = packer(node("n", gpu("held", held=True), gpu("shared", used_blocks=10, used_memory_mib=1), gpu("idle")))
    [member] = placed(p.place(Request(gpus=1))).replicas
    assert [s.gpu_uuid for s in member.slices] == ["idle"]


def test_whole_gpus_split_across_nodes_do_not_fit() -> None:
    p = packer(node("a", gpu("a0"), gpu("a1", held=True)), node("b", gpu("b0"), gpu("b1", held=True)))
    no = refused(p.place(Request(gpus=2)), never=False)
    assert "most free on one node is 1" in no.reason


# -- blocks and memory on one GPU -------------------------------------------------------


def test_blocks_go_to_the_first_gpu_with_room_for_both_blocks_and_memory() -> None:
    p = packer(node(
        "n",
        gpu("full-blocks", used_blocks=60, used_memory_mib=1000),
        gpu("full-memory", used_blocks=10, used_memory_mib=H100_MIB - 1000),
        gpu("room", used_blocks=50, used_memory_mib=40000),
    ))
    [member] = placed(p.place(Request(blocks=50, gpu_memory_mib=2000))).replicas
    [s] = member.slices
    assert (s.gpu_uuid, s.kind, s.blocks, s.memory_mib) == ("room", SliceKind.BLOCKS, 50, 2000)


def test_blocks_never_go_on_a_whole_held_gpu() -> None:
    p = packer(node("n", gpu("held", held=True)))
    refused(p.place(Request(blocks=1, gpu_memory_mib=1)), never=False)


def test_blocks_fill_a_gpu_exactly_to_100_and_its_memory_exactly() -> None:
    p = packer(node("n", gpu("g", memory_mib=1000)))
    for _ in range(4):
        p.commit(placed(p.place(Request(blocks=25, gpu_memory_mib=250))))
    refused(p.place(Request(blocks=1, gpu_memory_mib=1)), never=False)


def test_memory_limit_binds_before_blocks() -> None:
    p = packer(node("n", gpu("g", memory_mib=1000)))
    p.commit(placed(p.place(Request(blocks=10, gpu_memory_mib=900))))
    no = refused(p.place(Request(blocks=10, gpu_memory_mib=200)), never=False)
    assert "200 MiB" in no.reason
    placed(p.place(Request(blocks=10, gpu_memory_mib=100)))


# -- CPU and RAM -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "expected_node"),
    [
        (Request(gpus=1, cpus_milli=8000), "roomy"),
        (Request(gpus=1, memory_mib=64 * 1024), "roomy"),
        (Request(gpus=1, cpus_milli=2000, memory_mib=1024), "tight"),
        (Request(cpus_milli=4000), "roomy"),  # CPU-only jobs are limited by CPU too
    ],
)
def test_cpu_and_ram_limits_choose_the_node(request_: Request, expected_node: str) -> None:
    p = packer(
        node("tight", gpu("t0"), free_cpus_milli=2000, free_memory_mib=32 * 1024),
        node("roomy", gpu("r0")),
    )
    [member] = placed(p.place(request_)).replicas
    assert member.node_id == expected_node
    assert (member.cpus_milli, member.memory_mib) == (request_.cpus_milli, request_.memory_mib)


def test_cpu_and_ram_shortage_now_is_not_never_and_the_reason_says_so() -> None:
    p = packer(node("n", gpu("g"), cpus_milli=4000, free_cpus_milli=1000))
    no = refused(p.place(Request(gpus=1, cpus_milli=2000)), never=False)
    assert "CPU or memory" in no.reason, no.reason
    # One node has the GPU but no CPU, the other CPU but no free GPU: the GPU count names the roomy node.
    p = packer(node("a", gpu("a0"), cpus_milli=4000, free_cpus_milli=0), node("b", gpu("b0", held=True)))
    no = refused(p.place(Request(gpus=1, cpus_milli=1000)), never=False)
    assert "the most free on one node is 0" in no.reason, no.reason


def test_cpu_only_request_gets_no_gpu_slices() -> None:
    [member] = placed(packer(node("n")).place(Request(cpus_milli=1000))).replicas
    assert member.slices == ()


# -- GPU models -------------------------------------------------------------------


def test_gpu_models_filter_picks_only_allowed_models() -> None:
    p = packer(
        node("h", gpu("h0"), gpu("h1")),
        node("a", gpu("a0", model="a100-40gb")),
    )
    [member] = placed(p.place(Request(gpus=1, gpu_models=("a100-40gb",)))).replicas
    assert [s.gpu_uuid for s in member.slices] == ["a0"]
    [member] = placed(p.place(Request(blocks=5, gpu_memory_mib=10, gpu_models=("a100-40gb",)))).replicas
    assert member.slices[0].gpu_uuid == "a0"
    # Mixed nodes: a model filter counts only the matching GPUs on a node.
    mixed = packer(node("m", gpu("m0"), gpu("m1", model="a100-40gb")))
    no = refused(mixed.place(Request(gpus=2, gpu_models=("h100-80gb",))), never=True)
    assert "2 GPUs on one node" in no.reason


def test_allowed_model_busy_is_not_never() -> None:
    p = packer(node("n", gpu("h0"), gpu("a0", model="a100-40gb", held=True)))
    refused(p.place(Request(gpus=1, gpu_models=("a100-40gb",))), never=False)


# -- gangs -----------------------------------------------------------------------


def test_gang_members_spread_over_nodes() -> None:
    p = packer(node("a", gpu("a0"), gpu("a1")), node("b", gpu("b0"), gpu("b1")))
    placement = placed(p.place(Request(gpus=2, replicas=2)))
    assert [m.node_id for m in placement.replicas] == ["a", "b"]
    uuids = [s.gpu_uuid for m in placement.replicas for s in m.slices]
    assert len(uuids) == len(set(uuids)) == 4


def test_gang_members_share_a_node_when_it_has_room() -> None:
    p = packer(node("a", gpu("a0"), gpu("a1")))
    placement = placed(p.place(Request(blocks=60, gpu_memory_mib=100, replicas=2)))
    assert [m.slices[0].gpu_uuid for m in placement.replicas] == ["a0", "a1"]


def test_gang_is_all_or_nothing_and_a_refusal_changes_nothing() -> None:
    p = packer(node("a", gpu("a0"), gpu("a1")), node("b", gpu("b0"), gpu("b1", held=True)))
    no = refused(p.place(Request(gpus=2, replicas=2)), never=False)
    assert no.reason
    # Nothing of the partial gang was kept: node a still takes a 2-GPU job.
    [member] = placed(p.place(Request(gpus=2))).replicas
    assert member.node_id == "a"


def test_place_alone_does_not_change_state() -> None:
    p = packer(node("n", gpu("g")))
    first = placed(p.place(Request(gpus=1)))
    assert placed(p.place(Request(gpus=1))) == first


# -- never -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "request_", "reason_part"),
    [
        pytest.param([node("n")], Request(gpus=1), "no GPUs in the cluster", id="no GPUs at all"),
        pytest.param([node("n")], Request(blocks=10, gpu_memory_mib=10), "no GPUs", id="blocks without GPUs"),
        pytest.param([node("n", gpu("g"))], Request(gpus=1, gpu_models=("t4",)), "no GPU model matches t4",
                     id="model not present"),
        pytest.param([node("a", gpu("a0")), node("b", gpu("b0"))], Request(gpus=2),
                     "needs 2 GPUs on one node", id="more GPUs than any node"),
        pytest.param([node("n", gpu("g", memory_mib=A100_40_MIB))], Request(blocks=1, gpu_memory_mib=A100_40_MIB + 1),
                     "largest GPU has 40960 MiB", id="memory larger than any GPU"),
        pytest.param([node("n", gpu("g"), cpus_milli=8000)], Request(gpus=1, cpus_milli=9000),
                     "no node has enough CPUs and memory", id="more CPUs than any node"),
        pytest.param([node("n", gpu("g"), memory_mib=1024)], Request(cpus_milli=1, memory_mib=2048),
                     "no node has enough CPUs and memory", id="more RAM than any node"),
        pytest.param([node("n", gpu("g"))], Request(mig_profile="3g.40gb"), "MIG", id="MIG with first-fit"),
    ],
)
def test_impossible_requests_are_never(nodes: list[NodeState], request_: Request, reason_part: str) -> None:
    no = refused(packer(*nodes).place(request_), never=True)
    assert reason_part in no.reason


def test_never_is_judged_on_capacity_not_on_what_is_free() -> None:
    # Fully busy, but the empty cluster could hold it: wait, do not refuse forever.
    p = packer(node("n", gpu("g0", held=True), gpu("g1", used_blocks=100, used_memory_mib=H100_MIB), free_cpus_milli=0))
    for request in (Request(gpus=2), Request(blocks=100, gpu_memory_mib=H100_MIB), Request(gpus=1, cpus_milli=1000)):
        refused(p.place(request), never=False)


def test_empty_cluster_waits_with_a_reason() -> None:
    no = refused(packer().place(Request(gpus=1)), never=False)
    assert "no node is registered" in no.reason


# -- commit / release ---------------------------------------------------------------


def test_commit_release_round_trip() -> None:
    p = packer(node("n", gpu("g0"), gpu("g1"), cpus_milli=8000, memory_mib=1024))
    whole = placed(p.place(Request(gpus=1, cpus_milli=2000, memory_mib=100)))
    p.commit(whole)
    share = placed(p.place(Request(blocks=70, gpu_memory_mib=500, cpus_milli=1000)))
    assert share.replicas[0].slices[0].gpu_uuid == "g1"
    p.commit(share)
    n = p.nodes[0]
    assert (n.free_cpus_milli, n.free_memory_mib) == (5000, 924)
    assert [(g.held, g.used_blocks, g.used_memory_mib) for g in n.gpus] == [(True, 0, 0), (False, 70, 500)]
    refused(p.place(Request(gpus=1)), never=False)
    refused(p.place(Request(blocks=31, gpu_memory_mib=1)), never=False)
    placed(p.place(Request(blocks=30, gpu_memory_mib=1)))

    p.release(share)
    p.release(whole)
    assert (n.free_cpus_milli, n.free_memory_mib) == (8000, 1024)
    assert [(g.held, g.used_blocks, g.used_memory_mib) for g in n.gpus] == [(False, 0, 0), (False, 0, 0)]
    assert placed(p.place(Request(gpus=2))).replicas[0].node_id == "n"


def test_packer_does_not_mutate_the_snapshot() -> None:
    snapshot = cluster(node("n", gpu("g")))
    p = FirstFitPacker(snapshot)
    p.commit(placed(p.place(Request(gpus=1, cpus_milli=1000))))
    assert snapshot.nodes[0].gpus[0].held is False
    assert snapshot.nodes[0].free_cpus_milli == snapshot.nodes[0].cpus_milli
    # A fresh packer on the same snapshot sees the GPU free.
    placed(FirstFitPacker(snapshot).place(Request(gpus=1)))
