"""An idle server is quiet: no cycles or webhook passes while nothing happens, and every deadline is still met."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import event, select, update

from queue_service.admitter import Admitter, deadlines
from queue_service.db.clock import db_now
from queue_service.db.models import Node, NodeStatus
from tests.support.builders import job_body, register


def _count_statements(ctx) -> list[str]:
    seen: list[str] = []
    lock = threading.Lock()

    @event.listens_for(ctx.engine, "before_cursor_execute")
    def _seen(_conn, _cursor, statement, *_args) -> None:
        with lock:
            seen.append(statement)

    return seen


def _admitter(ctx, **overrides) -> Admitter:
    settings = ctx.settings.model_copy(update={"admission_interval_s": 0.1, **overrides})
    return Admitter(sessions=ctx.sessions, settings=settings, packer_factory=ctx.packer_factory)


def test_an_idle_admitter_runs_no_query_until_its_recovery_tick(ctx) -> None:
    admitter = _admitter(ctx)
    assert admitter.run_once().idle_wait_s == deadlines.IDLE_TICK_S, "no node, no job: only the recovery tick"
    seen = _count_statements(ctx)
    admitter.start()
    try:
        time.sleep(0.5)  # its first cycle (and reconcile) run now
        before = len(seen)
        time.sleep(1.5)  # 15 ticks of admission_interval_s before this change
        assert len(seen) == before, seen[before:]
    finally:
        admitter.stop()


def test_an_idle_admitter_marks_a_silent_node_down_when_its_lease_runs_out(api, ctx, actors) -> None:
    register(api, actors.agent, "n1", "h100-80gb:1")
    admitter = _admitter(ctx)
    with ctx.sessions.begin() as session:  # the lease runs out in 1 s: the admitter sleeps until then, not 60 s
        session.execute(update(Node).values(lease_expires_at=db_now(session) + timedelta(seconds=1)))
    admitter.start()
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            with ctx.sessions() as session:
                if session.scalar(select(Node.status).where(Node.name == "n1")) == NodeStatus.DOWN:
                    break
            time.sleep(0.1)
        else:
            raise AssertionError("the node's lease ran out but the idle admitter never marked it down")
    finally:
        admitter.stop()


def test_a_queued_job_keeps_the_regular_tick(api, ctx, actors) -> None:
    """No node at all: the job waits queued, and the admitter keeps looking every admission_interval_s."""
    response = api.post("/v1/jobs", json=job_body(resources={"gpus": 8}),
                        headers={"Authorization": f"Bearer {actors.admin}"})
    assert response.status_code in (200, 201, 202), response.text
    assert ctx.admitter.run_once().idle_wait_s is None


def test_the_webhook_sender_sleeps_while_idle_and_wakes_on_a_job_event(api, ctx, actors) -> None:
    sender = ctx.webhooks
    sender.settings = ctx.settings.model_copy(update={"webhook_poll_s": 0.05})
    sender.start()
    try:
        time.sleep(0.5)
        idle_passes = sender.passes
        time.sleep(1.0)  # 20 polls before this change
        assert sender.passes == idle_passes, "an idle sender runs no pass"
        response = api.post("/v1/jobs", json=job_body(), headers={"Authorization": f"Bearer {actors.admin}"})
        assert response.status_code in (200, 201, 202), response.text
        deadline = time.monotonic() + 3
        while sender.passes == idle_passes and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sender.passes > idle_passes, "a committed job event wakes the sender"
    finally:
        sender.stop()


def test_only_a_committed_job_event_wakes_the_sender(api, ctx, actors) -> None:
    """The wake is a committed effect (``lifecycle.effects``): a rolled-back event rings no doorbell."""
    from queue_service.db.models import Job
    from queue_service.lifecycle import events
    from queue_service.lifecycle.states import Event, JobState

    response = api.post("/v1/jobs", json=job_body(), headers={"Authorization": f"Bearer {actors.admin}"})
    assert response.status_code in (200, 201, 202), response.text
    assert ctx.webhooks._wake.is_set(), "the submit's committed event woke the sender"
    ctx.webhooks._wake.clear()
    with ctx.sessions() as session:
        session.begin()
        job = session.get(Job, response.json()["id"])
        events.record(session, job=job, event=Event.SUBMIT, source=None, target=JobState.QUEUED, actor="test",
                      at=db_now(session))
        session.flush()
        session.rollback()
    assert not ctx.webhooks._wake.is_set(), "a rolled-back event wakes nothing"
