"""NVLink-aware node choice: a multi-GPU job goes to a node where its GPUs are NVLink peers of each other."""

from __future__ import annotations

from partitioner.place import Packer
from partitioner.types import Placement, Request
from tests.support.builders import cluster, gpu, node


def _gpus(placement: Placement | object) -> tuple[str, set[str]]:
    assert isinstance(placement, Placement), placement
    member = placement.replicas[0]
    return member.node_id, {s.gpu_uuid for s in member.slices}


def _pairs(prefix: str, count: int, linked: bool):
    """GPUs linked in pairs (0-1, 2-3, ...) when ``linked``."""
    return [gpu(f"{prefix}{i}", index=i, nvlink_peers=(i ^ 1,) if linked else ()) for i in range(count)]


def test_packing_alone_prefers_the_exact_fit_node() -> None:
    """The control: with no NVLink anywhere, 2 GPUs go to the 2-GPU node (the tighter fit)."""
    nodes = cluster(node("small", *_pairs("s", 2, False)), node("big", *_pairs("b", 4, False)))
    for policy in ("best-fit", "gpuq"):
        assert _gpus(Packer(nodes, policy=policy).place(Request(gpus=2)))[0] == "small", policy


def test_a_multi_gpu_job_prefers_a_node_with_an_nvlink_pair() -> None:
    nodes = cluster(node("small", *_pairs("s", 2, False)), node("big", *_pairs("b", 4, True)))
    for policy in ("best-fit", "fgd", "gpuq"):
        placement = Packer(nodes, policy=policy).place(Request(gpus=2))
        assert _gpus(placement) in (("big", {"b0", "b1"}), ("big", {"b2", "b3"})), (policy, placement)
        assert isinstance(placement, Placement) and placement.note == ""


def test_the_clique_is_chosen_inside_the_node_even_when_the_greedy_order_would_split_it() -> None:
    # b0 is held; free b1, b2, b3 with only b2-b3 linked: the pair must be b2+b3.
    links = {0: (1,), 1: (0,), 2: (3,), 3: (2,)}
    big = node("big", *(gpu(f"b{i}", index=i, nvlink_peers=links[i], held=i == 0) for i in range(4)))
    assert _gpus(Packer(cluster(big)).place(Request(gpus=2))) == ("big", {"b2", "b3"})


def test_without_any_clique_it_still_runs_and_says_so() -> None:
    nodes = cluster(node("big", *_pairs("b", 4, True)))
    placement = Packer(nodes).place(Request(gpus=3))
    assert isinstance(placement, Placement), placement
    assert "no NVLink-connected set of 3" in placement.note, placement.note


def test_single_gpu_and_gang_members_follow_the_same_rule() -> None:
    nodes = cluster(node("small", *_pairs("s", 2, False)), node("big", *_pairs("b", 4, True)))
    one = Packer(nodes).place(Request(gpus=1))
    assert isinstance(one, Placement) and one.note == ""
    gang = Packer(nodes).place(Request(gpus=2, replicas=2))
    assert isinstance(gang, Placement), gang
    assert sorted(m.node_id for m in gang.replicas) == ["big", "big"], "both pairs of the linked node first"
