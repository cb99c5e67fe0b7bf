"""Job arrays (--array 0-9%2): tasks share an array id, see their index, and never exceed the limit."""

from __future__ import annotations

import pytest

from queue_service.services.arrays import ArraySpecError, parse
from tests import builders
from tests.api.helpers import auth, exited, get_job, started, submit


@pytest.mark.parametrize(("spec", "indices", "limit"), [
    ("0-3", (0, 1, 2, 3), None),
    ("0-9:3%2", (0, 3, 6, 9), 2),
    ("1,5,3-4%1", (1, 3, 4, 5), 1),
    ("7", (7,), None),
])
def test_array_specs(spec: str, indices: tuple[int, ...], limit: int | None) -> None:
    parsed = parse(spec)
    assert parsed.indices == indices and parsed.limit == limit


@pytest.mark.parametrize("spec", ["", "a-b", "5-1", "0-9%0", "0-9%x", "0-2000", "1-3:0", "0-99999999"])
def test_bad_array_specs(spec: str) -> None:
    with pytest.raises(ArraySpecError):
        parse(spec)


def _array_tasks(api, token: str, array_id: str) -> list[dict]:
    jobs = api.get("/v1/jobs", params={"limit": 500}, headers=auth(token)).json()["data"]
    return sorted((j for j in jobs if j["array_id"] == array_id), key=lambda j: j["array_index"])


def test_an_array_never_has_more_live_tasks_than_its_limit(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:8")
    first = submit(api, actors.admin, array="0-5%2")
    assert first["array_id"] == first["id"] and first["array_index"] == 0 and first["array_limit"] == 2
    tasks = _array_tasks(api, actors.admin, first["id"])
    assert [t["array_index"] for t in tasks] == [0, 1, 2, 3, 4, 5]
    most_live = 0
    for _ in range(10):
        ctx.admitter.run_once()
        tasks = _array_tasks(api, actors.admin, first["id"])
        live = [t for t in tasks if t["state"] in ("admitted", "running")]
        most_live = max(most_live, len(live))
        assert len(live) <= 2, [(t["array_index"], t["state"]) for t in tasks]
        waiting = [t for t in tasks if t["state"] == "queued"]
        assert all("at most 2 task(s) at once" in t["reason"] for t in waiting)
        for task in live:  # the lowest indices went first
            assert all(task["array_index"] < w["array_index"] for w in waiting)
            started(api, actors.agent, task)
            exited(api, actors.agent, get_job(api, actors.admin, task["id"]), exit_code=0)
        if all(t["state"] == "succeeded" for t in _array_tasks(api, actors.admin, first["id"])):
            break
    assert most_live == 2
    assert all(t["state"] == "succeeded" for t in _array_tasks(api, actors.admin, first["id"]))


def test_each_task_is_told_its_index(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:2")
    first = submit(api, actors.admin, array="3,5")
    ctx.admitter.run_once()
    refs = [{"job_id": t["id"], "attempt": 1, "replica": 0} for t in _array_tasks(api, actors.admin, first["id"])]
    kept = api.post("/v1/agent/adopt", json={"node_name": "n1", "attempts": refs}, headers=auth(actors.agent))
    specs = sorted((k["spec"] for k in kept.json()["keep"]), key=lambda s: s["array_index"])
    assert [(s["array_id"], s["array_index"]) for s in specs] == [(first["id"], 3), (first["id"], 5)]


def test_a_bad_array_spec_names_the_field(api, actors) -> None:
    response = api.post("/v1/jobs", json=builders.job_body(array="0-9%0"), headers=auth(actors.admin))
    assert response.status_code == 422 and response.json()["field"] == "array", response.text
