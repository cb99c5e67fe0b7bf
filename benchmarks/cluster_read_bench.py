"""The cycle's cluster read (``admitter.read.build_cluster``) on a big registered fleet, beside a baseline commit's.

    .venv/bin/python benchmarks/cluster_read_bench.py [--nodes 1000] [--fill 0.5] [--database-url URL]
        [--baseline COMMIT]
    .venv/bin/python benchmarks/cluster_read_bench.py --smoke     # 20 nodes, SQLite (CI: it works)

The database: ``--nodes`` nodes of 8 H100s, every node with labels and two runtimes, every GPU with its
NVLink peers and an MPS status, GPU 7 of each node in MIG mode with a 3g + 2g + 1g layout; ``--fill`` of
the exclusive GPUs held whole by live allocations (one job each), a block job on each node's 1g instance.
Each read is the admitter's: schedulable nodes with usage and the workloads the coexistence rules read
(``registered`` reads, the never-fit check's, are timed too). The baseline is the same three files
(``admitter/read.py``, ``services/nodes.py``, ``services/coexistence.py``) as they were at ``--baseline``,
loaded over this tree's other modules, reading the same database in the same process; both reads must
agree (the figures are printed only when they do).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _worktree import module_at  # this folder's shared helper (the script's folder is on the path)
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from queue_service.admitter import read
from queue_service.db.base import utcnow
from queue_service.db.models import Allocation, Base, Gpu, Job, Node, Project

LAYOUT = [{"profile": "3g.40gb", "start": 0}, {"profile": "2g.20gb", "start": 4},
          {"profile": "1g.10gb", "start": 6, "shared": True}]


def seed(engine: Engine, nodes: int, fill: float) -> int:
    """The fleet above; returns the number of live allocations."""
    lease = utcnow() + timedelta(days=1)
    node_rows, gpu_rows, job_rows, alloc_rows = [], [], [], []
    held_per_node = round(7 * fill)
    for n in range(nodes):
        node_id = f"n{n:05d}"
        node_rows.append({"id": node_id, "name": node_id, "cpus": 128, "memory_mib": 1024 * 1024, "status": "ready",
                          "lease_expires_at": lease, "labels": {"rack": f"r{n // 40}", "zone": "a"},
                          "runtimes": ["docker", "process"]})
        for i in range(8):
            uuid = f"GPU-{node_id}-{i}"
            gpu_rows.append({"uuid": uuid, "node_id": node_id, "index": i, "name": "NVIDIA H100 80GB HBM3",
                             "model": "h100-80gb", "memory_mib": 81559, "sm_count": 132,
                             "mode": "mig" if i == 7 else "exclusive", "mig_enabled": i == 7,
                             "mig_layout": LAYOUT if i == 7 else [],
                             "nvlink_peers": [p for p in range(8) if p != i], "mps_status": {uuid: "ready"}})
            if i < held_per_node or i == 7:
                job_id = f"j{n:05d}-{i}"
                job_rows.append({"id": job_id, "name": job_id, "project_id": "p", "command": ["x"],
                                 "priority_class": "normal", "priority": 500, "state": "running", "attempt": 1,
                                 "submitted_at": lease, "workload": "training" if i < 7 else "inference"})
                alloc_rows.append({"id": f"a{job_id}", "job_id": job_id, "attempt": 1, "node_id": node_id,
                                   "gpu_uuid": uuid, "cpus_milli": 4000, "memory_mib": 16384,
                                   **({"kind": "gpu", "slot": "gpu", "blocks": 0, "gpu_memory_mib": 0,
                                       "mig_start": None, "mig_profile": None} if i < 7 else
                                      {"kind": "blocks", "slot": "", "blocks": 40, "gpu_memory_mib": 4096,
                                       "mig_start": 6, "mig_profile": "1g.10gb"})})
    with engine.begin() as connection:
        connection.execute(insert(Project), [{"id": "p", "name": "p"}])
        for model, rows in ((Node, node_rows), (Gpu, gpu_rows), (Job, job_rows), (Allocation, alloc_rows)):
            for k in range(0, len(rows), 5_000):
                connection.execute(insert(model), rows[k:k + 5_000])
    return len(alloc_rows)


def baseline_read(commit: str) -> ModuleType:
    """``admitter/read.py`` of ``commit`` with that commit's node usage and coexistence services."""
    old_nodes = module_at(commit, "queue_service/services/nodes.py", "baseline_nodes")
    old_coexistence = module_at(commit, "queue_service/services/coexistence.py", "baseline_coexistence")
    old_read = module_at(commit, "queue_service/admitter/read.py", "baseline_read")
    old_read.node_service = old_nodes  # type: ignore[attr-defined]
    old_read.coexistence_service = old_coexistence  # type: ignore[attr-defined]
    return old_read


def timed(sessions: sessionmaker, module: ModuleType, repeat: int, **kw: bool) -> tuple[list[float], object]:
    """Wall times (ms) of ``repeat`` reads, each in a new transaction, and the last read's cluster."""
    times, cluster = [], None
    for _ in range(repeat):
        with sessions() as session:
            t = time.perf_counter()
            cluster = module.build_cluster(session, **kw)
            times.append((time.perf_counter() - t) * 1000)
    return times, cluster


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--fill", type=float, default=0.5, help="share of each node's 7 exclusive GPUs held")
    parser.add_argument("--database-url", default=None, help="an empty database (default: a new SQLite file)")
    parser.add_argument("--baseline", metavar="COMMIT", default=None)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="20 nodes, 3 reads")
    args = parser.parse_args(argv)
    if args.smoke:
        args.nodes, args.repeat = 20, 3
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='gpuq-read-')}/bench.db"
    engine = create_engine(url)
    if engine.dialect.name == "postgresql":  # a scratch schema, dropped after: the database is left as it was
        engine = create_engine(url, connect_args={"options": "-csearch_path=gpuq_read_bench"})
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS gpuq_read_bench CASCADE"))
            connection.execute(text("CREATE SCHEMA gpuq_read_bench"))
    try:
        Base.metadata.create_all(engine)
        live = seed(engine, args.nodes, args.fill)
        sessions = sessionmaker(engine, expire_on_commit=False)
        print(f"{engine.dialect.name}: {args.nodes:,} nodes x 8 GPUs, {live:,} live allocations; "
              f"best / median of {args.repeat} reads, ms")
        runs = [("this tree", read)] + ([(f"baseline {args.baseline[:10]}", baseline_read(args.baseline))]
                                        if args.baseline else [])
        clusters = {}
        for name, module in runs:
            for what, kw in (("cycle read", {}), ("registered (never-fit)", {"registered": True})):
                times, clusters[(name, what)] = timed(sessions, module, args.repeat, **kw)
                print(f"  {name:22} {what:24} {min(times):8.1f} {statistics.median(times):8.1f}")
        for what in ("cycle read", "registered (never-fit)"):
            values = {repr(c) for (_, w), c in clusters.items() if w == what}
            assert len(values) == 1, f"{what}: the reads disagree"
        if len(runs) > 1:
            print("  both reads agree: yes")
    finally:
        if engine.dialect.name == "postgresql":
            engine.dispose()
            with create_engine(url).begin() as connection:
                connection.execute(text("DROP SCHEMA IF EXISTS gpuq_read_bench CASCADE"))


if __name__ == "__main__":
    main()
