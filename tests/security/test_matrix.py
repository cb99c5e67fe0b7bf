"""Role × route matrix: every operation of the OpenAPI document, called by every kind of caller.

Each call's status is classed and compared with the table below, one row per
operation, one letter per caller (``CALLERS`` order):

- ``A`` allowed: the route ran for the caller (2xx, or a 409 / 422 about the state or the body);
- ``D`` 403: the caller's role (or node binding, or project) may not;
- ``H`` 404: the caller may not even see the thing (another project's job, webhook or usage);
- ``U`` 401: no valid token (none, revoked, expired).

An operation missing from the table fails the test: a new route must say
who may call it. Bodies are valid for the schema (so a refusal is the
role's, not the validator's), and the things named in paths exist.
``GPUQ_MATRIX_PRINT=1`` prints the observed table instead of asserting it.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from queue_service.db.base import utcnow
from queue_service.db.models import ApiToken, Role
from queue_service.services import tokens
from tests import builders
from tests.api.helpers import attempt_ref, auth, get_job, submit

CALLERS = ("admin", "operator", "viewer", "member_a", "member_b", "agent", "agent_n2", "unbound_agent", "revoked",
           "expired", "anonymous")

# One letter per caller: admin operator viewer member_a member_b agent agent_n2 unbound_agent revoked expired anonymous.
# The path's job is alpha's (submitted by member_a) on n1; the agent's token is n1's. Admins may act as any node's
# agent; an agent lists no jobs (200, empty); node listings, prices and classes are open to every valid token.
TABLE: dict[tuple[str, str], str] = {
    ("post", "/v1/jobs"): "AADADDDDUUU",
    ("get", "/v1/jobs"): "AAAAAAAAUUU",
    ("post", "/v1/jobs/batch"): "AADADDDDUUU",
    ("get", "/v1/jobs/{job_id}"): "AAAAHHHHUUU",
    ("patch", "/v1/jobs/{job_id}"): "AADDDDDDUUU",
    ("get", "/v1/jobs/{job_id}/events"): "AAAAHHHHUUU",
    ("post", "/v1/jobs/{job_id}/cancel"): "AADAHHHHUUU",
    ("get", "/v1/jobs/{job_id}/logs"): "AAAAHHHHUUU",
    ("post", "/v1/jobs/{job_id}/hold"): "AADDDDDDUUU",
    ("post", "/v1/jobs/{job_id}/release"): "AADDDDDDUUU",
    ("post", "/v1/jobs/{job_id}/top"): "AADDDDDDUUU",
    ("post", "/v1/reclaim"): "AADDDDDDUUU",
    ("post", "/v1/nodes/{name}/drain"): "AADDDDDDUUU",
    ("post", "/v1/nodes/{name}/cordon"): "AADDDDDDUUU",
    ("post", "/v1/nodes/{name}/uncordon"): "AADDDDDDUUU",
    ("put", "/v1/projects/{name}/quota"): "AADDDDDDUUU",
    ("get", "/v1/quotas"): "AAAAAAAAUUU",
    ("get", "/v1/priority-classes"): "AAAAAAAAUUU",
    # governance: workload classes, coexistence, allow-lists (admins change them)
    ("get", "/v1/workload-classes"): "AAAAAAAAUUU",
    ("put", "/v1/workload-classes/{name}"): "ADDDDDDDUUU",
    ("get", "/v1/coexistence"): "AAAAAAAAUUU",
    ("put", "/v1/coexistence"): "ADDDDDDDUUU",
    ("get", "/v1/projects/{name}/allowlists"): "AAAAHHHHUUU",
    ("put", "/v1/projects/{name}/allowlists"): "ADDDDDDDUUU",
    ("put", "/v1/priority-classes/{name}"): "AADDDDDDUUU",
    ("get", "/v1/audit"): "AAADDDDDUUU",
    ("get", "/v1/projects"): "AAAAAAAAUUU",
    ("post", "/v1/projects"): "ADDDDDDDUUU",
    ("get", "/v1/tokens"): "ADDDDDDDUUU",
    ("post", "/v1/tokens"): "ADDDDDDDUUU",
    ("get", "/v1/tokens/me"): "AAAAAAAAUUU",
    ("delete", "/v1/tokens/{token_id}"): "ADDDDDDDUUU",
    ("get", "/v1/nodes"): "AAAAAAAAUUU",
    ("post", "/v1/nodes/{name}/accept"): "ADDDDDDDUUU",
    ("get", "/v1/health"): "AAAAAAAAAAA",
    ("post", "/v1/agent/register"): "ADDDDADDUUU",
    ("post", "/v1/agent/heartbeat"): "ADDDDADDUUU",
    ("post", "/v1/agent/adopt"): "ADDDDADDUUU",
    ("post", "/v1/agent/started"): "ADDDDADDUUU",
    ("post", "/v1/agent/exited"): "ADDDDADDUUU",
    ("post", "/v1/agent/logs"): "ADDDDADDUUU",
    ("post", "/v1/agent/samples"): "ADDDDADDUUU",
    ("get", "/v1/projects/{project}/usage"): "AAAAHHHHUUU",
    ("get", "/v1/usage"): "AAAAAAAAUUU",
    ("get", "/v1/usage/efficiency"): "AAAAAAAAUUU",
    ("get", "/v1/share"): "AAAAAAAAUUU",
    ("get", "/v1/jobs/{job_id}/efficiency"): "AAAAHHHHUUU",
    ("get", "/v1/prices"): "AAAAAAAAUUU",
    ("post", "/v1/prices"): "ADDDDDDDUUU",
    ("post", "/v1/projects/{project}/webhooks"): "AADAHHHHUUU",
    ("get", "/v1/projects/{project}/webhooks"): "AAAAHHHHUUU",
    ("delete", "/v1/projects/{project}/webhooks/{hook_id}"): "AADAHHHHUUU",
    ("get", "/v1/projects/{project}/webhooks/{hook_id}/deliveries"): "AAAAHHHHUUU",
    # approvals: admins and the project's approver tokens decide (member_a is a plain member); policies and
    # budgets are set by admins; capacity is asked by the project's members and granted or refused by admins
    ("post", "/v1/jobs/{job_id}/approve"): "ADDDHHHHUUU",
    ("post", "/v1/jobs/{job_id}/deny"): "ADDDHHHHUUU",
    ("get", "/v1/approvals"): "AAAAAAAAUUU",
    ("get", "/v1/projects/{project}/approval-policy"): "AAAAHHHHUUU",
    ("put", "/v1/projects/{project}/approval-policy"): "ADDDDDDDUUU",
    ("get", "/v1/projects/{project}/budget"): "AAAAHHHHUUU",
    ("put", "/v1/projects/{project}/budget"): "ADDDDDDDUUU",
    ("delete", "/v1/projects/{project}/budget"): "ADDDDDDDUUU",
    ("post", "/v1/capacity-requests"): "AADAHDDDUUU",
    ("get", "/v1/capacity-requests"): "AAAAAAAAUUU",
    ("post", "/v1/capacity-requests/{request_id}/grant"): "ADDDDDDDUUU",
    ("post", "/v1/capacity-requests/{request_id}/refuse"): "ADDDDDDDUUU",
}


def _class(status: int) -> str:
    if status == 401:
        return "U"
    if status == 403:
        return "D"
    if status == 404:
        return "H"
    assert status < 500, status
    return "A"


def _tokens(ctx, actors) -> dict[str, str | None]:
    """Every caller's bearer token (None: no header)."""
    made: dict[str, str | None] = {k: getattr(actors, k) for k in ("admin", "operator", "viewer", "member_a",
                                                                  "member_b", "agent")}
    made["agent_n2"] = actors.agent_for("n2")
    plain = tokens.new_token()
    with ctx.sessions() as session, session.begin():
        session.add(ApiToken(name="unbound", role=Role.AGENT.value, token_hash=tokens.hash_token(plain), projects=[]))
        revoked, made["revoked"] = tokens.create(session, role=Role.ADMIN, name="revoked", actor="test")
        expired, made["expired"] = tokens.create(session, role=Role.ADMIN, name="expired", actor="test")
        session.flush()
        tokens.revoke(session, token_id=revoked.id, actor="test")
        session.execute(update(ApiToken).where(ApiToken.id == expired.id)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    made["unbound_agent"] = plain
    made["anonymous"] = None
    return made


class World:
    """The things paths name, made fresh where a call consumes them (a token to revoke, a webhook to delete)."""

    def __init__(self, api, ctx, actors) -> None:
        self.api, self.ctx, self.actors = api, ctx, actors
        builders.register(api, actors.agent, "n1", "h100-80gb:2")
        builders.register(api, actors.agent_for("n2"), "n2")
        job = submit(api, actors.member_a, project="alpha", resources={"gpus": 1}, env={"K": "v"})
        ctx.admitter.run_once()
        self.job = get_job(api, actors.admin, job["id"])
        assert self.job["allocation"][0]["node"] == "n1", self.job
        self.projects = 0

    def hook(self) -> str:
        made = self.api.post("/v1/projects/alpha/webhooks", json={"url": "http://127.0.0.1:9/hook"},
                             headers=auth(self.actors.admin))
        assert made.status_code == 201, made.text
        return made.json()["id"]

    def capacity_request(self) -> str:
        made = self.api.post("/v1/capacity-requests", json=self.body("post", "/v1/capacity-requests"),
                             headers=auth(self.actors.admin))
        assert made.status_code == 201, made.text
        return made.json()["id"]

    def token_id(self) -> str:
        made = self.api.post("/v1/tokens", json={"role": "viewer", "name": "victim"}, headers=auth(self.actors.admin))
        return made.json()["id"]

    def path(self, template: str) -> str:
        values = {"job_id": self.job["id"], "name": "n1", "project": "alpha"}
        if "{hook_id}" in template:
            values["hook_id"] = self.hook()
        if "{token_id}" in template:
            values["token_id"] = self.token_id()
        if "{request_id}" in template:  # approvals: a fresh pending capacity request of alpha's
            values["request_id"] = self.capacity_request()
        if template.startswith("/v1/projects/{name}"):
            values["name"] = "alpha"
        if template.startswith(("/v1/priority-classes/", "/v1/workload-classes/")):
            values["name"] = "matrix"
        if template.startswith("/v1/nodes/{name}/") and not template.endswith("/accept"):
            values["name"] = "n2"  # drain, cordon, uncordon: keep n1 schedulable for the agent calls
        return template.format(**values)

    def body(self, method: str, template: str) -> Any:
        ref = attempt_ref(self.job)
        if template == "/v1/projects" and method == "post":
            self.projects += 1
            return {"name": f"matrix{self.projects}"}
        bodies: dict[tuple[str, str], Any] = {
            ("post", "/v1/jobs"): builders.job_body(project="alpha"),
            ("post", "/v1/jobs/batch"): {"jobs": [builders.job_body(project="alpha")]},
            ("patch", "/v1/jobs/{job_id}"): {"priority": 10},
            ("post", "/v1/reclaim"): {"project": "beta", "reason": "matrix"},
            ("put", "/v1/projects/{name}/quota"): {"guaranteed": 0},
            ("put", "/v1/priority-classes/{name}"): {"value": 1},
            ("put", "/v1/workload-classes/{name}"): {},
            ("put", "/v1/coexistence"): {"node": {"batch": ["*"]}},
            ("put", "/v1/projects/{name}/allowlists"): {},
            ("post", "/v1/tokens"): {"role": "viewer", "name": "matrix"},
            ("post", "/v1/agent/register"): {"inventory": builders.inventory("n1", "h100-80gb:2").to_dict()},
            ("post", "/v1/agent/heartbeat"): {"node_name": "n1"},
            ("post", "/v1/agent/adopt"): {"node_name": "n1", "attempts": [ref]},
            ("post", "/v1/agent/started"): ref,
            ("post", "/v1/agent/exited"): ref | {"exit_code": 0, "reason": "exited"},
            ("post", "/v1/agent/logs"): ref | {"stream": "stdout", "offset": 0, "data_b64": "aGk="},
            ("post", "/v1/agent/samples"): {"node_name": "n1", "samples": []},
            ("post", "/v1/prices"): {"gpu_model": "h100-80gb", "gpu_hour": 1.0},
            ("post", "/v1/projects/{project}/webhooks"): {"url": "http://127.0.0.1:9/hook"},
            # approvals
            ("put", "/v1/projects/{project}/budget"): {"amount": 1000},
            ("post", "/v1/capacity-requests"): {"project": "alpha", "gpus": 1, "until": "2099-01-01T00:00:00Z"},
        }
        if (method, template) in bodies:
            return bodies[(method, template)]
        return {"reason": "matrix"} if method in ("post", "put", "patch") else None


def test_every_route_answers_every_caller_as_the_table_says(api, ctx, actors) -> None:
    spec = api.get("/openapi.json").json()
    operations = [(m, p) for p, ops in spec["paths"].items() for m in ops]
    assert len(operations) >= 40
    world = World(api, ctx, actors)
    callers = _tokens(ctx, actors)
    observed: dict[tuple[str, str], str] = {}
    for method, template in operations:
        row = ""
        for caller in CALLERS:
            token = callers[caller]
            response = api.request(method.upper(), world.path(template), json=world.body(method, template),
                                   headers=auth(token) if token else {})
            row += _class(response.status_code)
        observed[(method, template)] = row
    if os.environ.get("GPUQ_MATRIX_PRINT"):
        for (method, template), row in observed.items():
            print(f'    ({method!r}, {template!r}): {row!r},')
        return
    missing = sorted(set(observed) - set(TABLE))
    assert not missing, f"routes without a row in TABLE (say who may call them): {missing}"
    wrong = {op: (TABLE[op], row) for op, row in observed.items() if TABLE[op] != row}
    assert not wrong, "\n".join(f"{m.upper()} {p}: expected {e}, got {g} ({' '.join(CALLERS)})"
                                for (m, p), (e, g) in wrong.items())
