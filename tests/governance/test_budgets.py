"""Monthly budgets on the real app, with the database clock set (``db.clock.frozen_at``): a spent ``hard`` budget
holds the project's queued jobs with the figures, the next month lets them run; an ``approval`` budget sends a job
that would overspend it to an approver; a budget below zero is refused."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from queue_service.db.billing_models import UsageInterval
from queue_service.db.clock import frozen_at
from queue_service.db.models import Project
from tests.api.helpers import auth, get_job, submit
from tests.support.builders import register

DEC_20 = datetime(2026, 12, 20, 12, 0)
JAN_1 = datetime(2027, 1, 1, 0, 10)


def _spent(ctx, project: str, hours: float) -> None:
    """A running job's open ledger interval: one whole GPU held for ``hours`` by ``DEC_20``."""
    with ctx.sessions() as session, session.begin():
        project_id = session.query(Project).filter_by(name=project).one().id
        session.add(UsageInterval(
            allocation_id=f"a-{project}-{hours}", job_id="old-job", attempt=1, replica=0, project_id=project_id,
            project_name=project, node_id="n0", node_name="n0", kind="gpu", gpu_uuid="GPU-old",
            gpu_model="h100-80gb", slot="gpu", gpus=1, started_at=DEC_20 - timedelta(hours=hours), ended_at=None))


def _beat(api, actors) -> None:
    assert api.post("/v1/agent/heartbeat", json={"node_name": "n1"}, headers=auth(actors.agent)).status_code == 200


def test_a_spent_hard_budget_holds_jobs_until_next_month(api, ctx, actors) -> None:
    _spent(ctx, "alpha", 412)
    with frozen_at(DEC_20):
        register(api, actors.agent, "n1", "h100-80gb:2")
        made = api.put("/v1/projects/alpha/budget", json={"amount": 400, "unit": "gpu_hours", "mode": "hard",
                                                          "reason": "Q4 allowance"}, headers=auth(actors.admin))
        assert made.status_code == 200, made.text
        assert made.json()["exhausted"] is True and made.json()["used"] == 412
        job = submit(api, actors.member_a, project="alpha")
        other = submit(api, actors.member_b, project="beta")  # another project is not held
        ctx.admitter.run_once()
        held = get_job(api, actors.member_a, job["id"])
        assert held["state"] == "queued"
        assert held["reason"] == "budget for 2026-12 exhausted: 412 of 400 GPU-h"
        assert get_job(api, actors.member_b, other["id"])["state"] == "admitted"
        seen = api.get("/v1/projects/alpha/budget", headers=auth(actors.member_a)).json()
        assert seen["summary"] == "budget for 2026-12 exhausted: 412 of 400 GPU-h"
    [row] = api.get("/v1/audit", params={"action": "budget.set", "target": "alpha"},
                    headers=auth(actors.admin)).json()["data"]
    assert row["after"] == {"amount": 400, "unit": "gpu_hours", "mode": "hard"} and row["reason"] == "Q4 allowance"
    with frozen_at(JAN_1):
        _beat(api, actors)
        ctx.admitter.run_once()
        assert get_job(api, actors.member_a, job["id"])["state"] == "admitted"
        events = api.get(f"/v1/jobs/{job['id']}/events", headers=auth(actors.admin)).json()["data"]
        assert [e["event"] for e in events] == ["submit", "admit"]
        # The month is new: only the ten minutes of January count (the old job still runs).
        assert api.get("/v1/projects/alpha/budget", headers=auth(actors.admin)).json()["used"] < 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # rules, not storage: the same on PostgreSQL
def test_an_approval_budget_sends_an_overspending_job_to_an_approver(api, ctx, actors) -> None:
    _spent(ctx, "alpha", 395)
    with frozen_at(DEC_20):
        register(api, actors.agent, "n1", "h100-80gb:2")
        made = api.put("/v1/projects/alpha/budget", json={"amount": 400, "mode": "approval"},
                       headers=auth(actors.admin))
        assert made.status_code == 200, made.text
        fits = submit(api, actors.member_a, project="alpha", time_limit_s=4 * 3600)  # 4 GPU-h: 399 of 400
        assert fits["state"] == "queued"
        over = submit(api, actors.member_a, project="alpha", time_limit_s=6 * 3600)
        assert over["state"] == "pending_approval"
        assert over["reason"] == ("waiting for approval: budget for 2026-12 used: 395 of 400 GPU-h; "
                                  "this job may use up to 6 GPU-h more")
        unbounded = submit(api, actors.member_a, project="alpha")
        assert unbounded["state"] == "pending_approval" and "without a time limit" in unbounded["reason"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # input checks: nothing here differs on PostgreSQL
def test_a_budget_below_zero_or_of_no_known_kind_is_refused(api, ctx, actors) -> None:
    for body, field in (({"amount": -1}, "amount"), ({"amount": 5, "unit": "euros"}, "unit"),
                        ({"amount": 5, "mode": "soft"}, "mode")):
        refused = api.put("/v1/projects/alpha/budget", json=body, headers=auth(actors.admin))
        assert refused.status_code == 422 and refused.json()["field"] == field, refused.text
    assert api.put("/v1/projects/alpha/budget", json={"amount": 5}, headers=auth(actors.operator)).status_code == 403
    assert api.put("/v1/projects/nope/budget", json={"amount": 5}, headers=auth(actors.admin)).status_code == 422
    assert api.get("/v1/projects/alpha/budget", headers=auth(actors.admin)).json()["amount"] is None
    assert api.get("/v1/projects/alpha/budget", headers=auth(actors.member_b)).status_code == 404
