"""Operator controls over REST: who may act, what each action does, one audit row each,
and no way to edit or delete the audit log."""

from __future__ import annotations

from sqlalchemy import func, select

from queue_service.db.models import AuditEntry
from tests.api.helpers import auth, get_job, started, submit
from tests.builders import register


def audit_rows(ctx) -> int:
    with ctx.sessions() as session:
        return session.scalar(select(func.count()).select_from(AuditEntry))


def test_members_and_viewers_may_not_operate(api, actors) -> None:
    job = submit(api, actors.admin)
    calls = [
        ("PATCH", f"/v1/jobs/{job['id']}", {"priority": 5}),
        ("POST", f"/v1/jobs/{job['id']}/hold", {}),
        ("POST", f"/v1/jobs/{job['id']}/top", {}),
        ("POST", "/v1/reclaim", {"job": job["id"]}),
        ("PUT", "/v1/projects/alpha/quota", {"guaranteed": 0}),
        ("PUT", "/v1/priority-classes/urgent", {"value": 2000}),
    ]
    for token in (actors.member_a, actors.viewer, actors.agent):
        for method, path, body in calls:
            response = api.request(method, path, json=body, headers=auth(token))
            assert response.status_code == 403, (method, path, response.text)
    assert api.get("/v1/audit", headers=auth(actors.member_a)).status_code == 403
    assert api.get("/v1/audit", headers=auth(actors.viewer)).status_code == 200


def test_each_action_writes_one_audit_row(ctx, api, actors) -> None:
    register(api, actors.agent, "n1", "h100-80gb:1")
    job = submit(api, actors.admin)
    other = submit(api, actors.admin)
    before = audit_rows(ctx)
    h = auth(actors.operator)
    assert api.patch(f"/v1/jobs/{job['id']}", json={"priority": 7, "reason": "r"}, headers=h).status_code == 200
    assert api.post(f"/v1/jobs/{job['id']}/hold", json={"reason": "wait"}, headers=h).json()["held"] is True
    assert api.post(f"/v1/jobs/{job['id']}/release", headers=h).json()["held"] is False
    assert api.post(f"/v1/jobs/{other['id']}/top", headers=h).json()["priority_override"] == 501
    assert api.post("/v1/nodes/n1/cordon", headers=h).json()["cordoned"] is True
    assert api.post("/v1/nodes/n1/uncordon", headers=h).json()["cordoned"] is False
    assert api.put("/v1/projects/alpha/quota", json={"guaranteed": 1}, headers=h).status_code == 200
    assert api.put("/v1/priority-classes/urgent", json={"value": 2000}, headers=h).status_code == 200
    assert api.post("/v1/reclaim", json={"project": "beta", "grace_s": 1}, headers=h).json()["jobs"] == []
    assert audit_rows(ctx) - before == 9
    rows = api.get("/v1/audit", params={"limit": 9}, headers=h).json()["data"]
    assert [r["action"] for r in rows] == ["reclaim.project", "priority_class.set", "quota.set", "node.uncordon",
                                           "node.cordon", "job.top", "job.release", "job.hold", "job.priority"]
    priority_row = rows[-1]
    assert priority_row["actor"] == "operator:operator" and priority_row["reason"] == "r"
    assert priority_row["before"]["priority_override"] is None and priority_row["after"]["priority_override"] == 7


def test_the_audit_log_cannot_be_edited(api, actors) -> None:
    for method in ("PUT", "PATCH", "DELETE"):
        response = api.request(method, "/v1/audit", headers=auth(actors.admin))
        assert response.status_code == 405, method
    assert not [r for r in api.get("/openapi.json").json()["paths"] if r.startswith("/v1/audit/")]


def test_held_jobs_are_not_admitted_until_released(ctx, api, actors) -> None:
    register(api, actors.agent, "n1", "h100-80gb:1")
    job = submit(api, actors.admin)
    api.post(f"/v1/jobs/{job['id']}/hold", headers=auth(actors.admin))
    ctx.admitter.run_once()
    held = get_job(api, actors.admin, job["id"])
    assert held["state"] == "queued" and held["held"] and "held by" in held["reason"]
    api.post(f"/v1/jobs/{job['id']}/release", headers=auth(actors.admin))
    ctx.admitter.run_once()
    assert get_job(api, actors.admin, job["id"])["state"] == "admitted"
    conflict = api.post(f"/v1/jobs/{job['id']}/hold", headers=auth(actors.admin))
    assert conflict.status_code == 409 and "only queued jobs can hold" in conflict.json()["detail"]
    assert conflict.json()["state"] == "admitted"


