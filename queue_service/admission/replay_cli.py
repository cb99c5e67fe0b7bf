"""``gpuq simulate --mode queue``: the openb trace through the whole scheduler, in simulated time.

Each task arrives at its ``creation_time`` (divided by ``--time-scale`` to load the cluster:
the trace offers about 0.2 % of its cluster's GPUs on average) and runs for ``deletion_time -
creation_time`` once admitted, its duration also being its time limit. The schedulers compared
in one run: strict FIFO with first-fit and with best-fit (no reservation, no backfill: what a
team without a scheduler does), and the real admission cycle (order, reservation, backfill,
fair share when ``--fair-share``) with fgd and with gpuq. The replay is
:func:`queue_service.admission.replay.replay_queue`, the service's pure admission code.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from partitioner.place import Packer
from partitioner.repartition import propose
from partitioner.simulate import find_trace_dir, open_csv, trace_file
from partitioner.types import ClusterState, GpuMode, GpuState, NodeState, Request
from queue_service.admission.packer import PackerFactory
from queue_service.admission.replay import QueuedResult, TraceJob, replay_queue

SCHEDULERS: dict[str, tuple[str, bool]] = {  # name -> (packer policy, strict FIFO)
    "fifo+first-fit": ("first-fit", True),
    "fifo+best-fit": ("best-fit", True),
    "cycle+fgd": ("fgd", False),
    "cycle+gpuq": ("gpuq", False),
}


def load_queue_trace(nodes_csv: Path, tasks_csv: Path, *, limit: int | None = None, time_scale: float = 1.0,
                     projects: int = 4) -> tuple[ClusterState, list[TraceJob]]:
    """The openb cluster (GPUs alternate exclusive / shared, as the partitioner bench does) and its tasks."""
    nodes = []
    with open_csv(nodes_csv) as fh:
        for n, row in enumerate(csv.DictReader(fh)):
            gpus = tuple(GpuState(f"GPU-{n}-{j}", j, "t4", 15360, 40,
                                  mode=GpuMode.SHARED if j % 2 else GpuMode.EXCLUSIVE) for j in range(int(row["gpu"])))
            cpu, mem = int(row["cpu_milli"]), int(row["memory_mib"])
            nodes.append(NodeState(f"node-{n}", cpu, mem, cpu, mem, gpus=gpus))
    jobs = []
    with open_csv(tasks_csv) as fh:
        for k, row in enumerate(csv.DictReader(fh)):
            if limit is not None and k >= limit:
                break
            ngpu, milli = int(row["num_gpu"]), int(row["gpu_milli"])
            cpu, mem = int(row["cpu_milli"]), int(row["memory_mib"])
            if ngpu == 0:
                req = Request(cpus_milli=cpu, memory_mib=mem)
            elif ngpu == 1 and milli < 1000:
                req = Request(blocks=max(1, milli // 10), cpus_milli=cpu, memory_mib=mem)
            else:
                req = Request(gpus=ngpu, cpus_milli=cpu, memory_mib=mem)
            start, end = float(row["creation_time"]), float(row["deletion_time"])
            jobs.append(TraceJob(row["name"], req, start / time_scale, max(1.0, end - start),
                                 project=f"p{k % projects}"))
    return ClusterState(tuple(nodes)), jobs


def run_schedulers(cluster: ClusterState, jobs: list[TraceJob], names: list[str],
                   fair_share_half_life_s: float | None) -> dict[str, tuple[QueuedResult, float]]:
    """Each scheduler over the same jobs: its result and wall seconds."""
    out = {}
    for name in names:
        policy, fifo = SCHEDULERS[name]

        def factory(c: ClusterState, policy: str = policy) -> Packer:
            return Packer(c, policy=policy)

        made: PackerFactory = factory
        started = time.perf_counter()
        result = replay_queue(cluster, jobs, made, strict_fifo=fifo, repartition=propose,
                              fair_share_half_life_s=None if fifo else fair_share_half_life_s)
        out[name] = (result, time.perf_counter() - started)
    return out


def _plot(results: dict[str, tuple[QueuedResult, float]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (result, _) in results.items():
        if result.timeline:
            xs = [t / 3600 for t, _ in result.timeline]
            ax.step(xs, [a * 100 for _, a in result.timeline], where="post", lw=0.9,
                    label=f"{name} (mean {result.allocation_ratio * 100:.1f} %)")
    ax.set_xlabel("simulated time (h)")
    ax.set_ylabel("GPU allocation ratio (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cli(argv: list[str]) -> int:
    """Parse ``argv`` (after ``--mode queue``), replay, print the table; 0 on success, 2 on bad input."""
    parser = argparse.ArgumentParser(prog="gpuq simulate --mode queue",
                                     description="Replay the openb trace in simulated time through the scheduler.")
    parser.add_argument("--nodes", help="node list CSV or .csv.gz (default: the shipped trace)")
    parser.add_argument("--tasks", help="task list CSV or .csv.gz (default: the shipped trace)")
    parser.add_argument("--schedulers", default=",".join(SCHEDULERS), help=f"comma-separated: {', '.join(SCHEDULERS)}")
    parser.add_argument("--limit", type=int, default=None, help="only the first N tasks")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="divide arrival times by this (durations unchanged) to load the cluster")
    parser.add_argument("--fair-share", type=float, default=None, metavar="HALF_LIFE_S",
                        help="fair share on, with this half-life (tasks are spread over 4 projects)")
    parser.add_argument("--plot", metavar="PNG", help="write the GPU allocation ratio over time")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.schedulers.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCHEDULERS]
    if unknown or args.time_scale <= 0:
        print(f"unknown schedulers {unknown}; choose from {', '.join(SCHEDULERS)}" if unknown
              else "--time-scale must be > 0", file=sys.stderr)
        return 2
    trace_dir = find_trace_dir()
    nodes = Path(args.nodes) if args.nodes else (trace_file(trace_dir, "openb_node_list_gpu_node.csv")
                                                 if trace_dir else None)
    tasks = Path(args.tasks) if args.tasks else (trace_file(trace_dir, "openb_pod_list_default.csv")
                                                 if trace_dir else None)
    if nodes is None or tasks is None or not nodes.is_file() or not tasks.is_file():
        print("trace not found: pass --nodes and --tasks or set GPUQ_TRACE_DIR", file=sys.stderr)
        return 2
    cluster, jobs = load_queue_trace(nodes, tasks, limit=args.limit, time_scale=args.time_scale)
    results = run_schedulers(cluster, jobs, names, args.fair_share)
    if args.plot:
        _plot(results, args.plot, f"openb queued replay, {len(jobs)} tasks, arrivals / {args.time_scale:g}")
    rows = {name: {"mean_wait_s": r.mean_wait_s, "p50_wait_s": r.percentile(0.5), "p95_wait_s": r.percentile(0.95),
                   "allocation_ratio": r.allocation_ratio, "makespan_s": r.makespan_s,
                   "never_started": r.never_started, "cycles": r.cycles, "wall_s": wall}
            for name, (r, wall) in results.items()}
    if args.json:
        print(json.dumps({"tasks": len(jobs), "time_scale": args.time_scale, "fair_share": args.fair_share,
                          "schedulers": rows}, indent=2))
        return 0
    print(f"queued replay: {len(jobs)} openb tasks on {len(cluster.nodes)} nodes, arrivals / {args.time_scale:g}, "
          f"fair share {'half-life ' + format(args.fair_share, 'g') + ' s' if args.fair_share else 'off'}")
    print("| scheduler | mean wait s | p50 | p95 | GPU alloc | makespan s | never started | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['mean_wait_s']:.0f} | {row['p50_wait_s']:.0f} | {row['p95_wait_s']:.0f} | "
              f"{row['allocation_ratio'] * 100:.2f} % | {row['makespan_s']:.0f} | {row['never_started']} | "
              f"{row['wall_s']:.1f} |")
    return 0
