"""Per-class default and maximum time limits (Slurm's DefaultTime / MaxTime)."""

from __future__ import annotations

from tests.api.helpers import auth, submit


def test_a_class_default_time_limit_is_given_and_its_maximum_enforced(api, actors) -> None:
    response = api.put("/v1/priority-classes/batchy", headers=auth(actors.operator), json={
        "value": 300, "grace_s": 5, "default_time_limit_s": 3600, "max_time_limit_s": 7200})
    assert response.status_code == 200, response.text
    assert response.json()["default_time_limit_s"] == 3600
    listed = {c["name"]: c for c in api.get("/v1/priority-classes", headers=auth(actors.admin)).json()}
    assert listed["batchy"]["max_time_limit_s"] == 7200
    assert submit(api, actors.admin, priority_class="batchy")["time_limit_s"] == 3600
    assert submit(api, actors.admin, priority_class="batchy", time_limit_s=60)["time_limit_s"] == 60
    too_long = api.post("/v1/jobs", headers=auth(actors.admin), json={
        "command": ["true"], "resources": {"gpus": 0}, "priority_class": "batchy", "time_limit_s": 7201})
    assert too_long.status_code == 422 and too_long.json()["field"] == "time_limit_s"
    assert "batchy" in too_long.json()["detail"]
    bad = api.put("/v1/priority-classes/odd", headers=auth(actors.operator), json={
        "value": 1, "default_time_limit_s": 10, "max_time_limit_s": 5})
    assert bad.status_code == 422