def test_reclaim_stops_running_jobs_and_requeues_them(ctx, api, actors) -> None:
    register(api, actors.agent, "n1", "h100-80gb:2")
    jobs = [submit(api, actors.admin) for _ in range(2)]
    ctx.admitter.run_once()
    running = get_job(api, actors.admin, jobs[0]["id"])
    assert started(api, actors.agent, running).status_code == 200
    admitted_only = get_job(api, actors.admin, jobs[1]["id"])
    answer = api.post("/v1/reclaim", json={"node": "n1", "grace_s": 2, "reason": "maintenance"},
                      headers=auth(actors.operator))
    assert answer.status_code == 200 and sorted(answer.json()["jobs"]) == sorted(j["id"] for j in jobs)
    # The admitted (not started) job is back in the queue at once; the running one stops first.
    assert get_job(api, actors.admin, admitted_only["id"])["state"] == "queued"
    stopping = get_job(api, actors.admin, running["id"])
    assert stopping["state"] == "running" and "reclaimed by operator:operator: maintenance" in stopping["reason"]
    ref = {"node_name": "n1", "job_id": running["id"], "attempt": running["attempt"], "replica": 0}
    api.post("/v1/agent/exited", json={**ref, "exit_code": 143, "reason": "stopped"}, headers=auth(actors.agent))
    requeued = get_job(api, actors.admin, running["id"])
    assert requeued["state"] == "queued" and requeued["submitted_at"] == running["submitted_at"]
    assert api.get("/v1/nodes", headers=auth(actors.admin)).json()[0]["cordoned"] is True


def test_reclaim_without_requeue_cancels(ctx, api, actors) -> None:
    register(api, actors.agent, "n1", "h100-80gb:1")
    job = submit(api, actors.admin)
    ctx.admitter.run_once()
    live = get_job(api, actors.admin, job["id"])
    started(api, actors.agent, live)
    api.post("/v1/reclaim", json={"job": job["id"], "requeue": False, "grace_s": 0}, headers=auth(actors.admin))
    ref = {"node_name": "n1", "job_id": job["id"], "attempt": live["attempt"], "replica": 0}
    api.post("/v1/agent/exited", json={**ref, "exit_code": 137, "reason": "stopped"}, headers=auth(actors.agent))
    assert get_job(api, actors.admin, job["id"])["state"] == "cancelled"


def test_bad_operator_input(ctx, api, actors) -> None:
    register(api, actors.agent, "n1", "h100-80gb:2")
    h = auth(actors.admin)
    before = audit_rows(ctx)
    cases = [
        ("POST", "/v1/reclaim", {"job": "a", "node": "b"}, 422, "exactly one"),
        ("POST", "/v1/reclaim", {}, 422, "exactly one"),
        ("POST", "/v1/reclaim", {"node": "nope"}, 404, "not found"),
        ("POST", "/v1/reclaim", {"job": "x", "grace_s": -1}, 422, "grace_s"),
        ("PATCH", "/v1/jobs/nope", {"priority": 1}, 404, "not found"),
        ("PATCH", "/v1/jobs/nope", {"priority": "high"}, 422, "priority"),
        ("PUT", "/v1/projects/alpha/quota", {"guaranteed": 3}, 422, "add up to 3"),
        ("PUT", "/v1/projects/nope/quota", {"guaranteed": 1}, 422, "unknown project"),
        ("PUT", "/v1/projects/alpha/quota", {"guaranteed": -1}, 422, "guaranteed"),
        ("POST", "/v1/nodes/nope/drain", {}, 404, "not found"),
    ]
    for method, path, body, status, text in cases:
        response = api.request(method, path, json=body, headers=h)
        assert response.status_code == status and text in response.text, (method, path, body, response.text)
    assert audit_rows(ctx) == before, "refused actions write nothing"


def test_operator_priority_classes_apply_to_submissions(api, actors) -> None:
    h = auth(actors.admin)
    assert api.post("/v1/jobs", json={"command": ["true"], "resources": {"gpus": 0}, "priority_class": "urgent"},
                    headers=h).status_code == 422
    api.put("/v1/priority-classes/urgent", json={"value": 2000, "preemptible": False, "grace_s": 5}, headers=h)
    job = api.post("/v1/jobs", json={"command": ["true"], "resources": {"gpus": 0}, "priority_class": "urgent"},
                   headers=h)
    assert job.status_code == 201 and job.json()["priority"] == 2000
    names = [c["name"] for c in api.get("/v1/priority-classes", headers=h).json()]
    assert names[0] == "urgent" and {"production", "normal", "experiment"} <= set(names)
