"""Capacity requests on the real app: a member asks, an admin grants (a guarantee that ends by itself, shown in the
quota list) or refuses with a reason; a request in the past or above the cluster is refused naming the field."""

from __future__ import annotations

from datetime import timedelta

import pytest

from queue_service.db.base import utcnow
from queue_service.db.clock import frozen_at
from tests.api.helpers import auth
from tests.support.builders import register


def _iso(at) -> str:
    return at.isoformat() + "Z"


def _quota(api, token, project: str) -> dict:
    return next(q for q in api.get("/v1/quotas", headers=auth(token)).json() if q["project"] == project)


def test_a_granted_request_is_a_guarantee_for_its_period_only(api, ctx, actors) -> None:
    register(api, actors.agent, "n1", "h100-80gb:8")
    now = utcnow()
    with frozen_at(now):
        asked = api.post("/v1/capacity-requests", json={
            "project": "alpha", "gpus": 6, "from": _iso(now), "until": _iso(now + timedelta(days=2)),
            "reason": "camera-ready runs"}, headers=auth(actors.member_a))
        assert asked.status_code == 201, asked.text
        request = asked.json()
        assert request["status"] == "pending" and request["requested_by"] == "member:member_a"
        assert api.post(f"/v1/capacity-requests/{request['id']}/grant",
                        headers=auth(actors.operator)).status_code == 403
        granted = api.post(f"/v1/capacity-requests/{request['id']}/grant", json={"reason": "ok for two days"},
                           headers=auth(actors.admin))
        assert granted.status_code == 200 and granted.json()["status"] == "granted", granted.text
        quota = _quota(api, actors.member_a, "alpha")
        assert quota["guaranteed"] == 6 and quota["granted"] == 6
        assert quota["granted_until"].startswith(_iso(now + timedelta(days=2))[:19])
        twice = api.post(f"/v1/capacity-requests/{request['id']}/refuse", json={"reason": "no"},
                         headers=auth(actors.admin))
        assert twice.status_code == 409, twice.text
        # A second grant would take the guarantees past the cluster (6 + 4 > 8).
        more = api.post("/v1/capacity-requests", json={"project": "beta", "gpus": 4,
                                                       "until": _iso(now + timedelta(days=1))},
                        headers=auth(actors.member_b)).json()
        over = api.post(f"/v1/capacity-requests/{more['id']}/grant", headers=auth(actors.admin))
        assert over.status_code == 422 and over.json()["field"] == "gpus", over.text
        refused = api.post(f"/v1/capacity-requests/{more['id']}/refuse", json={"reason": "alpha has it this week"},
                           headers=auth(actors.admin))
        assert refused.json()["status"] == "refused" and refused.json()["decision_reason"] == "alpha has it this week"
    with frozen_at(now + timedelta(days=2, seconds=1)):  # the period is over: the guarantee ended by itself
        assert all(q["project"] != "alpha" or q["granted"] == 0 for q in
                   api.get("/v1/quotas", headers=auth(actors.admin)).json())
    actions = [r["action"] for r in api.get("/v1/audit", headers=auth(actors.admin)).json()["data"]
               if r["action"].startswith("capacity.")]
    assert actions == ["capacity.refuse", "capacity.request", "capacity.grant", "capacity.request"]
    listed = api.get("/v1/capacity-requests", headers=auth(actors.member_b)).json()
    assert [r["project"] for r in listed] == ["beta"]  # a member sees their projects' requests only


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # input checks: nothing here differs on PostgreSQL
def test_a_request_in_the_past_or_above_the_cluster_is_refused_naming_the_field(api, ctx, actors) -> None:
    register(api, actors.agent, "n1", "h100-80gb:2")
    now = utcnow()
    cases = [
        ({"gpus": 1, "until": _iso(now - timedelta(hours=1))}, "until"),
        ({"gpus": 1, "from": _iso(now - timedelta(days=1)), "until": _iso(now + timedelta(days=1))}, "from"),
        ({"gpus": 1, "from": _iso(now + timedelta(days=2)), "until": _iso(now + timedelta(days=1))}, "until"),
        ({"gpus": 3, "until": _iso(now + timedelta(days=1))}, "gpus"),
        ({"gpus": 0, "until": _iso(now + timedelta(days=1))}, "gpus"),
        ({"gpus": 1}, "until"),
    ]
    for body, field in cases:
        refused = api.post("/v1/capacity-requests", json={"project": "alpha", **body}, headers=auth(actors.member_a))
        assert refused.status_code == 422 and refused.json()["field"] == field, (body, refused.text)
    other = api.post("/v1/capacity-requests", json={"project": "beta", "gpus": 1,
                                                    "until": _iso(now + timedelta(days=1))},
                     headers=auth(actors.member_a))
    assert other.status_code == 404 and other.json()["field"] == "project"  # not theirs to see
    unknown = api.post("/v1/capacity-requests", json={"project": "nope", "gpus": 1,
                                                      "until": _iso(now + timedelta(days=1))},
                       headers=auth(actors.admin))
    assert unknown.status_code == 422 and unknown.json()["field"] == "project"
    assert api.get("/v1/capacity-requests", headers=auth(actors.admin)).json() == []  # nothing was stored
