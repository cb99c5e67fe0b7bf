"""The lifecycle through the real API (SQLite and PostgreSQL): accepted moves are events, refused ones are 409s.

An illegal transition (an exit on a cancelled job, a start claim for a lost
attempt, a report on a stale attempt) answers 409 with the job's current
state in the body and changes nothing: the job's rows are the same after it,
and ``GET /v1/jobs/{id}/events`` shows every accepted transition and no
rejected one.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from queue_service.context import ServiceContext
from queue_service.db.models import JobEvent
from queue_service.lifecycle.events import replay
from tests import builders
from tests.api.helpers import attempt_ref, auth, exited, get_job, started, submit
from tests.lifecycle.helpers import events, expire_lease, moves, rows

SUBMIT_BY_ADMIN = ("submit", None, "queued", "admin:admin", 0, None)


def _admitted(api: TestClient, ctx: ServiceContext, people: Any, **overrides: Any) -> dict[str, Any]:
    job = submit(api, people.admin, **overrides)
    ctx.admitter.run_once()
    job = get_job(api, people.admin, job["id"])
    assert job["state"] == "admitted", job
    return job


def _refused(api: TestClient, ctx: ServiceContext, people: Any, job_id: str, call: Any, state: str) -> None:
    """``call()`` answers 409 naming ``state``, and the job's rows and events are exactly as before."""
    before_rows, before_events = rows(ctx, job_id), events(api, people.admin, job_id)
    before_public = get_job(api, people.admin, job_id)
    response = call()
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["state"] == state, body
    assert body["detail"], body
    assert rows(ctx, job_id) == before_rows
    assert events(api, people.admin, job_id) == before_events
    assert get_job(api, people.admin, job_id) == before_public


def _replays(ctx: ServiceContext, job_id: str, state: str) -> None:
    """The events replay to the job's current state (and start where the previous one ended)."""
    from sqlalchemy import select

    with ctx.sessions() as session:
        history = list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))
    assert replay(history) == state


def test_a_normal_life_is_four_events(api, ctx, people) -> None:
    builders.register(api, people.agent("n1"), "n1", "h100-80gb:1")
    job = _admitted(api, ctx, people)
    assert started(api, people.agent("n1"), job).status_code == 200
    assert exited(api, people.agent("n1"), job, exit_code=0).json() == {"state": "succeeded", "finalized": True}
    history = events(api, people.viewer, job["id"])
    assert moves(history) == [
        SUBMIT_BY_ADMIN,
        ("admit", "queued", "admitted", "admitter", 1, None),
        ("start", "admitted", "running", "agent:n1", 1, None),
        ("finish", "running", "succeeded", "agent:n1", 1, None),
    ]
    assert [e["id"] for e in history] == sorted(e["id"] for e in history)
    assert all(e["job_id"] == job["id"] for e in history)
    times = [e["at"] for e in history]
    assert times == sorted(times), "stamped in order"
    _replays(ctx, job["id"], "succeeded")
    # A duplicate exit report (at-least-once delivery) is accepted and records nothing.
    assert exited(api, people.agent("n1"), job, exit_code=0).status_code == 200
    assert events(api, people.viewer, job["id"]) == history


def test_a_failed_run_and_a_cancelled_queue_entry(api, ctx, people) -> None:
    builders.register(api, people.agent("n1"), "n1", "h100-80gb:1")
    job = _admitted(api, ctx, people, project="alpha")
    waiting = submit(api, people.member_a, project="alpha")
    started(api, people.agent("n1"), job)
    assert exited(api, people.agent("n1"), job, exit_code=3).json()["state"] == "failed"
    assert moves(events(api, people.member_a, job["id"]))[-1] == ("finish", "running", "failed", "agent:n1", 1, None)
    assert "code 3" in events(api, people.member_a, job["id"])[-1]["reason"]
    api.post(f"/v1/jobs/{waiting['id']}/cancel", headers=auth(people.member_a))
    assert moves(events(api, people.member_a, waiting["id"])) == [
        ("submit", None, "queued", "member:member_a", 0, None),
        ("cancel", "queued", "cancelled", "member:member_a", 0, "cancel"),
    ]
    # Another project's member is not told the history exists.
    assert api.get(f"/v1/jobs/{job['id']}/events", headers=auth(people.member_b)).status_code == 404


