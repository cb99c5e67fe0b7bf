"""The admission benchmark runs (at a tiny size, in process): both fill levels, the gpuq cycle beside the old
re-carving path and first-fit, the drain after a budget stop; not its speed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_admission_bench_smoke(capsys) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import admission_bench
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    args = argparse.Namespace(nodes=12, pending=150, no_first_fit=False)
    for fill in (0.999, 0.5):
        admission_bench.report(args, fill)
    out = capsys.readouterr().out
    for figure in ("steady state: cluster full: 12 nodes", "burst: cluster 50% full: 12 nodes",
                   "gpuq cycle (partitioner packer)", "baseline: same cycle, old re-carving path",
                   "baseline: same cycle, first-fit"):
        assert figure in out, out
    assert out.count("same admissions as the old re-carving path: yes") == 2, out  # 12 nodes: under the trial bound
