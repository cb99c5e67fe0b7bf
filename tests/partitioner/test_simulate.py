"""``gpuq simulate`` on the shipped trace: JSON shape and plausible numbers (1 seed)."""

import json

import pytest

from partitioner.simulate import cli, find_trace_dir


@pytest.mark.skipif(find_trace_dir() is None, reason="openb trace not found")
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