def test_an_exit_reported_on_a_cancelled_job_is_refused(api, ctx, people) -> None:
    builders.register(api, people.agent("n1"), "n1", "h100-80gb:1")
    job = _admitted(api, ctx, people)
    cancelled = api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(people.admin))
    assert cancelled.json()["state"] == "cancelled"
    for code, reason in ((0, "exited"), (1, "exited"), (143, "stopped")):
        _refused(api, ctx, people, job["id"],
                 lambda c=code, r=reason: exited(api, people.agent("n1"), job, exit_code=c, reason=r), "cancelled")
    _refused(api, ctx, people, job["id"], lambda: started(api, people.agent("n1"), job), "cancelled")
    assert moves(events(api, people.admin, job["id"])) == [
        SUBMIT_BY_ADMIN,
        ("admit", "queued", "admitted", "admitter", 1, None),
        ("cancel", "admitted", "cancelled", "admin:admin", 1, "cancel"),
    ]
    _replays(ctx, job["id"], "cancelled")


def test_a_lost_attempt_cannot_start_or_report_and_its_successor_is_fenced(api, ctx, people) -> None:
    builders.register(api, people.agent("n1"), "n1", "h100-80gb:1")
    job = _admitted(api, ctx, people)
    assert started(api, people.agent("n1"), job).status_code == 200
    # The agent restarts without it: the started attempt is lost and the job requeued.
    answer = api.post("/v1/agent/adopt", json={"node_name": "n1", "attempts": []}, headers=auth(people.agent("n1")))
    assert answer.status_code == 200, answer.text
    assert get_job(api, people.admin, job["id"])["state"] == "queued"
    _refused(api, ctx, people, job["id"], lambda: started(api, people.agent("n1"), job), "queued")
    _refused(api, ctx, people, job["id"], lambda: exited(api, people.agent("n1"), job, exit_code=0), "queued")

    ctx.admitter.run_once()
    second = get_job(api, people.admin, job["id"])
    assert (second["state"], second["attempt"]) == ("admitted", 2)
    # Reports about attempt 1 (stale) and attempt 3 (not made yet) are refused; attempt 2 may start.
    for number in (1, 3):
        _refused(api, ctx, people, job["id"], lambda n=number: started(api, people.agent("n1"), second, attempt=n),
                 "admitted")
        _refused(api, ctx, people, job["id"],
                 lambda n=number: exited(api, people.agent("n1"), second, attempt=n, exit_code=1), "admitted")
    assert started(api, people.agent("n1"), second).status_code == 200
    _refused(api, ctx, people, job["id"], lambda: exited(api, people.agent("n1"), job, attempt=1, exit_code=0),
             "running")

    history = events(api, people.admin, job["id"])
    assert moves(history) == [
        SUBMIT_BY_ADMIN,
        ("admit", "queued", "admitted", "admitter", 1, None),
        ("start", "admitted", "running", "agent:n1", 1, None),
        ("lose", "running", "queued", "service", 1, "node_lost"),
        ("admit", "queued", "admitted", "admitter", 2, None),
        ("start", "admitted", "running", "agent:n1", 2, None),
    ]
    assert "restarted without it" in history[3]["reason"]
    _replays(ctx, job["id"], "running")


