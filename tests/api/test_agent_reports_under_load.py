"""Agent reports under load: they commit on their own thread, find a connection at once, and never wait on a cycle.

At 100 simulated hosts (``benchmarks/scale_bench.py``) heartbeats took
seconds and leases ran out while the server used a quarter of a core: an
exit report held its job's row and the hour's usage-rollup row while its
commit waited for a free pool thread, and every thread was taken by other
reports waiting for that rollup row (or for one of a pool of 30 connections
under 40 threads).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait

import anyio
import anyio.to_thread
import pytest
from sqlalchemy import event

from queue_service.admitter import loop as admitter_loop
from queue_service.db import session as db_session
from queue_service.services import nodes as node_service
from tests import builders
from tests.api.helpers import auth, exited, get_job, started, submit
from tests.services import require_postgres

REPORT_DEADLINE_S = 20.0  # far beyond what a report takes; only a deadlock reaches it


def _running_jobs(api, ctx, actors, count: int) -> list[dict]:
    builders.register(api, actors.agent, "n1", f"h100-80gb:{count}")
    jobs = [submit(api, actors.admin, name=f"j{i}", resources={"gpus": 1, "memory_mib": 512}) for i in range(count)]
    ctx.admitter.run_once()
    out = []
    for job in jobs:
        job = get_job(api, actors.admin, job["id"])
        assert job["state"] == "admitted", job
        assert started(api, actors.agent, job).status_code == 200
        out.append(job)
    return out


def _set_request_threads(api, tokens: int) -> None:
    async def limit() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = tokens

    api.portal.call(limit)


def _lock_timeout(ctx, timeout_s: float) -> None:
    """New connections of the service give up a row-lock wait after ``timeout_s``: a deadlock fails, not hangs."""
    ctx.engine.dispose()

    @event.listens_for(ctx.engine, "connect")
    def _set(dbapi_conn, _record) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET lock_timeout = '{int(timeout_s * 1000)}ms'")
        dbapi_conn.commit()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_exits_sharing_the_rollup_row_finish_with_fewer_threads_than_reports(api, ctx, actors) -> None:
    """Eight exits of one project in the same hour (one usage-rollup row) on two request threads all finish.

    Each exit holds the rollup row until its commit; had the commit needed
    another pool thread after the route, the other exits, each holding a
    thread while waiting for the row, would never let it run.
    """
    jobs = _running_jobs(api, ctx, actors, 8)
    _lock_timeout(ctx, REPORT_DEADLINE_S / 2)
    _set_request_threads(api, 2)
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: exited(api, actors.agent, job), jobs))
    assert [a.status_code for a in answers] == [200] * len(jobs), [a.text[:200] for a in answers]
    assert {get_job(api, actors.admin, job["id"])["state"] for job in jobs} == {"succeeded"}


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_heartbeats_and_reports_are_answered_while_an_admission_cycle_is_open(api, ctx, actors, monkeypatch) -> None:
    """A cycle holding its transaction open (advisory lock, leases expired, queue read) blocks no agent report."""
    first, second = _running_jobs(api, ctx, actors, 2)
    submit(api, actors.admin, name="waiting", resources={"gpus": 1, "memory_mib": 512})
    deciding, release = threading.Event(), threading.Event()
    real = admitter_loop.run_cycle

    def slow_cycle(*args, **kwargs):
        deciding.set()
        assert release.wait(REPORT_DEADLINE_S)
        return real(*args, **kwargs)

    monkeypatch.setattr(admitter_loop, "run_cycle", slow_cycle)
    cycle = threading.Thread(target=ctx.admitter.run_once)
    cycle.start()
    try:
        assert deciding.wait(REPORT_DEADLINE_S)
        for name, call in (
            ("heartbeat", lambda: api.post("/v1/agent/heartbeat", headers=auth(actors.agent),
                                           json={"node_name": "n1", "running": [
                                               {"job_id": j["id"], "attempt": j["attempt"], "replica": 0}
                                               for j in (first, second)]})),
            ("exited", lambda: exited(api, actors.agent, first)),
            ("started", lambda: started(api, actors.agent, second)),
        ):
            with ThreadPoolExecutor(1) as pool:
                future = pool.submit(call)
                done, _ = wait([future], timeout=REPORT_DEADLINE_S / 4)
                if not done:
                    release.set()
                assert done, f"{name} waited for the admission cycle"
                assert future.result().status_code == 200, (name, future.result().text)
        assert cycle.is_alive(), "the cycle ended before the reports were made: nothing was shown"
    finally:
        release.set()
        cycle.join(REPORT_DEADLINE_S)
    assert get_job(api, actors.admin, first["id"])["state"] == "succeeded"


def test_postgres_pool_holds_a_connection_for_every_request_thread() -> None:
    """Every request thread (anyio's limiter) and the service's own threads find a connection without waiting."""
    async def threads() -> float:
        return anyio.to_thread.current_default_thread_limiter().total_tokens

    request_threads = anyio.run(threads)
    engine = db_session.make_engine(require_postgres())
    try:
        assert request_threads <= db_session.REQUEST_THREADS
        assert engine.pool.size() >= request_threads + db_session.BACKGROUND_CONNECTIONS  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def test_a_heartbeat_reads_the_placed_attempts_as_plain_columns(api, ctx, actors) -> None:
    """The heartbeat's lean read of what runs on the node answers the same attempts as the full one (adopt's)."""
    first, second = _running_jobs(api, ctx, actors, 2)
    assert exited(api, actors.agent, first).status_code == 200
    with ctx.sessions() as session:
        full = node_service.current_attempts(session, node_name="n1")
        lean = node_service.placed_attempts(session, node_name="n1")
    assert set(lean) == set(full) == {(second["id"], second["attempt"], 0)}
    for key, placed in lean.items():
        job, attempt = full[key]
        assert (placed.state, placed.started_at) == (job.state, attempt.started_at)
    answer = api.post("/v1/agent/heartbeat", headers=auth(actors.agent), json={"node_name": "n1", "running": [
        {"job_id": j["id"], "attempt": j["attempt"], "replica": 0} for j in (first, second)]})
    assert answer.status_code == 200
    assert [s["job_id"] for s in answer.json()["stale"]] == [first["id"]]  # over: its agent must stop it
