"""A running job whose process is gone is lost, never left ``running``; ``gpuq cancel`` of such a job ends it."""

from __future__ import annotations

from queue_service.services import agents
from tests import builders
from tests.api.helpers import attempt_ref, auth, get_job, started, submit


def _running(api, ctx, actors) -> dict:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = submit(api, actors.admin)
    ctx.admitter.run_once()
    job = get_job(api, actors.admin, job["id"])
    assert started(api, actors.agent, job).status_code == 200
    return get_job(api, actors.admin, job["id"])


def _beat(api, actors, running: list[dict]) -> None:
    answer = api.post("/v1/agent/heartbeat", json={"node_name": "n1", "running": running}, headers=auth(actors.agent))
    assert answer.status_code == 200, answer.text


def test_an_attempt_the_agent_no_longer_runs_is_lost_then_cancel_ends_it(api, ctx, actors, monkeypatch) -> None:
    monkeypatch.setattr(agents, "VANISHED_AFTER_S", 0.0)
    monkeypatch.setattr(ctx.settings, "heartbeat_interval_s", 0.0)
    job = _running(api, ctx, actors)
    _beat(api, actors, [attempt_ref(job)])
    _beat(api, actors, [attempt_ref(job)])
    assert get_job(api, actors.admin, job["id"])["state"] == "running", "listed: still running"
    _beat(api, actors, [])  # one heartbeat without it is no proof (it may have been sent before the start)
    assert get_job(api, actors.admin, job["id"])["state"] == "running"
    _beat(api, actors, [])
    lost = get_job(api, actors.admin, job["id"])
    assert lost["state"] == "queued" and "process is gone" in lost["reason"], lost
    assert api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(actors.admin)).json()["state"] == "cancelled"


def test_cancelling_a_running_job_whose_process_is_gone_ends_it(api, ctx, actors, monkeypatch) -> None:
    monkeypatch.setattr(agents, "VANISHED_AFTER_S", 0.0)
    monkeypatch.setattr(ctx.settings, "heartbeat_interval_s", 0.0)
    job = _running(api, ctx, actors)
    answer = api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(actors.admin)).json()
    assert answer["state"] == "running", answer  # a stop went out; no agent will ever report it
    _beat(api, actors, [])
    _beat(api, actors, [])
    assert get_job(api, actors.admin, job["id"])["state"] == "cancelled"


def test_heartbeats_that_arrived_before_the_start_claim_never_lose_it(api, ctx, actors, monkeypatch) -> None:
    """Under load a heartbeat sent before the launch reached the agent is handled after the claim: it leaves the
    job out, but it arrived before the claim was committed, so it is no evidence (judged by handling time, two
    of them lost a running job)."""
    monkeypatch.setattr(agents, "VANISHED_AFTER_S", 0.0)
    monkeypatch.setattr(ctx.settings, "heartbeat_interval_s", 0.0)
    job = _running(api, ctx, actors)
    for _ in range(3):  # each arrived an hour ago, long before the claim, and waited here since
        with ctx.sessions() as session, session.begin():
            agents.heartbeat(session, node_name="n1", running=[], settings=ctx.settings, fleet=ctx.fleet,
                             waited_s=3600.0)
    assert get_job(api, actors.admin, job["id"])["state"] == "running"
    _beat(api, actors, [])  # heartbeats that arrived after the claim still are evidence
    _beat(api, actors, [])
    assert get_job(api, actors.admin, job["id"])["state"] == "queued"
