"""One grace rule: a job's class's grace (the operator's value from the database) on every path.

Regression: a class set with ``gpuq class set urgent --grace 120`` still got
``LaunchSpec.grace_s == 10`` (the default), so its time-limit stop came after
10 s instead of 120; preemption, cancel and reclaim must agree with it too.
"""

from __future__ import annotations

from tests import builders
from tests.api.helpers import auth, get_job, started, submit


def _set_class(api, token: str, name: str, *, grace_s: float, value: int = 700, preemptible: bool = False) -> None:
    response = api.put(f"/v1/priority-classes/{name}", json={"value": value, "preemptible": preemptible,
                                                              "grace_s": grace_s}, headers=auth(token))
    assert response.status_code == 200, response.text


def _kept_spec(api, token: str, job: dict) -> dict:
    """The launch spec the service hands an agent that re-adopts the attempt (what a launch carries)."""
    ref = {"job_id": job["id"], "attempt": job["attempt"], "replica": 0}
    answer = api.post("/v1/agent/adopt", json={"node_name": "n1", "attempts": [ref]}, headers=auth(token))
    assert answer.status_code == 200, answer.text
    [kept] = answer.json()["keep"]
    return kept["spec"]


def test_an_operator_defined_class_grace_reaches_the_time_limit(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    _set_class(api, actors.operator, "urgent", grace_s=120)
    job = submit(api, actors.admin, priority_class="urgent", time_limit_s=60)
    ctx.admitter.run_once()
    job = get_job(api, actors.admin, job["id"])
    assert started(api, actors.agent, job).status_code == 200
    assert _kept_spec(api, actors.agent, job)["grace_s"] == 120
    # Changing the class later changes what the next launch carries: the database is read, not a copy.
    _set_class(api, actors.operator, "urgent", grace_s=7)
    assert _kept_spec(api, actors.agent, job)["grace_s"] == 7


def test_cancel_and_reclaim_use_the_class_grace(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:2")
    _set_class(api, actors.operator, "urgent", grace_s=45)
    first = submit(api, actors.admin, priority_class="urgent")
    second = submit(api, actors.admin, priority_class="urgent")
    ctx.admitter.run_once()
    for job in (first, second):
        assert started(api, actors.agent, get_job(api, actors.admin, job["id"])).status_code == 200
    cancelled = api.post(f"/v1/jobs/{first['id']}/cancel", headers=auth(actors.admin)).json()
    assert cancelled["stop_cause"] == "cancel" and "grace 45 s" in cancelled["reason"]
    answer = api.post("/v1/reclaim", json={"job": second["id"]}, headers=auth(actors.operator))
    assert answer.status_code == 200 and answer.json()["grace_s"] is None
    reclaimed = get_job(api, actors.admin, second["id"])
    assert reclaimed["stop_cause"] == "reclaim" and "grace 45 s" in reclaimed["reason"]