def test_an_attempt_lost_with_its_nodes_lease_cannot_start(api, ctx, people) -> None:
    builders.register(api, people.agent("n1"), "n1", "h100-80gb:1")
    job = _admitted(api, ctx, people)
    expire_lease(ctx, "n1")
    ctx.admitter.reconcile()
    lost = get_job(api, people.admin, job["id"])
    assert lost["state"] == "queued"
    assert all(a["released_at"] is not None for a in rows(ctx, job["id"])["allocations"]), "freed with the loss"
    _refused(api, ctx, people, job["id"], lambda: started(api, people.agent("n1"), job), "queued")
    # A new node takes the job; the old node's late reports about attempt 1 change nothing.
    builders.register(api, people.agent("n2"), "n2", "h100-80gb:1")
    ctx.admitter.run_once()
    moved = get_job(api, people.admin, job["id"])
    assert (moved["state"], moved["attempt"], moved["allocation"][0]["node"]) == ("admitted", 2, "n2")
    _refused(api, ctx, people, job["id"], lambda: started(api, people.agent("n1"), job), "admitted")
    _refused(api, ctx, people, job["id"], lambda: exited(api, people.agent("n1"), job, exit_code=0), "admitted")
    # Nor may n1 claim attempt 2, which it does not hold.
    _refused(api, ctx, people, job["id"],
             lambda: api.post("/v1/agent/started", json=attempt_ref(moved) | {"node_name": "n1"},
                              headers=auth(people.agent("n1"))), "admitted")
    assert moves(events(api, people.admin, job["id"])) == [
        SUBMIT_BY_ADMIN,
        ("admit", "queued", "admitted", "admitter", 1, None),
        ("lose", "admitted", "queued", "service", 1, "node_lost"),
        ("admit", "queued", "admitted", "admitter", 2, None),
    ]
    _replays(ctx, job["id"], "admitted")


def test_a_preempted_job_keeps_its_history_and_runs_again(api, ctx, people) -> None:
    ctx.settings.min_run_s = 0.0  # preemptible at once
    builders.register(api, people.agent("n1"), "n1", "h100-80gb:1")
    victim = _admitted(api, ctx, people, priority_class="experiment")
    assert started(api, people.agent("n1"), victim).status_code == 200
    urgent = submit(api, people.admin, priority_class="production")
    ctx.admitter.run_once()
    stopping = get_job(api, people.admin, victim["id"])
    assert (stopping["state"], stopping["stop_cause"]) == ("running", "preempt")
    assert get_job(api, people.admin, urgent["id"])["state"] == "queued"
    # The victim's agent stops it: it is back in the queue, its capacity goes to the urgent job.
    assert exited(api, people.agent("n1"), victim, exit_code=143, reason="stopped").json() == {
        "state": "queued", "finalized": True}
    requeued = get_job(api, people.admin, victim["id"])
    assert requeued["stop_cause"] is None and requeued["preemptions"] == 1
    assert requeued["submitted_at"] == victim["submitted_at"]
    _refused(api, ctx, people, victim["id"], lambda: exited(api, people.agent("n1"), victim, exit_code=0), "queued")
    ctx.admitter.run_once()
    urgent = get_job(api, people.admin, urgent["id"])
    assert urgent["state"] == "admitted"
    started(api, people.agent("n1"), urgent)
    exited(api, people.agent("n1"), urgent, exit_code=0)
    ctx.admitter.run_once()
    again = get_job(api, people.admin, victim["id"])
    assert (again["state"], again["attempt"]) == ("admitted", 2)
    started(api, people.agent("n1"), again)
    exited(api, people.agent("n1"), again, exit_code=0)
    history = events(api, people.admin, victim["id"])
    assert moves(history) == [
        SUBMIT_BY_ADMIN,
        ("admit", "queued", "admitted", "admitter", 1, None),
        ("start", "admitted", "running", "agent:n1", 1, None),
        ("stop", "running", "running", "admitter", 1, "preempt"),
        ("stopped", "running", "queued", "agent:n1", 1, "preempt"),
        ("admit", "queued", "admitted", "admitter", 2, None),
        ("start", "admitted", "running", "agent:n1", 2, None),
        ("finish", "running", "succeeded", "agent:n1", 2, None),
    ]
    _replays(ctx, victim["id"], "succeeded")
    # Both attempts stay readable: the first ended stopped, the second succeeded.
    attempts = rows(ctx, victim["id"])["attempts"]
    assert [(a["number"], a["state"]) for a in attempts] == [(1, "stopped"), (2, "succeeded")]


