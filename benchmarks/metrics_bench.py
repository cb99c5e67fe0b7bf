"""A /metrics scrape over a large database: the aggregate collector beside the per-row baseline, one run.

    .venv/bin/python benchmarks/metrics_bench.py               # 50,000 jobs
    .venv/bin/python benchmarks/metrics_bench.py --smoke       # 2,000 (CI: it works, not how fast)

The database: N jobs over 4 projects, 3 workload classes and all final and live states, one attempt and
one ledger interval each (the closed ones rolled up by ``rollups.rebuild``), 64 GPUs on 8 nodes, 200
running jobs with live allocations and recent NVML samples. "Baseline" is how the collector read them
before the rollups (kept here, not in the service): a Python loop over every admitted job for the wait
histogram and over every ledger interval, priced one by one, for the usage counters. SQLite in memory.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import create_engine, insert, select
from sqlalchemy.orm import Session, sessionmaker

from queue_service.billing import rollups
from queue_service.billing.ledger import gpu_equivalents
from queue_service.billing.pricebook import PriceBook
from queue_service.db.billing_models import GpuPrice, GpuSample, UsageInterval
from queue_service.db.models import Allocation, Attempt, Base, Gpu, Job, Node, Project
from queue_service.metrics import WAIT_BUCKETS_S, ServiceCollector

NOW = datetime.utcnow().replace(microsecond=0)
STATES = ("succeeded", "succeeded", "failed", "cancelled", "timed_out", "queued")
LIVE = 200


def seed(session: Session, n: int) -> None:
    session.add_all(Project(id=f"p{i}", name=f"p{i}") for i in range(4))
    session.add_all(Node(id=f"n{i}", name=f"n{i}") for i in range(8))
    session.flush()
    session.add_all(Gpu(uuid=f"g{i}", node_id=f"n{i // 8}", index=i % 8, name="H100", model="h100-80gb",
                        memory_mib=81920) for i in range(64))
    session.add(GpuPrice(gpu_model="h100-80gb", effective_from=NOW - timedelta(days=90), gpu_hour=2.0))
    t0 = NOW - timedelta(days=30)
    jobs, attempts, intervals, allocations, samples = [], [], [], [], []
    for i in range(n):
        live = i >= n - LIVE
        state = "running" if live else STATES[i % len(STATES)]
        submitted = t0 + timedelta(seconds=i * 30 * 86400 / n)
        admitted = None if state == "queued" else submitted + timedelta(seconds=(i * 37) % 5000)
        finished = None if live or admitted is None else admitted + timedelta(seconds=600 + (i * 53) % 20000)
        jobs.append({"id": f"j{i}", "name": f"j{i}", "project_id": f"p{i % 4}", "command": ["x"],
                     "priority_class": "normal", "priority": 500, "state": state, "attempt": 1,
                     "submitted_at": submitted, "admitted_at": admitted, "started_at": admitted,
                     "finished_at": finished, "workload": ("training", "inference", "batch")[i % 3],
                     "labels": {"feature": f"f{i % 5}"}, "preemptions": i % 7 == 0, "blocks": 25})
        if admitted is None:
            continue
        attempts.append({"id": f"at{i}", "job_id": f"j{i}", "number": 1, "state": state, "reason": "",
                         "started_at": admitted, "ended_at": finished, "exits": {}})
        intervals.append({
            "allocation_id": f"a{i}", "job_id": f"j{i}", "attempt": 1, "replica": 0, "project_id": f"p{i % 4}",
            "project_name": f"p{i % 4}", "node_id": f"n{i % 8}", "node_name": f"n{i % 8}", "kind": "blocks",
            "gpu_uuid": f"g{i % 64}", "gpu_model": "h100-80gb", "slot": "", "gpus": 0, "blocks": 25,
            "gpu_memory_mib": 20480, "mig_compute_share": 0.0, "cpus_milli": 2000, "memory_mib": 8192,
            "started_at": admitted, "ended_at": finished, "workload": jobs[-1]["workload"],
            "labels_json": rollups.labels_key(jobs[-1]["labels"]),
        })
        if live:
            allocations.append({"id": f"a{i}", "job_id": f"j{i}", "attempt": 1, "replica": 0, "node_id": f"n{i % 8}",
                                "kind": "blocks", "gpu_uuid": f"g{i % 64}", "slot": f"b{i}", "blocks": 25,
                                "gpu_memory_mib": 20480, "cpus_milli": 2000, "memory_mib": 8192})
            samples.extend({"job_id": f"j{i}", "attempt": 1, "replica": 0, "project_id": f"p{i % 4}",
                            "node_id": f"n{i % 8}", "gpu_uuid": f"g{i % 64}", "at": NOW - timedelta(seconds=s),
                            "window_s": 10.0, "sm_percent": 40.0, "memory_used_mib": 9000} for s in (5, 15, 25))
    for model, rows in ((Job, jobs), (Attempt, attempts), (UsageInterval, intervals), (Allocation, allocations),
                        (GpuSample, samples)):
        for k in range(0, len(rows), 20_000):
            session.execute(insert(model), rows[k:k + 20_000])


def baseline(session: Session) -> int:
    """The two hot loops of the collector before rollups: waits per job, usage per interval."""
    waits: dict[tuple[str, str], list[float]] = defaultdict(list)
    for project, klass, submitted, admitted in session.execute(
        select(Project.name, Job.priority_class, Job.submitted_at, Job.admitted_at)
        .join(Project, Project.id == Job.project_id).where(Job.admitted_at.is_not(None))
    ):
        waits[(project, klass)].append(max(0.0, (admitted - submitted).total_seconds()))
    buckets = {k: [sum(1 for v in vs if v <= b) for b in WAIT_BUCKETS_S] for k, vs in waits.items()}
    prices = PriceBook.load(session)
    seconds: dict[str, float] = defaultdict(float)
    cost: dict[str, float] = defaultdict(float)
    for iv in session.scalars(select(UsageInterval)):
        end = iv.ended_at or max(NOW, iv.started_at)
        seconds[iv.project_name] += gpu_equivalents(iv) * (end - iv.started_at).total_seconds()
        cost[iv.project_name] += prices.cost(iv, iv.started_at, end)
    return len(buckets) + len(seconds)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--smoke", action="store_true", help="2,000 jobs")
    args = parser.parse_args(argv)
    n = 2_000 if args.smoke else args.jobs
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    sessions = sessionmaker(engine)
    with sessions() as session:
        seed(session, n)
        rollups.rebuild(session)
        session.commit()
    collector = ServiceCollector(sessions, label_keys="feature")

    def scrape() -> int:
        return sum(len(f.samples) for f in collector.collect())

    def old() -> int:
        with sessions() as session:
            return baseline(session)

    figures = {}
    for name, fn in (("baseline", old), ("aggregates", scrape)):
        best, cpu = float("inf"), 0.0
        for _ in range(1 if name == "baseline" else 5):
            t, c = time.perf_counter(), time.process_time()
            fn()
            if time.perf_counter() - t < best:
                best, cpu = time.perf_counter() - t, time.process_time() - c
        figures[name], figures[name + "_cpu"] = best, cpu
    print(f"database: {n:,} jobs, {scrape():,} samples in one scrape")
    print(f"{'figure (wall, best run; CPU in brackets)':<46} {'baseline':>16} {'aggregates':>16}")
    print(f"{'/metrics collect':<46} {figures['baseline'] * 1000:>8.0f}ms ({figures['baseline_cpu'] * 1000:.0f}) "
          f"{figures['aggregates'] * 1000:>8.1f}ms ({figures['aggregates_cpu'] * 1000:.1f})")
    print("(baseline: the wait-histogram and usage loops only; aggregates: every family)")
    return figures


if __name__ == "__main__":
    main()
