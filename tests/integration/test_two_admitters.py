"""Two service replicas on one database: admission stays single-leader (PostgreSQL advisory lock,
SQLite's single writer), and the standby admits on its own once the other is gone."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select, text

from partitioner.types import Request
from queue_service.admitter.feasibility import CONFIRM_S
from queue_service.admitter.loop import ADVISORY_LOCK_KEY
from queue_service.context import ServiceContext
from queue_service.db.models import Allocation, Gpu, Job, JobState, Node, NodeStatus
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


def test_a_cycle_that_finds_the_lock_taken_tries_again_at_once(ctx, api, actors) -> None:
    """Another replica's cycle may have read the queue before this replica's submit committed: the skipped
    replica retries within ``SKIPPED_RETRY_S``, not at its next timer (30 s here)."""
    if not ctx.admitter.is_postgres:
        pytest.skip("SQLite: one writer, no advisory lock to find taken")
    register(api, actors.agent, "n1", "h100-80gb:1")
    standby = ServiceContext.build(ctx.settings.model_copy(update={"admission_interval_s": 30.0}))
    holder = ctx.engine.connect()
    try:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})  # "the other replica"
        job = api.post("/v1/jobs", json=job_body(), headers=auth(actors.admin)).json()["id"]
        standby.admitter.start()
        standby.admitter.wake()
        time.sleep(0.5)
        with ctx.sessions() as session:
            assert session.get(Job, job).state == JobState.QUEUED  # its cycles skip while the lock is held
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
        released = time.monotonic()
        state = None
        while time.monotonic() - released < 10:
            with ctx.sessions() as session:
                state = session.get(Job, job).state
            if state == JobState.ADMITTED:
                break
            time.sleep(0.05)
        assert state == JobState.ADMITTED
    finally:
        holder.close()
        standby.admitter.stop()
        standby.engine.dispose()


def test_a_refusal_is_confirmed_on_a_fresh_read(ctx, api, actors) -> None:
    """The never-fits cache of one API process does not see a node registered through another: a refusal
    from a cache older than ``CONFIRM_S`` is checked against the nodes as they are now."""
    register(api, actors.agent, "n1", "h100-80gb:1")
    two = Request(gpus=2, cpus_milli=1000, memory_mib=1024)
    with ctx.sessions() as session:
        assert ctx.feasibility.check(session, two) is not None  # one GPU registered: never
    with ctx.sessions() as session:  # registered through "another process": this cache is not told
        session.add(Node(id="n2id", name="n2", cpus=32, memory_mib=65536, status=NodeStatus.READY))
        session.flush()
        session.add_all(Gpu(uuid=f"GPU-n2-{i}", node_id="n2id", index=i, name="H100", model="h100-80gb",
                            memory_mib=81559, sm_count=132) for i in range(2))
        session.commit()
    time.sleep(CONFIRM_S + 0.05)
    with ctx.sessions() as session:
        assert ctx.feasibility.check(session, two) is None
