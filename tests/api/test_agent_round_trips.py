"""The agents' reports stay short: statements per start claim, exit and heartbeat, and what they leave behind.

At 100 simulated hosts the server's time went to exits and start claims, each a row of small statements
(a clock read, reads that one join answers, an ORM reload per interval). These bounds pin the shortened
paths (``ledger.open_intervals``/``close_intervals``, ``allocations.release``, ``nodes.heartbeat``); the
speed itself is ``benchmarks/scale_bench.py``'s. The rows they write are checked too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event, select

from queue_service.db.billing_models import UsageInterval
from queue_service.db.models import Allocation, Node
from tests import builders
from tests.api.helpers import auth, exited, get_job, started, submit

# Statements each report sends, BEGIN and COMMIT not counted (PostgreSQL adds the job-count advisory lock).
CLAIM = 9
EXIT = {"sqlite": 14, "postgresql": 15}
HEARTBEAT = 3


@contextmanager
def _statements(engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn, cursor, statement, params, context, executemany) -> None:
        if "api_tokens" in statement:
            return  # the token cache's reads (its refresher thread, a stale entry): per window, not per report
        seen.append(statement.split(None, 2)[0].upper() + " " + statement[:80])

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_claim_exit_and_heartbeat_statements(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:2")
    job = submit(api, actors.admin, time_limit_s=60, resources={"gpus": 2, "memory_mib": 512})
    ctx.admitter.run_once()
    job = get_job(api, actors.admin, job["id"])
    dialect = ctx.engine.dialect.name
    with _statements(ctx.engine) as claim:
        assert started(api, actors.agent, job).status_code == 200
    assert len(claim) <= CLAIM, claim
    with _statements(ctx.engine) as exit_:
        assert exited(api, actors.agent, job).status_code == 200
    assert len(exit_) <= EXIT[dialect], exit_
    with _statements(ctx.engine) as beat:
        answer = api.post("/v1/agent/heartbeat", json={"node_name": "n1", "running": []}, headers=auth(actors.agent))
    assert answer.status_code == 200 and answer.json()["known"] is True
    assert len(beat) <= HEARTBEAT, beat
    with ctx.sessions() as session:
        intervals = session.scalars(select(UsageInterval).where(UsageInterval.job_id == job["id"])).all()
        allocations = session.scalars(select(Allocation).where(Allocation.job_id == job["id"])).all()
        node = session.scalar(select(Node).where(Node.name == "n1"))
    # one interval per GPU, opened with the node's and project's names, closed when the allocation was released
    assert sorted(i.gpu_uuid for i in intervals) == sorted(a.gpu_uuid for a in allocations) and len(intervals) == 2
    assert all(i.node_name == "n1" and i.project_name and i.gpu_model == "h100-80gb" for i in intervals)
    assert {i.ended_at for i in intervals} == {a.released_at for a in allocations} != {None}
    assert node is not None and node.lease_expires_at > node.last_heartbeat_at


def test_a_repeated_claim_opens_no_second_interval(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = submit(api, actors.admin, time_limit_s=60, resources={"gpus": 1, "memory_mib": 512})
    ctx.admitter.run_once()
    job = get_job(api, actors.admin, job["id"])
    assert started(api, actors.agent, job).status_code == 200
    assert started(api, actors.agent, job).status_code == 200
    with ctx.sessions() as session:
        assert len(session.scalars(select(UsageInterval).where(UsageInterval.job_id == job["id"])).all()) == 1


def test_a_heartbeat_brings_a_down_node_back(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    with ctx.sessions() as session:
        session.scalar(select(Node).where(Node.name == "n1")).status = "down"
        session.commit()
    answer = api.post("/v1/agent/heartbeat", json={"node_name": "n1", "running": []}, headers=auth(actors.agent))
    assert answer.status_code == 200
    with ctx.sessions() as session:
        assert session.scalar(select(Node.status).where(Node.name == "n1")) == "ready"
    unknown = api.post("/v1/agent/heartbeat", json={"node_name": "n2", "running": []}, headers=auth(actors.admin))
    assert unknown.status_code == 200 and unknown.json()["known"] is False


def test_release_updates_the_rows_its_session_holds(api, ctx, actors) -> None:
    """``release`` and ``close_intervals`` write with one UPDATE each; objects already loaded see the same ends."""
    from queue_service.lifecycle import allocations

    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = submit(api, actors.admin, time_limit_s=60, resources={"gpus": 1, "memory_mib": 512})
    ctx.admitter.run_once()
    job = get_job(api, actors.admin, job["id"])
    assert started(api, actors.agent, job).status_code == 200
    with ctx.sessions() as session:
        held = session.scalar(select(Allocation).where(Allocation.job_id == job["id"]))
        interval = session.scalar(select(UsageInterval).where(UsageInterval.job_id == job["id"]))
        assert held is not None and interval is not None and interval.ended_at is None
        assert allocations.release(session, job_id=job["id"]) == 1
        assert held.released_at is not None and interval.ended_at == held.released_at
        assert held not in session.dirty  # written by the UPDATE, not left for a second one at the flush
        session.commit()
        session.expire_all()
        assert session.get(UsageInterval, interval.id).ended_at == session.get(Allocation, held.id).released_at
