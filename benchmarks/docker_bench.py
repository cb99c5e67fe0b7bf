"""Container launch -> exit latency and launch throughput of DockerRuntime on this host.

Runs ``sh -c true`` in the busybox test image (.ci/docker-setup.sh) through the
real runtime path (create+start with every limit, wait, collect logs,
remove) and prints the median and p95 latency and containers per second.

    .venv/bin/python benchmarks/docker_bench.py [--runs 30] [--parallel 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.messages import LaunchSpec
from workers.runtime.docker import DockerRuntime


def one_run(rt: DockerRuntime, image: str, node: str, n: int, logs: Path) -> float:
    """Launch, wait for exit, collect logs, remove; seconds from launch to exit seen."""
    spec = LaunchSpec(
        job_id=f"bench-{n}", attempt=1, node_name=node, command=["sh", "-c", "true"], image=image,
        cpus=0.5, memory_mib=64,
    )
    out, err = logs / f"{n}.out", logs / f"{n}.err"
    t0 = time.perf_counter()
    handle = rt.launch(spec, stdout_path=out, stderr_path=err)
    status = rt.wait(handle, 60)
    elapsed = time.perf_counter() - t0
    if status is None or status.exit_code != 0:
        raise SystemExit(f"run {n} did not exit cleanly: {status}")
    rt.collect_logs(handle, stdout_path=out, stderr_path=err)
    rt.cleanup(handle)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--parallel", type=int, default=4, help="concurrent launches for the throughput figure")
    parser.add_argument("--image", default="gpuq-test-busybox:latest")
    args = parser.parse_args()

    rt = DockerRuntime()
    node = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        one_run(rt, args.image, node, -1, logs)  # warm-up: image and client caches
        latencies = [one_run(rt, args.image, node, n, logs) for n in range(args.runs)]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(lambda n: one_run(rt, args.image, node, n, logs), range(1000, 1000 + args.runs)))
        wall_s = time.perf_counter() - t0

    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    info = rt.client.info()
    print(f"engine: Docker {info.get('ServerVersion')}, storage {info.get('Driver')}, "
          f"cgroup v{info.get('CgroupVersion')}, {info.get('NCPU')} CPUs")
    print(f"launch->exit latency over {args.runs} sequential runs of `sh -c true`: "
          f"median {statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
    print(f"throughput with {args.parallel} concurrent launches (incl. logs + remove): "
          f"{args.runs / wall_s:.2f} containers/s")


if __name__ == "__main__":
    main()
