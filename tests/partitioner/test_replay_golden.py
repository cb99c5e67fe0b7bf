"""The replay kernel's placements on seeded full runs, pinned by digest.

The digests were recorded with the kernel before the speed work of session 4 (commit dc1c47a:
nodes walked through ``node_order``, the score memo indexed [node, key], the filter counting free
GPUs per node). The faster kernel must place every arrival of these runs on the same node and GPU;
a change of policy that moves placements on purpose re-records them (and says so in its commit).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from partitioner.kernels.replay import replay
from partitioner.simulate import (
    GPUQ_COVERAGE,
    GPUQ_LEVELS,
    POLICY_IDS,
    Trace,
    arrival_order,
    fgd_prefix,
    find_trace_dir,
    gpuq_variant,
    load_trace,
    target_shapes,
    trace_file,
)

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "partitioner_bench.py"

GOLDEN = {
    ("default", "random"): "01c4dca722ea69d0",
    ("default", "best-fit"): "8f464c31e7a9e3fe",
    ("default", "fgd"): "98beb8962e9855bc",
    ("default", "gpuq"): "ddd4431ed0a1cf4a",
    ("half multi-GPU", "fgd"): "f069e51aa3add54d",
    ("half multi-GPU", "gpuq"): "9536fa6a69905984",
    ("tiny shares", "gpuq"): "4b9329cd2c5397c1",
    ("MIG A100/H100", "fgd"): "4bb4171c124da435",
    ("MIG A100/H100", "gpuq"): "c64db876ae3dd6ec",
}


@pytest.fixture(scope="module")
def mixes() -> dict[str, Trace]:
    d = find_trace_dir()
    assert d is not None
    trace = load_trace(trace_file(d, "openb_node_list_gpu_node.csv"), trace_file(d, "openb_pod_list_default.csv"))
    spec = importlib.util.spec_from_file_location("partitioner_bench", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("partitioner_bench", bench)
    spec.loader.exec_module(bench)
    return bench.make_mixes(trace)


def placements_digest(trace: Trace, policy: str, seed: int) -> str:
    """sha256 (first 16 hex digits) of every arrival's node and GPU, as ``simulate.run_policy`` replays it."""
    shapes = target_shapes(trace, GPUQ_COVERAGE if policy == "gpuq" else 0.95)
    n_fgd = fgd_prefix(trace, shapes) if policy == "gpuq" else -1
    tasks, node_order = arrival_order(trace, seed)
    out_node = np.full(tasks.shape[0], -1, dtype=np.int64)
    out_gpu = out_node.copy()
    replay(trace.node_cpu, trace.node_mem, trace.node_ngpu, trace.node_model, node_order,
           trace.task_cpu[tasks], trace.task_mem[tasks], trace.task_ngpu[tasks], trace.task_milli[tasks],
           trace.task_models[tasks], shapes["cpu"], shapes["milli"], shapes["ngpu"], shapes["models"], shapes["p"],
           POLICY_IDS[policy], seed, GPUQ_LEVELS, gpuq_variant(shapes), out_node, out_gpu, n_fgd)
    return hashlib.sha256(out_node.tobytes() + out_gpu.tobytes()).hexdigest()[:16]


@pytest.mark.parametrize(("mix", "policy"), list(GOLDEN))
def test_seeded_replay_places_as_recorded(mixes, mix, policy):
    assert placements_digest(mixes[mix], policy, 42) == GOLDEN[mix, policy]
