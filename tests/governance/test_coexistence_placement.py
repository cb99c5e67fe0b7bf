"""Coexistence as a placement constraint: every packer path (blocks, MIG, whole GPUs, CPU-only) keeps the rule,
commits and releases keep what each GPU holds in step, and a barred job's wait reason says which rule."""

from __future__ import annotations

from dataclasses import replace

from partitioner.coexistence import breaks
from partitioner.place import Packer
from partitioner.types import GpuMode, MigInstance, NoFit, Placement, Request
from tests.support.builders import cluster, gpu, node

# The default table's rows (queue_service.services.coexistence.DEFAULT_GPU), written out for the partitioner alone.
GPU_PEERS = {
    "training": ("batch", "interactive", "training"),
    "inference": ("inference",),
    "batch": ("batch", "experiment", "interactive", "training"),
    "interactive": ("batch", "experiment", "interactive", "training"),
    "experiment": ("batch", "experiment", "interactive"),
}


def blocks(workload: str, n: int = 20, **kw) -> Request:
    return Request(blocks=n, gpu_memory_mib=1000, workload=workload, gpu_peers=GPU_PEERS[workload], **kw)


def mig(workload: str) -> Request:
    return Request(mig_profile="1g.5gb", workload=workload, gpu_peers=GPU_PEERS[workload])


def shared(uuid: str, *held: str, index: int = 0, used: int = 0):
    return replace(gpu(uuid, index=index, mode=GpuMode.SHARED, used_blocks=used, used_memory_mib=used * 100),
                   workloads=held)


def test_blocks_go_past_a_gpu_whose_work_may_not_share_it() -> None:
    # The training GPU is fuller, so packing alone would choose it.
    packer = Packer(cluster(node("n1", shared("t", "training", used=60)), node("n2", shared("free", index=0))))
    placed = packer.place(blocks("inference"))
    assert isinstance(placed, Placement) and placed.replicas[0].slices[0].gpu_uuid == "free"
    together = packer.place(blocks("batch"))
    assert isinstance(together, Placement) and together.replicas[0].slices[0].gpu_uuid == "t", "batch may join"


def test_the_wait_reason_names_the_gpu_and_the_rule() -> None:
    packer = Packer(cluster(node("n1", shared("t", "training", used=10))))
    waits = packer.place(blocks("inference"))
    assert isinstance(waits, NoFit) and not waits.never
    assert waits.reason == "GPU 0 on n1 holds training work; inference may not share it"
    full = Packer(cluster(node("n1", shared("t", "training", used=95))))
    other = full.place(blocks("inference"))
    assert isinstance(other, NoFit) and "may not share" not in other.reason, "no room at all: the room is the reason"


def test_commits_and_releases_keep_what_a_gpu_holds() -> None:
    packer = Packer(cluster(node("n1", shared("s"))))
    first = packer.place(blocks("inference"))
    assert isinstance(first, Placement) and first.replicas[0].workload == "inference"
    packer.commit(first)
    barred = packer.place(blocks("training"))
    assert isinstance(barred, NoFit) and barred.reason == "GPU 0 on n1 holds inference work; training may not share it"
    twin = packer.fork()
    packer.release(first)
    assert isinstance(packer.place(blocks("training")), Placement)
    assert isinstance(twin.place(blocks("training")), NoFit), "a fork keeps its own holdings"


def test_mig_instances_of_one_gpu_share_it() -> None:
    a100 = "a100-40gb"
    taken = replace(gpu("m0", model=a100, mode=GpuMode.MIG,
                        mig_instances=(MigInstance(profile="1g.5gb", start=0, held=True, workloads=("training",)),)),
                    workloads=("training",))
    packer = Packer(cluster(node("n1", taken), node("n2", gpu("m1", model=a100, mode=GpuMode.MIG))))
    placed = packer.place(mig("inference"))
    assert isinstance(placed, Placement) and placed.replicas[0].slices[0].gpu_uuid == "m1"
    alone = Packer(cluster(node("n1", taken)))
    waits = alone.place(mig("experiment"))
    assert isinstance(waits, NoFit) and waits.reason == "GPU 0 on n1 holds training work; experiment may not share it"
    assert isinstance(alone.place(mig("batch")), Placement)


def test_the_node_rule_covers_whole_gpus_and_cpu_only_jobs() -> None:
    busy = replace(node("n1", gpu("g0"), gpu("g1", index=1)), workloads=("training",))
    for request in (Request(gpus=1, workload="inference", node_peers=("inference",)),
                    Request(cpus_milli=1000, workload="inference", node_peers=("inference",))):
        waits = Packer(cluster(busy)).place(request)
        assert isinstance(waits, NoFit) and waits.reason == "node n1 holds training work; inference may not share it"
        assert isinstance(Packer(cluster(busy, node("n2", gpu("g2")))).place(request), Placement)


def test_without_a_workload_nothing_changes() -> None:
    packer = Packer(cluster(node("n1", shared("t", "training", used=10))))
    assert isinstance(packer.place(Request(blocks=20, gpu_memory_mib=1000)), Placement)
    assert breaks(["training"], None) is None and breaks(["training", "batch"], ("batch",)) == "training"
