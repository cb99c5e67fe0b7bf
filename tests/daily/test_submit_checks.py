"""Submit-time checks against the registered cluster: the runtime a node allows is the runtime it gets,
and a node out of service (cordoned, draining) still counts for "could this ever run"."""

from __future__ import annotations

from tests import builders
from tests.api.helpers import auth, get_job


def _agent(actors, name: str) -> str:
    return actors.agent_for(name) if hasattr(actors, "agent_for") else actors.agent


def test_a_host_job_is_refused_where_every_node_runs_only_containers(api, ctx, actors) -> None:
    builders.register(api, _agent(actors, "n1"), "n1", "h100-80gb:1", runtimes=["docker"])
    ctx.feasibility.invalidate()
    host = api.post("/v1/jobs", json=builders.job_body(), headers=auth(actors.admin))
    assert host.status_code == 422, host.text
    assert host.json()["field"] == "image" and "--runtime docker" in host.json()["detail"]
    boxed = api.post("/v1/jobs", json=builders.job_body(image="busybox:latest"), headers=auth(actors.admin))
    assert boxed.status_code == 201, boxed.text


def test_a_container_job_is_refused_where_no_node_has_docker(api, ctx, actors) -> None:
    builders.register(api, _agent(actors, "n1"), "n1", "h100-80gb:1", runtimes=["process"])
    ctx.feasibility.invalidate()
    boxed = api.post("/v1/jobs", json=builders.job_body(image="busybox:latest"), headers=auth(actors.admin))
    assert boxed.status_code == 422 and boxed.json()["field"] == "image", boxed.text
    assert api.post("/v1/jobs", json=builders.job_body(), headers=auth(actors.admin)).status_code == 201


def test_a_job_only_a_cordoned_node_can_hold_waits_instead_of_being_refused(api, ctx, actors) -> None:
    builders.register(api, _agent(actors, "n1"), "n1", "h100-80gb:1")
    builders.register(api, _agent(actors, "big"), "big", "h100-80gb:4")
    assert api.post("/v1/nodes/big/cordon", headers=auth(actors.operator)).status_code == 200
    ctx.feasibility.invalidate()
    made = api.post("/v1/jobs", json=builders.job_body(resources={"gpus": 4}), headers=auth(actors.admin))
    assert made.status_code == 201, made.text
    ctx.admitter.run_once()
    waiting = get_job(api, actors.admin, made.json()["id"])
    assert waiting["state"] == "queued" and "big" in waiting["reason"], waiting
    # Five GPUs on one node exist nowhere, cordoned or not: refused.
    never = api.post("/v1/jobs", json=builders.job_body(resources={"gpus": 5}), headers=auth(actors.admin))
    assert never.status_code == 422 and never.json()["field"] == "resources"


def test_each_job_goes_to_a_node_that_runs_its_kind(api, ctx, actors) -> None:
    # The container node is the bigger one, so a packer that ignored runtimes would pick it for both.
    builders.register(api, _agent(actors, "boxes"), "boxes", "h100-80gb:4", runtimes=["docker"])
    builders.register(api, _agent(actors, "hosts"), "hosts", "h100-80gb:1", runtimes=["process"])
    ctx.feasibility.invalidate()
    host = api.post("/v1/jobs", json=builders.job_body(), headers=auth(actors.admin)).json()
    boxed = api.post("/v1/jobs", json=builders.job_body(image="busybox:latest"), headers=auth(actors.admin)).json()
    second_host = api.post("/v1/jobs", json=builders.job_body(), headers=auth(actors.admin)).json()
    ctx.admitter.run_once()
    assert get_job(api, actors.admin, host["id"])["allocation"][0]["node"] == "hosts"
    assert get_job(api, actors.admin, boxed["id"])["allocation"][0]["node"] == "boxes"
    # The host node is full: the next host job waits although the container node has three GPUs free.
    waiting = get_job(api, actors.admin, second_host["id"])
    assert waiting["state"] == "queued" and waiting["allocation"] == [], waiting
