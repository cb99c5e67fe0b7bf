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


def test_gpuq_variant_drops_multitask_term_for_pinned_workloads():
    import numpy as np

    from partitioner.simulate import GPUQ_VARIANT, gpuq_variant

    shapes = {"ngpu": np.array([1, 1, 0]), "models": np.array([-1, -1, -1]), "p": np.array([0.5, 0.3, 0.2])}
    assert gpuq_variant(shapes) == GPUQ_VARIANT
    shapes["models"] = np.array([-1, 0b11, -1])
    assert gpuq_variant(shapes) == 0
    shapes["p"] = np.array([0.5, 0.01, 0.2])
    assert gpuq_variant(shapes) == GPUQ_VARIANT
