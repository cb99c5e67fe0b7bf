"""A request's node labels: every member lands on a node that carries them, on every placement path."""

from __future__ import annotations

import pytest

from partitioner.place import Packer
from partitioner.types import GpuMode, NoFit, Placement, Request
from tests.support.builders import cluster, gpu, gpus, node

HOST = (("gpuq.runtime.process", "yes"),)
BOX = (("gpuq.runtime.docker", "yes"),)


def _two_kinds() -> Packer:
    # The container node is bigger and listed first: a packer that ignored labels would prefer it.
    return Packer(cluster(
        node("boxes", *gpus("b", 3), gpu("bs", index=3, mode=GpuMode.SHARED), labels=BOX),
        node("hosts", gpu("h0"), gpu("hs", index=1, mode=GpuMode.SHARED),
             gpu("m", index=2, model="a100-40gb", mode=GpuMode.MIG), labels=HOST),
    ))


@pytest.mark.parametrize("request_", [
    Request(node_labels=HOST, cpus_milli=1000),
    Request(gpus=1, node_labels=HOST),
    Request(blocks=20, gpu_memory_mib=1000, node_labels=HOST),
    Request(mig_profile="1g.5gb", node_labels=HOST),
])
def test_every_path_honours_the_labels(request_: Request) -> None:
    placed = _two_kinds().place(request_)
    assert isinstance(placed, Placement), placed
    assert {m.node_id for m in placed.replicas} == {"hosts"}


def test_no_node_with_the_labels_is_a_reason_not_a_placement() -> None:
    packer = _two_kinds()
    assert isinstance(packer.place(Request(gpus=2, node_labels=HOST)), NoFit)  # hosts has one whole GPU
    none = packer.place(Request(gpus=1, node_labels=(("gpuq.runtime.wasm", "yes"),)))
    assert isinstance(none, NoFit) and "gpuq.runtime.wasm=yes" in none.reason


def test_without_labels_any_node_will_do() -> None:
    placed = _two_kinds().place(Request(gpus=3))  # only the container node has three whole GPUs
    assert isinstance(placed, Placement) and placed.replicas[0].node_id == "boxes"
