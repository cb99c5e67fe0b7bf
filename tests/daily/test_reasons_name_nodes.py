"""Wait reasons name nodes and GPUs by name, never by internal id; a cluster of cordoned nodes says so."""

from __future__ import annotations

from partitioner.types import ClusterState, NodeState
from queue_service.admission.cycle import describe, describe_never
from tests import builders
from tests.api.helpers import auth, get_job, started, submit


def _agent(actors, node_name: str) -> str:
    """An agent token for ``node_name`` (bound per node where tokens are; the one agent token where not)."""
    agent_for = getattr(actors, "agent_for", None)
    return agent_for(node_name) if agent_for else actors.agent


def _node_ids(api, token: str) -> list[str]:
    return [n["id"] for n in api.get("/v1/nodes", headers=auth(token)).json()]


def test_a_reservation_reason_names_the_node_and_gpu(api, ctx, actors) -> None:
    agent = _agent(actors, "node-a")
    builders.register(api, agent, "node-a", "h100-80gb:1")
    first = submit(api, actors.admin, time_limit_s=3600)
    ctx.admitter.run_once()
    started(api, agent, get_job(api, actors.admin, first["id"]))
    waiting = submit(api, actors.admin, time_limit_s=600)
    ctx.admitter.run_once()
    reason = get_job(api, actors.admin, waiting["id"])["reason"]
    assert "1× h100-80gb (gpu0) on node-a reserved from" in reason, reason
    assert not any(node_id in reason for node_id in _node_ids(api, actors.admin)), reason


def test_no_schedulable_node_names_each_and_why(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    builders.register(api, _agent(actors, "n2"), "n2", "h100-80gb:1")
    assert api.post("/v1/nodes/n1/cordon", json={"reason": "bios"}, headers=auth(actors.admin)).status_code == 200
    assert api.post("/v1/nodes/n2/drain", json={"reason": "rma"}, headers=auth(actors.admin)).status_code == 200
    job = submit(api, actors.admin)
    ctx.admitter.run_once()
    reason = get_job(api, actors.admin, job["id"])["reason"]
    assert "no schedulable node: n1 cordoned, n2 draining" in reason, reason
    assert "the cluster has no nodes" not in reason


def test_a_never_fit_says_which_nodes_it_did_not_count(api, ctx, actors) -> None:
    builders.register(api, _agent(actors, "big"), "big", "h100-80gb:4")
    builders.register(api, _agent(actors, "small"), "small", "h100-80gb:1")
    job = submit(api, actors.admin, resources={"gpus": 4})
    assert api.post("/v1/nodes/big/cordon", json={}, headers=auth(actors.admin)).status_code == 200
    ctx.admitter.run_once()
    reason = get_job(api, actors.admin, job["id"])["reason"]
    assert reason.endswith("(not counting big cordoned)"), reason


def test_describe_is_pure_and_falls_back_to_the_id() -> None:
    named = ClusterState((NodeState("id-1", 1000, 1024, 1000, 1024, name="gpu-host"),))
    assert describe_never("x", named) == "x"
    assert describe_never("x", ClusterState((), unschedulable=("n1 down",))) == "no schedulable node: n1 down"
    assert named == ClusterState((NodeState("id-1", 1000, 1024, 1000, 1024, name="renamed"),))  # names not compared
    assert describe(None, named) == "capacity"
