"""Two service replicas on one database: admission stays single-leader (PostgreSQL advisory lock,
SQLite's single writer), and the standby admits on its own once the other is gone."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from queue_service.context import ServiceContext
from queue_service.db.models import Allocation, Job, JobState
from tests.api.helpers import auth
from tests.builders import job_body, register


def test_concurrent_admitters_never_double_admit(ctx, api, actors) -> None:
    # PostgreSQL: the advisory lock makes one of two concurrent cycles skip; SQLite: one writer at a time.
    register(api, actors.agent, "n1", "h100-80gb:4")
    for _ in range(30):
        assert api.post("/v1/jobs", json=job_body(resources={"blocks": 10, "gpu_memory_mib": 1000}),
                        headers=auth(actors.admin)).status_code == 201
    standby = ServiceContext.build(ctx.settings.model_copy())
    reports = []

    def spin(admitter) -> None:
        for _ in range(15):
            reports.append(admitter.run_once())

    threads = [threading.Thread(target=spin, args=(a,)) for a in (ctx.admitter, standby.admitter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with ctx.sessions() as session:
        attempts = session.scalars(select(Job.attempt).where(Job.state == JobState.ADMITTED)).all()
        live = session.scalar(select(func.count()).select_from(Allocation).where(Allocation.released_at.is_(None)))
        blocks = session.execute(
            select(Allocation.gpu_uuid, func.sum(Allocation.blocks)).where(Allocation.released_at.is_(None))
            .group_by(Allocation.gpu_uuid)
        ).all()
    assert len(attempts) == 30 and set(attempts) == {1}, "each job admitted exactly once"
    assert live == 30 and all(total <= 100 for _gpu, total in blocks)
    assert sum(r.admitted for r in reports) == 30
    # The leader is gone: the standby alone admits new work.
    ctx.admitter.stop()
    api.post("/v1/jobs", json=job_body(resources={"gpus": 0}), headers=auth(actors.admin))
    assert standby.admitter.run_once().admitted == 1
    standby.engine.dispose()