def test_a_reclaimed_job_is_requeued_with_its_history(api, ctx, people) -> None:
    builders.register(api, people.agent("n1"), "n1", "h100-80gb:2")
    running_job = _admitted(api, ctx, people)
    admitted_job = submit(api, people.admin)
    ctx.admitter.run_once()
    admitted_job = get_job(api, people.admin, admitted_job["id"])
    assert started(api, people.agent("n1"), running_job).status_code == 200
    answer = api.post("/v1/reclaim", json={"project": "default", "grace_s": 2, "reason": "maintenance"},
                      headers=auth(people.operator))
    assert answer.status_code == 200, answer.text
    # The admitted job is requeued at once; its agent's late claim is refused.
    assert get_job(api, people.admin, admitted_job["id"])["state"] == "queued"
    _refused(api, ctx, people, admitted_job["id"], lambda: started(api, people.agent("n1"), admitted_job), "queued")
    # Reclaiming again while the running one stops adds no event (its first stop stands).
    before = events(api, people.admin, running_job["id"])
    api.post("/v1/reclaim", json={"job": running_job["id"], "grace_s": 2}, headers=auth(people.operator))
    assert events(api, people.admin, running_job["id"]) == before
    exited(api, people.agent("n1"), running_job, exit_code=143, reason="stopped")
    ctx.admitter.run_once()
    again = get_job(api, people.admin, running_job["id"])
    assert (again["state"], again["attempt"]) == ("admitted", 2)
    assert moves(events(api, people.admin, running_job["id"])) == [
        SUBMIT_BY_ADMIN,
        ("admit", "queued", "admitted", "admitter", 1, None),
        ("start", "admitted", "running", "agent:n1", 1, None),
        ("stop", "running", "running", "operator:operator", 1, "reclaim"),
        ("stopped", "running", "queued", "agent:n1", 1, "reclaim"),
        ("admit", "queued", "admitted", "admitter", 2, None),
    ]
    assert moves(events(api, people.admin, admitted_job["id"]))[2] == (
        "stopped", "admitted", "queued", "operator:operator", 1, "reclaim")
    _replays(ctx, running_job["id"], "admitted")


def test_a_reclaim_without_requeue_ends_cancelled(api, ctx, people) -> None:
    builders.register(api, people.agent("n1"), "n1", "h100-80gb:1")
    job = _admitted(api, ctx, people)
    started(api, people.agent("n1"), job)
    api.post("/v1/reclaim", json={"job": job["id"], "requeue": False, "grace_s": 0}, headers=auth(people.operator))
    assert exited(api, people.agent("n1"), job, exit_code=137, reason="stopped").json()["state"] == "cancelled"
    assert moves(events(api, people.admin, job["id"]))[-2:] == [
        ("stop", "running", "running", "operator:operator", 1, "reclaim"),
        ("stopped", "running", "cancelled", "agent:n1", 1, "reclaim"),
    ]
    _refused(api, ctx, people, job["id"], lambda: started(api, people.agent("n1"), job), "cancelled")
    _replays(ctx, job["id"], "cancelled")


def test_holding_a_job_that_is_not_queued_is_refused_with_its_state(api, ctx, people) -> None:
    builders.register(api, people.agent("n1"), "n1", "h100-80gb:1")
    job = _admitted(api, ctx, people)
    # Holding or releasing an admitted job is not in the table.
    _refused(api, ctx, people, job["id"], lambda: api.post(f"/v1/jobs/{job['id']}/hold", headers=auth(people.admin)),
             "admitted")
    started(api, people.agent("n1"), job)
    exited(api, people.agent("n1"), job, exit_code=0)
    _refused(api, ctx, people, job["id"], lambda: api.post(f"/v1/jobs/{job['id']}/hold", headers=auth(people.admin)),
             "succeeded")
