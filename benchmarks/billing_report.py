"""How long a usage report and a /metrics scrape take over a large ledger (SQLite, in memory).

    .venv/bin/python benchmarks/billing_report.py [intervals]
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta

from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from queue_service.billing import reports
from queue_service.db.billing_models import GpuPrice, UsageInterval
from queue_service.db.models import Base
from queue_service.metrics import ServiceCollector


def main(n: int) -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    t0 = datetime(2026, 11, 1)
    with Session(engine) as session, session.begin():
        session.add(GpuPrice(gpu_model="h100-80gb", effective_from=t0 - timedelta(days=60), gpu_hour=2.0))
        session.add(GpuPrice(gpu_model="h100-80gb", effective_from=t0 + timedelta(days=15), gpu_hour=3.0))
        session.add_all(UsageInterval(
            allocation_id=f"a{i}", job_id=f"j{i // 2}", attempt=1, project_id=f"p{i % 20}", project_name=f"p{i % 20}",
            node_id="n", node_name="n", kind="blocks" if i % 3 else "gpu", gpu_uuid=f"g{i % 64}",
            gpu_model="h100-80gb", gpus=0 if i % 3 else 1, blocks=25 if i % 3 else 0,
            started_at=t0 + timedelta(minutes=i % 40000), ended_at=t0 + timedelta(minutes=i % 40000 + 90),
        ) for i in range(n))
    sessions = sessionmaker(engine)
    with sessions() as session:
        for group_by in ("day", "job", "project"):
            start = time.perf_counter()
            report = reports.usage(session, project_ids=None, start=t0, end=t0 + timedelta(days=30),
                                   group_by=group_by, now=t0 + timedelta(days=40))
            print(f"{n} intervals, group_by={group_by}: {time.perf_counter() - start:.2f} s, {len(report.rows)} rows")
    start = time.perf_counter()
    families = list(ServiceCollector(sessions).collect())
    print(f"/metrics collect: {time.perf_counter() - start:.2f} s ({len(families)} families)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
