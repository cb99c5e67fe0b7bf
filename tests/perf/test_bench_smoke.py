"""The benchmark scripts of this suite run at smoke size (``--smoke``): they work; their speed is not tested."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_api_bench_smoke() -> None:
    out = subprocess.run([sys.executable, "benchmarks/api_bench.py", "--smoke"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "GET /v1/health" in out.stdout and "POST /v1/jobs" in out.stdout and "idle CPU" in out.stdout
    assert "5xx 0" in out.stdout and "running jobs stopped 0" in out.stdout, out.stdout


def test_cluster_read_bench_smoke() -> None:
    """The cluster read beside a baseline commit's (HEAD here): both read the same fleet, and agree."""
    out = subprocess.run([sys.executable, "benchmarks/cluster_read_bench.py", "--smoke", "--baseline", "HEAD"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "20 nodes x 8 GPUs, 100 live allocations" in out.stdout, out.stdout
    assert out.stdout.count("cycle read") == 2 and "both reads agree: yes" in out.stdout, out.stdout
