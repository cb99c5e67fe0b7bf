"""A started server moves its long-lived heap out of the garbage collector's generations.

Modules, numba's compiled kernels and the app live as long as the process; before, every full
collection under load walked them, and the submit storm's p99 was 350 ms beside 110 ms after
(``benchmarks/api_bench.py --submits 600``, SQLite, same run). Checked in a child process: freezing
is process-wide, and the test runner's own heap is none of this test's business.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

CHILD = """
import gc, json, threading
from pathlib import Path
from queue_service.embedded import EmbeddedServer
from queue_service.settings import Settings
import sys
data, port = Path(sys.argv[1]), int(sys.argv[2])
before = gc.get_freeze_count()
server = EmbeddedServer(Settings(data_dir=data, port=port, runtime="process", simulate_gpus="h100-80gb:1")).start()
try:
    for thread in threading.enumerate():
        if thread.name == "gpuq-warmup":
            thread.join(timeout=300)
    print(json.dumps({"before": before, "after": gc.get_freeze_count()}))
finally:
    server.stop()
"""


def test_the_server_freezes_its_startup_heap(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GPUQ_JOB_WORK_DIR": str(tmp_path / "work"), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "data"), str(port)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["before"] == 0
    assert counts["after"] > 10_000, counts  # the imported modules alone are tens of thousands of objects
