"""One admission cycle at scale (prints figures; goal: <= 1 s for 10,000 pending on 1,000 nodes x 8 GPUs).

    .venv/bin/python benchmarks/admission_bench.py [--nodes 1000] [--pending 10000] [--fill 0.5] [--no-first-fit]
    .venv/bin/python benchmarks/admission_bench.py --smoke    # 12 nodes, 150 pending: it runs

The cluster is filled to ``--fill`` by running jobs with time limits, then a
mixed queue (1 and 2 whole GPUs, 8-GPU gangs of one node, block jobs; three
priorities; most with time limits) is decided in one cycle: order, fit,
reservation for the blocked head, backfill. Baselines in the same process:
the same cycle on the old re-carving path (``tests/support/rebuild_recarve.py``: a new packer per
re-carving and per trial, every idle GPU of every node tried), the same cycle with the first-fit packer
of ``tests/support/first_fit.py`` (slow when half empty; ``--no-first-fit`` skips it), and the bare ordering.
A cycle that stops at its re-carving budget is followed by cycles until the queue settles (both paths).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from partitioner.place import Packer, warmup
from partitioner.repartition import propose
from partitioner.types import ClusterState, GpuMode, GpuState, NodeState, Placement, Request
from queue_service.admission.cycle import run_cycle
from queue_service.admission.ordering import ordered
from queue_service.admission.snapshot import PendingJob, RunningJob, Snapshot
from queue_service.admission.state import apply_placements
from queue_service.admission.units import request_equivalents
from tests.support.first_fit import FirstFitPacker
from tests.support.rebuild_recarve import RebuiltPacker, rebuild_propose

NOW = datetime(2026, 11, 24, 12, 0, 0)
T = TypeVar("T")


def build(nodes: int, pending: int, fill: float, seed: int = 7) -> Snapshot:
    rng = random.Random(seed)
    node_states = []
    for n in range(nodes):
        gpus = tuple(GpuState(uuid=f"n{n}-g{i}", index=i, model="h100-80gb", memory_mib=81559, sm_count=132,
                              mode=GpuMode.SHARED if i == 7 else GpuMode.EXCLUSIVE) for i in range(8))
        node_states.append(NodeState(f"n{n:04d}", 128000, 1024 * 1024, 128000, 1024 * 1024, gpus))
    cluster = ClusterState(tuple(node_states))
    running = []
    packer = Packer(cluster)
    fillers = [Request(gpus=1, cpus_milli=1000, memory_mib=4096)] * 7 + [Request(blocks=50, gpu_memory_mib=40000)] * 2
    for i in range(int(nodes * len(fillers) * fill)):
        req = fillers[i % len(fillers)]
        got = packer.place(req)
        if not isinstance(got, Placement):
            continue
        packer.commit(got)
        running.append(RunningJob(job_id=f"r{i}", project=f"p{i % 5}", placement=got, effective_priority=500,
                                  preemptible=False, started_at=NOW - timedelta(minutes=5),
                                  expected_end=NOW + timedelta(seconds=rng.randint(60, 36000)),
                                  gpu_equivalents=request_equivalents(req)))
    shapes = [Request(gpus=1), Request(gpus=2), Request(gpus=8), Request(blocks=25, gpu_memory_mib=10000),
              Request(blocks=50, gpu_memory_mib=20000)]
    jobs = []
    for j in range(pending):
        req = rng.choices(shapes, weights=[50, 15, 5, 20, 10])[0]
        jobs.append(PendingJob(job_id=f"q{j:05d}", project=f"p{j % 5}", request=req,
                               priority=rng.choice([100, 500, 500, 1000]),
                               submitted_at=NOW - timedelta(seconds=pending - j),
                               time_limit_s=rng.choice([None, 600, 3600, 86400]), fair_share=(j % 5) * 1.0))
    return Snapshot(cluster=apply_placements(cluster, (r.placement for r in running)), pending=tuple(jobs), now=NOW,
                    running=tuple(running))


def drain(snapshot: Snapshot, packer_factory=Packer, repartition=propose) -> tuple[int, float, int]:
    """Run cycles, applying each one's decisions, until a cycle completes."""
    from dataclasses import replace as dc_replace

    from queue_service.admission.state import apply_changes

    cycles, total, admitted = 0, 0.0, 0
    while True:
        start = time.perf_counter()
        result = run_cycle(snapshot, packer_factory, repartition)
        total += time.perf_counter() - start
        cycles += 1
        admitted += len(result.admitted)
        done = {a.job_id for a in result.admitted}
        new_running = [RunningJob(job_id=a.job_id, project="p", placement=a.placement, effective_priority=500,
                                  preemptible=False, started_at=NOW, expected_end=None) for a in result.admitted]
        cluster = apply_placements(apply_changes(snapshot.cluster, result.layout_changes),
                                   (a.placement for a in result.admitted))
        pending = tuple(j for j in snapshot.pending if j.job_id not in done)
        snapshot = dc_replace(snapshot, cluster=cluster, pending=pending,
                              running=snapshot.running + tuple(new_running))
        if not result.incomplete or cycles > 500:
            return cycles, total, admitted


