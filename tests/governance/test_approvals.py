"""Approval flow on the real app (TestClient, SQLite and PostgreSQL): a job above its project's threshold waits
in ``pending_approval``; an approver lets it run or denies it (final, with the reason); an approval lapses;
every decision is an audit row and a job event; a member cannot decide, an approver not their own job unless
the policy says so."""

from __future__ import annotations

from datetime import timedelta

import pytest

from queue_service.db.base import utcnow
from queue_service.db.clock import frozen_at
from queue_service.db.models import Role
from queue_service.services import tokens
from tests.api.helpers import auth, get_job, started, submit
from tests.support.builders import register

BIG = {"resources": {"gpus": 2}, "time_limit_s": 8 * 3600}  # 16 GPU-h, over the policy's 10


def _approver(ctx, name: str = "approver_a") -> str:
    with ctx.sessions() as session, session.begin():
        _row, plain = tokens.create(session, role=Role.MEMBER, name=name, projects=["alpha"], approver=True,
                                    actor="test")
    return plain


def _policy(api, actors, **body) -> None:
    made = api.put("/v1/projects/alpha/approval-policy", json={"max_gpu_hours": 10, **body},
                   headers=auth(actors.admin))
    assert made.status_code == 200, made.text


def _beat(api, actors) -> None:
    assert api.post("/v1/agent/heartbeat", json={"node_name": "n1"}, headers=auth(actors.agent)).status_code == 200


def _events(api, token, job_id: str) -> list[tuple[str, str | None, str, str]]:
    rows = api.get(f"/v1/jobs/{job_id}/events", headers=auth(token)).json()["data"]
    return [(e["event"], e["from_state"], e["to_state"], e["reason"]) for e in rows]


def _audit(api, actors, action: str, target: str) -> list[dict]:
    return api.get("/v1/audit", params={"action": action, "target": target}, headers=auth(actors.admin)).json()["data"]


def test_threshold_pending_approve_runs_and_deny_is_final(api, ctx, actors) -> None:
    register(api, actors.agent, "n1", "h100-80gb:2")
    approver = _approver(ctx)
    _policy(api, actors)
    assert _audit(api, actors, "approval_policy.set", "alpha")[0]["after"]["max_gpu_hours"] == 10

    small = submit(api, actors.member_a, project="alpha", resources={"gpus": 1}, time_limit_s=3600)
    assert small["state"] == "queued"  # 1 GPU-h: under the threshold
    api.post(f"/v1/jobs/{small['id']}/cancel", headers=auth(actors.member_a))

    job = submit(api, actors.member_a, project="alpha", **BIG)
    assert job["state"] == "pending_approval"
    assert "asks up to 16 GPU-h" in job["reason"], job["reason"]
    ctx.admitter.run_once()
    assert get_job(api, actors.admin, job["id"])["state"] == "pending_approval"  # the admitter does not see it
    assert [j["id"] for j in api.get("/v1/approvals", headers=auth(approver)).json()["data"]] == [job["id"]]

    # Who may decide: not the plain member, not an operator, not another project's member.
    for token in (actors.member_a, actors.operator):
        refused = api.post(f"/v1/jobs/{job['id']}/approve", json={"reason": "mine"}, headers=auth(token))
        assert refused.status_code == 403, refused.text
    assert api.post(f"/v1/jobs/{job['id']}/approve", headers=auth(actors.member_b)).status_code == 404

    ok = api.post(f"/v1/jobs/{job['id']}/approve", json={"reason": "paper deadline"}, headers=auth(approver))
    assert ok.status_code == 200, ok.text
    assert ok.json()["state"] == "queued" and "paper deadline" in ok.json()["reason"]
    _beat(api, actors)  # a loaded machine may take longer than the 30 s lease to get here
    ctx.admitter.run_once()
    admitted = get_job(api, actors.admin, job["id"])
    assert admitted["state"] == "admitted", admitted["reason"]
    assert started(api, actors.agent, admitted).status_code == 200
    assert get_job(api, actors.admin, job["id"])["state"] == "running"
    assert [e[:3] for e in _events(api, actors.admin, job["id"])][:4] == [
        ("submit", None, "pending_approval"), ("approve", "pending_approval", "queued"),
        ("admit", "queued", "admitted"), ("start", "admitted", "running")]
    [row] = _audit(api, actors, "job.approve", job["id"])
    assert row["actor"] == "member:approver_a" and row["reason"] == "paper deadline"
    assert row["before"] == {"state": "pending_approval"} and row["after"]["state"] == "queued"

    again = api.post(f"/v1/jobs/{job['id']}/approve", headers=auth(approver))  # not pending any more
    assert again.status_code == 409 and again.json()["state"] == "running", again.text

    # Deny: final, with the approver's words; a reason is required.
    other = submit(api, actors.member_a, project="alpha", **BIG)
    empty = api.post(f"/v1/jobs/{other['id']}/deny", json={"reason": ""}, headers=auth(approver))
    assert empty.status_code == 422 and empty.json()["field"] == "reason"
    denied = api.post(f"/v1/jobs/{other['id']}/deny", json={"reason": "use the spot pool"}, headers=auth(approver))
    assert denied.status_code == 200, denied.text
    body = get_job(api, actors.member_a, other["id"])
    assert body["state"] == "denied" and body["reason"] == "denied by member:approver_a: use the spot pool"
    assert body["finished_at"] is not None
    assert _events(api, actors.admin, other["id"])[-1] == ("deny", "pending_approval", "denied", "use the spot pool")
    assert _audit(api, actors, "job.deny", other["id"])[0]["reason"] == "use the spot pool"
    late = api.post(f"/v1/jobs/{other['id']}/approve", headers=auth(actors.admin))
    assert late.status_code == 409 and late.json()["state"] == "denied"
    assert api.post(f"/v1/jobs/{other['id']}/cancel", headers=auth(actors.member_a)).json()["state"] == "denied"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # rules, not storage: the same on PostgreSQL
