"""Embedded default: exit-to-next-start latency and submit throughput (prints figures).

    .venv/bin/python benchmarks/embedded_bench.py [--jobs 30] [--submits 300] [--database-url URL]

Exit-to-next-start: one simulated GPU, N whole-GPU jobs queued at once; each
prints a timestamp when it starts and one when it ends. The latency is job
i+1's first timestamp minus job i's last: process exit detection, the exit
report, the admission cycle, dispatch, the start claim and process start-up.
Baseline in the same process: the same command spawned back to back by a
plain loop (the floor no scheduler can beat).

Submit throughput: POST /v1/jobs sequentially and from 4 threads; baseline:
GET /v1/health over the same connection (the HTTP floor).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from queue_service.embedded import EmbeddedServer
from queue_service.settings import Settings

STAMP = "date +%s.%N; sleep 0.05; date +%s.%N"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def baseline_spawn(n: int) -> list[float]:
    gaps, last_end = [], None
    for _ in range(n):
        out = subprocess.run(["sh", "-c", STAMP], capture_output=True, text=True).stdout.split()
        start, end = float(out[0]), float(out[1])
        if last_end is not None:
            gaps.append(start - last_end)
        last_end = end
    return gaps


def exit_to_start(http: httpx.Client, n: int) -> list[float]:
    ids = [http.post("/v1/jobs", json={"name": f"lat-{i}", "command": ["sh", "-c", STAMP],
                                       "resources": {"gpus": 1}}).json()["id"] for i in range(n)]
    deadline = time.monotonic() + 60 + n
    while time.monotonic() < deadline:
        states = [http.get(f"/v1/jobs/{j}").json()["state"] for j in ids[-1:]]
        if states[0] in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    stamps = []
    for job_id in ids:
        job = http.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "succeeded", job
        out = http.get(f"/v1/jobs/{job_id}/logs").json()["stdout"].split()
        stamps.append((float(out[0]), float(out[1])))
    stamps.sort()
    return [stamps[i + 1][0] - stamps[i][1] for i in range(len(stamps) - 1)]


def throughput(http: httpx.Client, n: int, threads: int, path: str, body: dict | None) -> float:
    def one(_i: int) -> None:
        r = http.post(path, json=body) if body is not None else http.get(path)
        assert r.status_code < 300, r.text

    start = time.perf_counter()
    if threads == 1:
        for i in range(n):
            one(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(n)))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--submits", type=int, default=300)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), port=free_port(), simulate_gpus="h100-80gb:1",
                            database_url=args.database_url, admission_interval_s=5.0)
        server = EmbeddedServer(settings).start()
        try:
            token = (Path(tmp) / "admin.token").read_text().strip()
            http = httpx.Client(base_url=f"http://127.0.0.1:{settings.port}",
                                headers={"Authorization": f"Bearer {token}"}, timeout=60)
            db = "PostgreSQL" if args.database_url else "SQLite"
            gaps = exit_to_start(http, args.jobs)
            base = baseline_spawn(args.jobs)
            print(f"exit -> next start, embedded default ({db}, in-memory broker, process runtime), "
                  f"{len(gaps)} hand-overs")
            print(f"  {'':28s} {'median ms':>10s} {'p95 ms':>10s} {'max ms':>10s}")
            for name, values in (("gpuq", gaps), ("baseline: back-to-back spawn", base)):
                ms = [v * 1000 for v in values]
                print(f"  {name:28s} {statistics.median(ms):10.1f} {pct(ms, 0.95):10.1f} {max(ms):10.1f}")
            print("  goal: gpuq median < 200 ms")
            # Make the submits queue behind a GPU-holding job so admission work stays small and steady.
            http.post("/v1/jobs", json={"command": ["sleep", "600"], "resources": {"gpus": 1}})
            body = {"command": ["true"], "resources": {"gpus": 1}}
            print(f"submit throughput ({args.submits} requests)")
            for threads in (1, 4):
                jobs_s = throughput(http, args.submits, threads, "/v1/jobs", body)
                health_s = throughput(http, args.submits, threads, "/v1/health", None)
                print(f"  {threads} client thread(s): POST /v1/jobs {jobs_s:7.0f}/s   "
                      f"baseline GET /v1/health {health_s:7.0f}/s")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
