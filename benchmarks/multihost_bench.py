"""Many-hosts path: exit-to-next-start latency through Redis + Docker, and launches per second on one agent.

    .venv/bin/python benchmarks/multihost_bench.py [--jobs 20] [--burst 30] [--postgres URL] [--redis URL]

Runs a real ``gpuq serve`` (PostgreSQL, Redis broker, no local agent) and one
``gpuq agent --runtime docker`` with one simulated GPU, as separate processes
(the same harness as ``tests/faults``).

* exit-to-next-start: ``--jobs`` whole-GPU jobs (``true`` in the busybox test
  image) queued at once on the one GPU; for each consecutive pair, the next
  attempt's start claim minus the release of the previous one's allocation
  (both database times): exit detection, the exit report, the admission
  cycle, the launch through Redis, the agent's claim. Goal: median < 1 s.
* launches per second: ``--burst`` CPU-only jobs submitted back to back; start
  claims per second from the first to the last, and jobs per second from the
  first submit to the last exit (container made, run, reported, removed).
* baseline in the same run: the same container made back to back with the
  Docker SDK alone (create, start, wait, remove: the floor for a container
  per job), and its rate.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/10"  # flushed: not a database the tests use (tests/services.py: 15 down)
IMAGE = "gpuq-test-busybox:latest"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def raw_docker(client, n: int) -> tuple[list[float], float]:
    """Back-to-back containers with the SDK alone: per-container seconds and containers per second."""
    times = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        c = client.containers.create(IMAGE, ["true"], network_mode="none", labels={"gpuq.bench": "raw"},
                                     cap_drop=["ALL"], security_opt=["no-new-privileges"], init=True,
                                     mem_limit="64m", pids_limit=4096)
        c.start()
        c.wait()
        c.remove(force=True)
        times.append(time.perf_counter() - t)
    return times, n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--burst", type=int, default=30)
    parser.add_argument("--postgres", default=POSTGRES)
    parser.add_argument("--redis", default=REDIS)
    args = parser.parse_args()

    import docker
    import redis

    from tests.conftest import _postgres_database
    from tests.faults.cluster import Cluster

    client = docker.from_env(timeout=60)
    redis.Redis.from_url(args.redis).flushdb()
    db = _postgres_database()
    url = next(db)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), database_url=url, redis_url=args.redis, docker_client=client, image=IMAGE)
        try:
            cluster.start_agent("a", "h100-80gb:1")
            # warm-up: one job through the whole path
            cluster.wait_final([cluster.submit(["true"])], 60)

            ids = [cluster.submit(["true"]) for _ in range(args.jobs)]
            cluster.wait_final(ids, 30 + 5 * args.jobs)
            engine = create_engine(url)
            with engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT j.id, a.started_at, (SELECT max(released_at) FROM allocations l WHERE l.job_id = j.id) "
                    "AS released FROM jobs j JOIN attempts a ON a.job_id = j.id AND a.number = j.attempt "
                    "WHERE j.id = ANY(:ids) ORDER BY a.started_at"), {"ids": ids}).all()
            gaps = [(b.started_at - a.released).total_seconds() for a, b in itertools.pairwise(rows)]

            t_submit = time.perf_counter()
            burst = [cluster.submit(["true"], resources={"gpus": 0}) for _ in range(args.burst)]
            t_submitted = time.perf_counter() - t_submit
            cluster.wait_final(burst, 60 + 2 * args.burst)
            t_done = time.perf_counter() - t_submit
            with engine.connect() as conn:
                first, last = conn.execute(text(
                    "SELECT min(started_at), max(started_at) FROM attempts WHERE job_id = ANY(:ids)"),
                    {"ids": burst}).one()
            engine.dispose()
        finally:
            cluster.close()
            db.close()
            redis.Redis.from_url(args.redis).flushdb()

    raw, raw_rate = raw_docker(client, max(10, args.jobs))
    claim_rate = (args.burst - 1) / max(1e-9, (last - first).total_seconds())
    print(f"multi-host (PostgreSQL + Redis + 1 agent, Docker runtime, {args.jobs} jobs on one GPU)")
    print(f"  exit-to-next-start: median {statistics.median(gaps) * 1000:.0f} ms, p95 {pct(gaps, 0.95) * 1000:.0f} ms, "
          f"max {max(gaps) * 1000:.0f} ms")
    print(f"  one agent, {args.burst} CPU jobs submitted back to back (in {t_submitted:.1f} s): "
          f"{claim_rate:.1f} starts/s (first to last start claim), {args.burst / t_done:.1f} jobs/s "
          f"end to end (first submit to last exit)")
    print("baseline: the same container back to back with the Docker SDK alone")
    print(f"  per container (create+start+wait+remove): median {statistics.median(raw) * 1000:.0f} ms, "
          f"p95 {pct(raw, 0.95) * 1000:.0f} ms; {raw_rate:.1f} containers/s")


if __name__ == "__main__":
    main()