def timed(fn: Callable[[], T], repeat: int = 3) -> tuple[float, T]:
    """The best of ``repeat`` wall times of ``fn()``, and its (last) result."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pending", type=int, default=10000)
    parser.add_argument("--fill", type=float, default=None, help="one fill level (default: 0.999 and 0.5)")
    parser.add_argument("--no-first-fit", action="store_true", help="skip the first-fit baseline")
    parser.add_argument("--queued", type=int, default=0, metavar="N",
                        help="instead: queued replay of the first N openb tasks (0: off) through the real cycle")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run (12 nodes, 150 pending): that it runs, not its speed")
    args = parser.parse_args()
    if args.smoke:
        args.nodes, args.pending = 12, 150
    warmup()
    if args.queued:
        queued_replay(args.queued)
        return
    for fill in [args.fill] if args.fill is not None else [0.999, 0.5]:
        report(args, fill)


def openb_jobs(limit: int) -> tuple[ClusterState, list]:
    """The openb cluster (whole and shared GPUs alternating) and its first ``limit`` tasks with trace times:
    the same loader ``gpuq simulate --mode queue`` uses (it reads the gzipped trace a clone ships)."""
    from partitioner.simulate import find_trace_dir, trace_file
    from queue_service.admission.replay_cli import load_queue_trace

    d = find_trace_dir()
    if d is None:
        raise SystemExit("no openb trace (set GPUQ_TRACE_DIR)")
    return load_queue_trace(trace_file(d, "openb_node_list_gpu_node.csv"),
                            trace_file(d, "openb_pod_list_default.csv"), limit=limit)


def queued_replay(limit: int) -> None:
    from queue_service.admission.replay import replay_queue

    cluster, jobs = openb_jobs(limit)
    print(f"queued replay: {len(jobs)} openb tasks on {len(cluster.nodes)} nodes, simulated time")
    print(f"  {'scheduler':34} {'mean wait s':>12} {'p50':>9} {'p95':>9} {'alloc':>7} {'makespan s':>11} "
          f"{'never':>6} {'wall s':>7}")
    runs = {
        "FIFO + first-fit": (FirstFitPacker, True),
        "FIFO + best-fit": (lambda c: Packer(c, policy="best-fit"), True),
        "cycle + fgd (re-carving idle GPUs)": (lambda c: Packer(c, policy="fgd"), False),
        "cycle + gpuq (re-carving idle GPUs)": (Packer, False),
    }
    for name, (factory, fifo) in runs.items():
        t0 = time.perf_counter()
        r = replay_queue(cluster, jobs, factory, strict_fifo=fifo, repartition=None if fifo else propose)
        wall = time.perf_counter() - t0
        print(f"  {name:34} {r.mean_wait_s:12.0f} {r.percentile(0.5):9.0f} {r.percentile(0.95):9.0f} "
              f"{r.allocation_ratio * 100:6.1f}% {r.makespan_s:11.0f} {r.never_started:6d} {wall:7.1f}")


def report(args, fill: float) -> None:
    snapshot = build(args.nodes, args.pending, fill)
    kind = "steady state: cluster full" if fill > 0.99 else f"burst: cluster {fill:.0%} full"
    print(f"{kind}: {args.nodes} nodes x 8 GPUs, {len(snapshot.running)} running, {len(snapshot.pending)} pending")
    t_order, _ = timed(lambda: ordered(snapshot.pending))
    t_gpuq, result = timed(lambda: run_cycle(snapshot, Packer, propose))
    t_old, result_old = timed(lambda: run_cycle(snapshot, RebuiltPacker, rebuild_propose), repeat=1)
    print(f"  {'':44s} {'seconds':>8s} {'admitted':>9s} {'backfilled':>10s} {'re-carved':>9s}")
    rows = [("gpuq cycle (partitioner packer)", t_gpuq, result),
            ("baseline: same cycle, old re-carving path", t_old, result_old)]
    if not args.no_first_fit:
        t_ff, result_ff = timed(lambda: run_cycle(snapshot, FirstFitPacker), repeat=1)
        rows.append(("baseline: same cycle, first-fit", t_ff, result_ff))
    for name, seconds, got in rows:
        print(f"  {name:44s} {seconds:8.3f} {len(got.admitted):9d} {sum(a.backfill for a in got.admitted):10d} "
              f"{len(got.layout_changes):9d}")
    print(f"  {'baseline: ordering only':44s} {t_order:8.3f}")
    same = [(a.job_id, a.placement) for a in result.admitted] == [(a.job_id, a.placement) for a in result_old.admitted]
    verdict = "yes" if same else "no (the trial bound picked other nodes)"
    print(f"  same admissions as the old re-carving path: {verdict}")
    if result.incomplete:
        for name, factory, repartition in (("gpuq", Packer, propose),
                                           ("old re-carving path", RebuiltPacker, rebuild_propose)):
            cycles, total, admitted = drain(snapshot, factory, repartition)
            print(f"  {name}: the cycle stopped at its re-carving budget; {cycles} cycles in {total:.1f} s admitted "
                  f"{admitted} jobs ({total / cycles:.2f} s per cycle)")
    print("  goal: gpuq cycle <= 1 s full, <= 0.3 s half empty")


if __name__ == "__main__":
    main()
