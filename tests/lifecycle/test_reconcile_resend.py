"""The reconciler re-sends launches still outstanding, all in a pass of few queries, never waiting on a claim.

A launch whose start claim has not come back after ``resend_after_s`` is sent
again with the same devices. An attempt whose job a request holds right now
(a start claim in flight) is skipped, not waited for (``FOR UPDATE SKIP
LOCKED``, PostgreSQL): the next pass takes it.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from dramatiq import Message
from sqlalchemy import select, update

from queue_service.admitter.leader import Leadership
from queue_service.admitter.loop import _libpq_dsn
from queue_service.context import ServiceContext
from queue_service.db.models import Attempt, Job
from queue_service.dispatch import make_broker
from tests import builders
from tests.api.helpers import get_job, submit
from workers.messages import LAUNCH_ACTOR, node_queue_name


def _sent(node_name: str) -> list[dict[str, Any]]:
    """The launches waiting in the node's (in-memory) queue, taken out of it."""
    queue = make_broker("memory://").queues.get(node_queue_name(node_name))
    out = []
    while queue is not None and not queue.empty():
        message = Message.decode(queue.get_nowait())
        if message.actor_name == LAUNCH_ACTOR:
            out.append(message.args[0])
    return out


def _outstanding(ctx: ServiceContext, job_ids: list[str], *, age_s: float = 60.0) -> None:
    """As if their launches went out ``age_s`` ago and no claim came back."""
    with ctx.sessions() as session, session.begin():
        for job_id in job_ids:
            attempt = session.scalar(select(Job.attempt).where(Job.id == job_id))
            sent = session.scalar(select(Attempt.launch_sent_at).where(Attempt.job_id == job_id,
                                                                         Attempt.number == attempt))
            session.execute(update(Attempt).where(Attempt.job_id == job_id, Attempt.number == attempt)
                            .values(launch_sent_at=sent - timedelta(seconds=age_s)))


def _admitted(api, ctx, people, count: int) -> list[str]:
    builders.register(api, people.agent("n1"), "n1", "h100-80gb:4")
    ids = [submit(api, people.admin, resources={"gpus": 2 if i == 0 else 1})["id"] for i in range(count)]
    ctx.admitter.run_once()
    assert all(get_job(api, people.admin, i)["state"] == "admitted" for i in ids)
    return ids


def test_outstanding_launches_are_sent_again_with_the_same_devices(api, ctx, people) -> None:
    ids = _admitted(api, ctx, people, 3)
    first = {spec["job_id"]: spec for spec in _sent("n1")}
    assert set(first) == set(ids)
    ctx.admitter.reconcile()
    assert _sent("n1") == [], "nothing is outstanding yet"
    _outstanding(ctx, ids[:2])
    ctx.admitter.reconcile()
    again = {spec["job_id"]: spec for spec in _sent("n1")}
    assert set(again) == set(ids[:2])
    for job_id, spec in again.items():
        assert spec == first[job_id]
    ctx.admitter.reconcile()
    assert _sent("n1") == [], "re-sent once per resend_after_s"


def test_a_job_a_request_holds_is_skipped_not_waited_for(api, ctx, people) -> None:
    if ctx.engine.dialect.name != "postgresql":
        return  # SQLite has one writer: nothing holds a row while the reconciler runs
    ids = _admitted(api, ctx, people, 2)
    _sent("n1")
    _outstanding(ctx, ids)
    held, other = ids
    with ctx.sessions() as holder, holder.begin():
        holder.get(Job, held, with_for_update=True)  # as a start claim in flight does
        done = threading.Event()
        worker = threading.Thread(target=lambda: (ctx.admitter.reconcile(), done.set()), daemon=True)
        worker.start()
        assert done.wait(10), "the reconciler waited for the held job"
        assert [spec["job_id"] for spec in _sent("n1")] == [other]
    ctx.admitter.reconcile()
    assert [spec["job_id"] for spec in _sent("n1")] == [held], "the next pass takes it"


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_the_reconciler_runs_beside_an_elected_leader(api, ctx, people) -> None:
    """With ``--api-processes`` > 1 one process holds the leader's session lock the whole time: the
    reconciler's transaction lock is another key (``db.locks``; it once was the same one, and no launch
    was ever re-sent, no lost node recovered), in the leader's process and in the others."""
    leader = Leadership(_libpq_dsn(ctx.sessions), on_wake=lambda: None, retry_s=0.1).start()
    try:
        deadline = time.monotonic() + 10
        while not leader.is_leader and time.monotonic() < deadline:
            time.sleep(0.02)
        assert leader.is_leader
        ids = _admitted(api, ctx, people, 2)
        _sent("n1")
        _outstanding(ctx, ids)
        assert ctx.admitter.reconcile() == 2
        assert {spec["job_id"] for spec in _sent("n1")} == set(ids)
        assert not ctx.admitter.run_once().skipped, "nor does the leader's lock stop the cycle's"
    finally:
        leader.stop()
