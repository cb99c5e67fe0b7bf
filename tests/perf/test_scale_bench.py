"""The thousand-host benchmark runs (at a tiny size): every job started and finished, no 5xx; not its speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.services import require_postgres, require_redis

ROOT = Path(__file__).resolve().parents[2]


def test_scale_bench_smoke() -> None:
    require_postgres()
    require_redis()
    proc = subprocess.run([sys.executable, "benchmarks/scale_bench.py", "--smoke"], cwd=ROOT, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for figure in ("fill to 95% of GPUs", "admitted and started: 16 in", "heartbeats:", "exit -> next start",
                   "server CPU"):
        assert figure in proc.stdout, proc.stdout
    assert "errors seen by agents: 0" in proc.stdout
