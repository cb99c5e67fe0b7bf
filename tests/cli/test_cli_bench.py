"""``benchmarks/cli_bench.py --smoke``: a real ``gpuq serve``, ``gpuq jobs`` timed beside a baseline worktree.

It works and prints both figures; their speed is not tested (the benchmark says whether the goal is met).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_cli_bench_smoke() -> None:
    out = subprocess.run([sys.executable, "benchmarks/cli_bench.py", "--smoke"], cwd=REPO, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"this tree +median \d+\.\d+ s +p90 \d+\.\d+ s", out.stdout), out.stdout
    assert re.search(r"baseline [0-9a-f]+ +median \d+\.\d+ s +p90", out.stdout), out.stdout
    assert "speed-up" in out.stdout
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=REPO, capture_output=True, text=True).stdout
    assert "gpuq-cli-bench-" not in worktrees  # the baseline's worktree is removed
