"""gpuq's load rule: FGD scoring below MULTI_TASK_FROM of the GPUs allocated, the multi-task term from it."""

from partitioner.kernels.replay import MULTI_TASK_FROM, multi_task_on
from partitioner.place import Packer
from partitioner.policies import POLICY_IDS
from partitioner.types import GpuMode, Request
from tests.support.builders import cluster, gpu, node


def test_rule_boundary():
    assert not multi_task_on(int(MULTI_TASK_FROM * 1000) - 1, 1000)
    assert multi_task_on(int(MULTI_TASK_FROM * 1000), 1000)
    assert not multi_task_on(0, 1000)


def _cluster(used_blocks):
    """Two 4-GPU nodes; n0's first GPU shared with ``used_blocks`` taken, the rest held but GPU-1-0."""
    return cluster(
        node("n0", gpu("GPU-0-0", mode=GpuMode.SHARED, used_blocks=used_blocks, used_memory_mib=100),
             *(gpu(f"GPU-0-{i}", index=i, held=True) for i in range(1, 4))),
        node("n1", *(gpu(f"GPU-1-{i}", index=i, held=i > 0) for i in range(4))),
    )


def test_gpuq_scores_as_fgd_while_the_cluster_has_room():
    demand = [Request(gpus=1), Request(blocks=10, gpu_memory_mib=100)]
    light = Packer(cluster(node("n0", *(gpu(f"GPU-{i}", index=i) for i in range(4)))), demand=demand)
    light.place(Request(gpus=1))
    assert light._frag_policy == POLICY_IDS["fgd"]
    # 6 of 8 GPUs held plus 90 of a shared GPU's 100 blocks: 690 / 800 blocks < 90 %, then 790 / 800 >= 90 %
    below = Packer(_cluster(used_blocks=90), demand=demand)
    below.place(Request(blocks=5, gpu_memory_mib=10))
    assert below._frag_policy == POLICY_IDS["fgd"]
    full = cluster(
        node("n0", gpu("GPU-0-0", mode=GpuMode.SHARED, used_blocks=90, used_memory_mib=100),
             *(gpu(f"GPU-0-{i}", index=i, held=True) for i in range(1, 4))),
        node("n1", *(gpu(f"GPU-1-{i}", index=i, held=True) for i in range(4))),
    )
    above = Packer(full, demand=demand)
    above.place(Request(blocks=5, gpu_memory_mib=10))
    assert above._frag_policy == POLICY_IDS["gpuq"]



def test_replay_ties_fgd_until_the_rule_turns_on():
    """Under the load rule (``GPUQ_VARIANT``; the default on tiny-share and CPU-bound workloads) gpuq places
    every arrival of the shipped trace exactly as fgd until 90 % of the GPUs are allocated."""
    import numpy as np

    from partitioner.simulate import (
        GPUQ_COVERAGE,
        GPUQ_VARIANT,
        find_trace_dir,
        load_trace,
        run_policy,
        target_shapes,
        trace_file,
    )

    d = find_trace_dir()
    assert d is not None
    trace = load_trace(trace_file(d, "openb_node_list_gpu_node.csv"), trace_file(d, "openb_pod_list_default.csv"))
    fgd = run_policy(trace, "fgd", 42)
    gpuq = run_policy(trace, "gpuq", 42, target_shapes(trace, GPUQ_COVERAGE), variant=GPUQ_VARIANT)
    before = np.flatnonzero(fgd["allocated_curve"] >= MULTI_TASK_FROM)[0]  # the arrival that reaches 90 %
    assert before > 5000
    assert np.array_equal(fgd["placed_milli"][: before + 1], gpuq["placed_milli"][: before + 1])
    assert not np.array_equal(fgd["placed_milli"], gpuq["placed_milli"])  # and the rule does turn on
