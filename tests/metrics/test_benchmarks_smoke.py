"""The usage and /metrics benchmarks run at smoke size (that they work and agree, not how fast)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_usage_bench_smoke(capsys, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when run as a script: its folder's helpers import
    figures = _load("usage_bench").main(["--intervals", "3000"])  # it checks rollups == reference itself
    assert figures["rollups_s"] > 0 and "one project, one month" in capsys.readouterr().out


def test_usage_bench_baseline_commit(capsys, monkeypatch) -> None:
    """``--baseline HEAD`` times that commit's reports.py on the same ledger (and checks it agrees)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    figures = _load("usage_bench").main(["--intervals", "2000", "--baseline", "HEAD"])
    assert figures["baseline_ragged_rollups_s"] > 0 and figures["baseline_totals_s"] > 0
    assert "baseline HEAD" in capsys.readouterr().out


def test_metrics_bench_smoke(capsys) -> None:
    figures = _load("metrics_bench").main(["--jobs", "500"])
    assert figures["aggregates"] > 0 and "/metrics collect" in capsys.readouterr().out
