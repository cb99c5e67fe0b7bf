"""The live ``Packer`` packs by the replay's rule: same rule per workload, same scores, same placements.

gpuq's rule per workload is one function (``policies.gpuq_rule.choose_variant``) that the replay
(``simulate.gpuq_variant``) and the live ``Packer`` both call; these tests check the live side feeds it
the replay's inputs (target shapes from the demand, the cluster's GPU capacity and CPU) and then places
as the replay kernel does under that rule (node order = the cluster's order, no random tie-break).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partitioner.kernels.replay import VARIANT_LEX, replay
from partitioner.place import Packer
from partitioner.policies import gpuq_rule
from partitioner.simulate import (
    GPUQ_COVERAGE,
    POLICY_IDS,
    Trace,
    fgd_prefix,
    find_trace_dir,
    gpuq_variant,
    load_trace,
    target_shapes,
    task_requests,
    trace_file,
)
from partitioner.types import ClusterState, GpuMode, GpuState, NodeState, Placement

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "partitioner_bench.py"


def test_the_rule_module_numbers_variants_as_the_replay_kernel():
    assert gpuq_rule.VARIANT_LEX == VARIANT_LEX


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("partitioner_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("partitioner_bench", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mixes(bench) -> dict[str, Trace]:
    d = find_trace_dir()
    assert d is not None
    trace = load_trace(trace_file(d, "openb_node_list_gpu_node.csv"), trace_file(d, "openb_pod_list_default.csv"))
    return bench.make_mixes(trace)


@pytest.mark.parametrize(("mix", "rule"), [("default", 3), ("tiny shares", 2), ("CPU-heavy", 2),
                                           ("model-pinned", 0)])
def test_live_packer_chooses_the_replays_rule(bench, mixes, mix, rule):
    """Demand = the mix's tasks on its openb cluster: the live target shapes, FGD's prefix and rule are the replay's.

    The four mixes take each branch of the rule: lexicographic, small shares, CPU-bound, pinned.
    """
    trace = mixes[mix]
    shapes = target_shapes(trace, GPUQ_COVERAGE)
    packer = Packer(bench.openb_cluster(trace), demand=task_requests(trace))
    kind, blocks, _, count, cpu, p = packer._shapes
    assert np.array_equal(p, shapes["p"])  # same shapes in the same order: same frequencies, same cut at 98 %
    assert np.array_equal(cpu, shapes["cpu"])
    assert np.array_equal(np.where(kind == 2, count, np.where(kind == 1, 1, 0)), shapes["ngpu"])
    assert np.array_equal(np.where(kind == 1, blocks * 10, np.where(kind == 2, 1000, 0)), shapes["milli"])
    assert packer._n_fgd == fgd_prefix(trace, shapes)
    assert packer.variant == gpuq_variant(trace, shapes) == rule


# -- placements: the live Packer against the replay kernel on small clusters ------------------------------------

node_st = st.tuples(st.sampled_from([8000, 16000, 48000]), st.sampled_from([65536, 262144]),
                    st.sampled_from([1, 2, 4, 8]))
cpu_task_st = st.tuples(st.sampled_from([1000, 4000]), st.just(1024), st.just(0), st.just(0))
share_task_st = st.tuples(st.sampled_from([0, 1000, 4000]), st.sampled_from([0, 4096]), st.just(1),
                          st.sampled_from([100, 250, 300, 500, 600, 750, 900]))
whole_task_st = st.tuples(st.sampled_from([0, 2000, 8000]), st.sampled_from([0, 4096]), st.sampled_from([1, 2, 4]),
                          st.just(1000))


def _trace(nodes, tasks) -> Trace:
    def col(rows, i):
        return np.array([r[i] for r in rows], dtype=np.int64)

    return Trace(node_cpu=col(nodes, 0), node_mem=col(nodes, 1), node_ngpu=col(nodes, 2),
                 node_model=np.zeros(len(nodes), dtype=np.int64), task_cpu=col(tasks, 0), task_mem=col(tasks, 1),
                 task_ngpu=col(tasks, 2), task_milli=col(tasks, 3),
                 task_models=np.full(len(tasks), -1, dtype=np.int64), model_names=("t4",))


def _cluster(nodes, mode: GpuMode) -> ClusterState:
    return ClusterState(tuple(
        NodeState(f"n{n}", cpu, mem, cpu, mem, gpus=tuple(GpuState(f"g{n}-{j}", j, "t4", 15360, 40, mode=mode)
                                                         for j in range(ngpu)))
        for n, (cpu, mem, ngpu) in enumerate(nodes)))


def _replayed(demand: Trace, arrivals: Trace, variant: int) -> list[tuple[int, int]]:
    """(node, first GPU) per arrival by the replay kernel, gpuq with ``variant``, nodes in index order."""
    shapes = target_shapes(demand, GPUQ_COVERAGE)
    out_node = np.full(arrivals.task_cpu.shape[0], -1, dtype=np.int64)
    out_gpu = out_node.copy()
    replay(arrivals.node_cpu, arrivals.node_mem, arrivals.node_ngpu, arrivals.node_model,
           np.arange(arrivals.node_cpu.shape[0], dtype=np.int64), arrivals.task_cpu, arrivals.task_mem,
           arrivals.task_ngpu, arrivals.task_milli, arrivals.task_models, shapes["cpu"], shapes["milli"],
           shapes["ngpu"], shapes["models"], shapes["p"], POLICY_IDS["gpuq"], 42, gpuq_rule.GPUQ_LEVELS, variant,
           out_node, out_gpu, fgd_prefix(demand, shapes))
    return list(zip(out_node.tolist(), out_gpu.tolist(), strict=True))


def _placed_live(packer: Packer, arrivals: Trace) -> list[tuple[int, int]]:
    """(node, first GPU) per arrival placed and committed one by one by ``packer``; (-1, -1) for a NoFit."""
    gpu_index = {g.uuid: g.index for node in packer.cluster.nodes for g in node.gpus}
    out = []
    for req in task_requests(arrivals):
        got = packer.place(req)
        if not isinstance(got, Placement):
            out.append((-1, -1))
            continue
        packer.commit(got)
        member = got.replicas[0]
        out.append((int(member.node_id[1:]), gpu_index[member.slices[0].gpu_uuid]))
    return out


def _check_same_placements(nodes, demand_tasks, arrival_tasks, mode, variant):
    """Live gpuq (the rule it chose, or ``variant`` forced on it) places every arrival where the replay does."""
    demand = _trace(nodes, demand_tasks)
    arrivals = _trace(nodes, arrival_tasks)
    packer = Packer(_cluster(nodes, mode), demand=task_requests(demand))
    chosen = gpuq_variant(demand, target_shapes(demand, GPUQ_COVERAGE))
    assert packer.variant == chosen
    if variant is not None:
        packer.variant = variant
    assert _placed_live(packer, arrivals) == _replayed(demand, arrivals, packer.variant)


@settings(max_examples=60, deadline=None)
@given(st.lists(node_st, min_size=1, max_size=6), st.lists(share_task_st, min_size=1, max_size=40),
       st.lists(cpu_task_st, max_size=6), st.sampled_from([None, 0, 1, 2, 3]))
def test_live_sharing_tasks_go_where_the_replay_puts_them(nodes, tasks, cpu_tasks, variant):
    """Sharing tasks on shared GPUs (blocks = milli / 10), CPU-only shapes in the demand only (the live
    service places CPU-only requests by its own rule). Every variant, the load rule included: the
    arrivals fill the small cluster past 90 %."""
    _check_same_placements(nodes, tasks + cpu_tasks, tasks, GpuMode.SHARED, variant)


@settings(max_examples=60, deadline=None)
@given(st.lists(node_st, min_size=1, max_size=6), st.lists(whole_task_st, min_size=1, max_size=30),
       st.lists(cpu_task_st, max_size=6), st.sampled_from([None, 0, 1, 2, 3]))
def test_live_whole_gpu_tasks_go_where_the_replay_puts_them(nodes, tasks, cpu_tasks, variant):
    """Whole-GPU tasks on exclusive GPUs, as above."""
    _check_same_placements(nodes, tasks + cpu_tasks, tasks, GpuMode.EXCLUSIVE, variant)


def test_the_lexicographic_rule_places_where_the_load_rule_would_not():
    """The comparison above can fail: here the rules disagree, and the live packer follows the replay under each.

    Two 2-GPU nodes, n1 with half the CPU: under the load rule (FGD below 90 %) the first 600-milli task
    goes to n0, the first node among FGD's equal scores; under the lexicographic rule its second key
    (the multi-task fragment's drop, among FGD's ties) sends it to n1.
    """
    nodes = [(16000, 65536, 2), (8000, 65536, 2)]
    tasks = [(1000, 0, 1, 600), (4000, 0, 1, 600), (4000, 0, 1, 500)]
    demand = _trace(nodes, tasks)
    by_variant = {}
    for variant in (gpuq_rule.VARIANT_SUMMED, VARIANT_LEX):
        packer = Packer(_cluster(nodes, GpuMode.SHARED), demand=task_requests(demand))
        packer.variant = variant
        by_variant[variant] = _placed_live(packer, demand)
        assert by_variant[variant] == _replayed(demand, demand, variant)
    assert by_variant[gpuq_rule.VARIANT_SUMMED] == [(0, 0), (0, 1), (1, 0)]
    assert by_variant[VARIANT_LEX] == [(1, 0), (1, 1), (0, 0)]
