"""``gpuq simulate`` on the shipped trace: JSON shape and plausible numbers (1 seed)."""

import json

from partitioner.simulate import SHIPPED_TRACE_DIR, cli, find_trace_dir, load_trace, trace_file


def test_the_trace_ships_with_the_package(monkeypatch, tmp_path):
    """A clone has the trace (no shared/ needed): find_trace_dir() finds the gzipped copy and it loads whole."""
    monkeypatch.delenv("GPUQ_TRACE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_trace_dir() == SHIPPED_TRACE_DIR
    nodes = trace_file(SHIPPED_TRACE_DIR, "openb_node_list_gpu_node.csv")
    tasks = trace_file(SHIPPED_TRACE_DIR, "openb_pod_list_default.csv")
    assert nodes.suffix == ".gz" and tasks.suffix == ".gz"
    trace = load_trace(nodes, tasks)
    assert trace.node_cpu.shape[0] == 1213 and int(trace.node_ngpu.sum()) == 6212 and trace.task_cpu.shape[0] == 8152
    assert "CC BY 4.0" in (SHIPPED_TRACE_DIR / "README.md").read_text()


def test_simulate_json(capsys, tmp_path):
    png = tmp_path / "p.png"
    assert cli(["--seeds", "1", "--policies", "best-fit,fgd,gpuq", "--json", "--plot", str(png)]) == 0
    data = json.loads(capsys.readouterr().out)
    pol = data["policies"]
    assert set(pol) == {"best-fit", "fgd", "gpuq"}
    for res in pol.values():
        assert {"0.8", "0.9", "0.95", "1.0", "1.1", "1.2"} <= set(res["allocation_ratio"])
        assert set(res["failed_by_kind"]) == {"cpu-only", "sharing", "one-gpu", "multi-gpu"}
        assert res["seconds"] > 0
    assert 0.85 < pol["best-fit"]["allocation_ratio"]["1.0"] < 1.0
    assert abs(pol["fgd"]["allocation_ratio"]["1.0"] - 0.9523) < 0.01
    assert pol["gpuq"]["allocation_ratio"]["1.0"] >= pol["fgd"]["allocation_ratio"]["1.0"]
    assert png.stat().st_size > 1000


def test_bad_arguments():
    assert cli(["--policies", "nope"]) == 2


def _shapes(cpu, milli, ngpu, models, p):
    import numpy as np

    return {"cpu": np.array(cpu), "milli": np.array(milli), "ngpu": np.array(ngpu), "models": np.array(models),
            "p": np.array(p)}


def test_pinned_workload_drops_multitask_term():
    from partitioner.simulate import pinned_workload

    shapes = _shapes([1000] * 3, [500, 1000, 0], [1, 1, 0], [-1, -1, -1], [0.5, 0.3, 0.2])
    assert not pinned_workload(shapes)
    shapes["models"][1] = 0b11
    assert pinned_workload(shapes)
    shapes["p"][1] = 0.01
    assert not pinned_workload(shapes)


def test_sliver_heavy_counts_sharing_tasks_over_half_a_gpu():
    from partitioner.simulate import GPUQ_LEX_MIN_HALF, sliver_heavy

    # sharing 810 (p 0.2) and 250 (p 0.6): 25 % of the sharing frequency is over half a GPU
    shapes = _shapes([1000] * 3, [810, 250, 1000], [1, 1, 1], [-1] * 3, [0.2, 0.6, 0.2])
    assert GPUQ_LEX_MIN_HALF == 0.25 and sliver_heavy(shapes)
    shapes["p"][0] = 0.19
    assert not sliver_heavy(shapes)
    assert not sliver_heavy(_shapes([1000], [1000], [1], [-1], [1.0]))  # no sharing shapes at all


def test_cpu_bound_compares_cpu_to_fill_every_gpu_with_the_cluster_cpu():
    import numpy as np

    from partitioner.simulate import Trace, cpu_bound

    def cluster(cpu_milli):
        one = np.array([0], dtype=np.int64)
        return Trace(node_cpu=np.array([cpu_milli]), node_mem=one, node_ngpu=np.array([4]), node_model=one,
                     task_cpu=one, task_mem=one, task_ngpu=one, task_milli=one, task_models=one, model_names=("m",))

    # a 1-GPU shape of 8 cores and a CPU-only shape of 8 cores, equally frequent: 16 cores per GPU of demand
    shapes = _shapes([8000, 8000], [1000, 0], [1, 0], [-1, -1], [0.5, 0.5])
    assert not cpu_bound(cluster(64001), shapes)  # 4 GPUs x 16 cores = 64 cores needed
    assert cpu_bound(cluster(64000), shapes)
    assert cpu_bound(cluster(64000), _shapes([8000], [0], [0], [-1], [1.0]))  # CPU-only workload


def test_gpuq_variant_prefers_the_lexicographic_rule_where_it_pays():
    from partitioner.simulate import GPUQ_LEX, GPUQ_VARIANT, gpuq_variant, target_shapes

    d = find_trace_dir()
    assert d is not None
    trace = load_trace(trace_file(d, "openb_node_list_gpu_node.csv"), trace_file(d, "openb_pod_list_default.csv"))
    shapes = target_shapes(trace, 0.98)
    assert gpuq_variant(trace, shapes) == GPUQ_LEX
    assert gpuq_variant(trace, target_shapes(trace, 0.90)) == GPUQ_VARIANT  # FGD's 95 % is no prefix of it
    pinned = {**shapes, "models": shapes["models"].copy()}
    pinned["models"][shapes["ngpu"] > 0] = 0b1
    assert gpuq_variant(trace, pinned) == 0