def test_an_approver_decides_their_own_job_only_when_the_policy_allows(api, ctx, actors) -> None:
    register(api, actors.agent, "n1", "h100-80gb:2")
    approver = _approver(ctx)
    _policy(api, actors)
    mine = submit(api, approver, project="alpha", **BIG)
    assert mine["state"] == "pending_approval"
    refused = api.post(f"/v1/jobs/{mine['id']}/approve", headers=auth(approver))
    assert refused.status_code == 403 and "self-approval" in refused.json()["detail"], refused.text
    assert get_job(api, actors.admin, mine["id"])["state"] == "pending_approval"  # nothing changed
    _policy(api, actors, self_approval=True)
    assert api.post(f"/v1/jobs/{mine['id']}/approve", headers=auth(approver)).json()["state"] == "queued"
    # Cancelling a pending job is the owner's right as before.
    pending = submit(api, actors.member_a, project="alpha", **BIG)
    gone = api.post(f"/v1/jobs/{pending['id']}/cancel", headers=auth(actors.member_a))
    assert gone.status_code == 200 and gone.json()["state"] == "cancelled"


def test_an_approval_that_lapses_before_admission_waits_for_approval_again(api, ctx, actors) -> None:
    register(api, actors.agent, "n1", "h100-80gb:2")
    _policy(api, actors, whole_node=True, max_gpu_hours=None)
    job = submit(api, actors.member_a, project="alpha", resources={"gpus": 2})  # a whole node
    assert job["state"] == "pending_approval" and "a whole node" in job["reason"]
    now = utcnow()
    with frozen_at(now):
        ok = api.post(f"/v1/jobs/{job['id']}/approve", json={"expires_in_s": 60}, headers=auth(actors.admin))
        assert ok.status_code == 200, ok.text
    with frozen_at(now + timedelta(seconds=61)):
        ctx.admitter.run_once()
    lapsed = get_job(api, actors.admin, job["id"])
    assert lapsed["state"] == "pending_approval" and "approval expired" in lapsed["reason"], lapsed
    event, source, target, _reason = _events(api, actors.admin, job["id"])[-1]
    assert (event, source, target) == ("expire", "queued", "pending_approval")
    # Approved again without an end, it runs (the node's lease ran out in the minute skipped: it beats again).
    _beat(api, actors)
    assert api.post(f"/v1/jobs/{job['id']}/approve", headers=auth(actors.admin)).status_code == 200
    ctx.admitter.run_once()
    assert get_job(api, actors.admin, job["id"])["state"] == "admitted"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # input checks: nothing here differs on PostgreSQL
def test_bad_input_is_refused_naming_the_field(api, ctx, actors) -> None:
    queued = submit(api, actors.member_a, project="alpha")
    refused = api.post(f"/v1/jobs/{queued['id']}/approve", headers=auth(actors.admin))
    assert refused.status_code == 409 and refused.json() == {
        "detail": f"job {queued['id']} is queued; only pending_approval jobs can approve", "field": "state",
        "state": "queued"}
    unknown = api.put("/v1/projects/alpha/approval-policy", json={"workloads": ["nonsense"]},
                      headers=auth(actors.admin))
    assert unknown.status_code == 422 and unknown.json()["field"] == "workloads.0", unknown.text
    assert api.put("/v1/projects/alpha/approval-policy", json={}, headers=auth(actors.operator)).status_code == 403
    member_token = api.post("/v1/tokens", json={"role": "viewer", "approver": True}, headers=auth(actors.admin))
    assert member_token.status_code == 422 and member_token.json()["field"] == "approver"
