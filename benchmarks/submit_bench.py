"""Submit-and-admit throughput through the REST API (prints figures; goal: >= 500 jobs/s on PostgreSQL).

    .venv/bin/python benchmarks/submit_bench.py [--database-url postgresql://postgres@127.0.0.1/gpuq_bench]
        [--jobs 2000]

A server with no local agent (launch commands queue up unconsumed) and 16
registered nodes; CPU-only jobs, so every job is admissible. Throughput =
jobs / (first submit -> last job admitted). Single requests from 4 client
threads, then batches of 200 (POST /v1/jobs/batch). Baseline in the same
run: GET /v1/health from 4 threads (the HTTP floor of this stack).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from queue_service.bootstrap import read_secret
from queue_service.embedded import EmbeddedServer
from queue_service.settings import Settings
from tests.builders import inventory

JOB = {"command": ["true"], "resources": {"gpus": 0}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_admitted(http: httpx.Client, expected: int, timeout_s: float = 600) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queued = http.get("/v1/jobs", params={"state": "queued", "limit": 1}).json()["count"]
        if queued == 0:
            return time.perf_counter()
        time.sleep(0.05)
    raise SystemExit("jobs were not admitted in time")


def run(http: httpx.Client, n: int, *, batch: int | None) -> float:
    start = time.perf_counter()
    if batch:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda _i: http.post("/v1/jobs/batch", json={"jobs": [JOB] * batch}).raise_for_status(),
                          range(n // batch)))
    else:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _i: http.post("/v1/jobs", json=JOB).raise_for_status(), range(n)))
    end = wait_admitted(http, n)
    return n / (end - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), port=free_port(), database_url=args.database_url, local_agent=False,
                            node_lease_s=3600, resend_after_s=3600)  # no agents: no heartbeats, no claims
        server = EmbeddedServer(settings).start()
        try:
            base = f"http://127.0.0.1:{settings.port}"
            admin = read_secret(Path(tmp) / "admin.token")
            agent = read_secret(Path(tmp) / "agent.token")
            http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=120,
                                limits=httpx.Limits(max_connections=8))
            for i in range(16):
                httpx.post(f"{base}/v1/agent/register", headers={"Authorization": f"Bearer {agent}"},
                           json={"inventory": inventory(f"bench-{i:02d}", "h100-80gb:8").to_dict()}).raise_for_status()
            db = "PostgreSQL" if args.database_url else "SQLite"
            health = args.jobs / timed(lambda: ThreadPoolExecutor(4).map(
                lambda _i: http.get("/v1/health").raise_for_status(), range(args.jobs)))
            single = run(http, args.jobs, batch=None)
            batched = run(http, args.jobs * 5, batch=200)
            print(f"submit-and-admit throughput, {db}, 2 cores, server and client on one machine")
            print(f"  single POST /v1/jobs, 4 client threads   {single:7.0f} jobs/s   ({args.jobs} jobs)")
            print(f"  POST /v1/jobs/batch, 200 per request     {batched:7.0f} jobs/s   ({args.jobs * 5} jobs)")
            print(f"  baseline: GET /v1/health, 4 threads      {health:7.0f} requests/s")
            print("  goal: >= 500 jobs/s")
        finally:
            server.stop()


def timed(fn) -> float:
    start = time.perf_counter()
    list(fn())
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
