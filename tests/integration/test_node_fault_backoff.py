"""Infrastructure retries back off and prefer other nodes: a node that fails a job's launch neither
spends the job's retries in a moment nor gets the job straight back while another node fits."""

from __future__ import annotations

import time
from datetime import datetime

from partitioner.place import Packer
from partitioner.types import ClusterState, GpuState, NodeState, Placement, Request
from queue_service.db.models import Job
from tests.support.builders import job_body, register


def _job(api, actors, job_id: str) -> dict:
    return api.get(f"/v1/jobs/{job_id}", headers=actors.headers(actors.admin)).json()


def _node_fault(api, actors, job_id: str) -> str:
    """The job's node claims it, then fails to start it (its log directory is unwritable); returns the node."""
    job = _job(api, actors, job_id)
    node = job["allocation"][0]["node"]
    ref = {"node_name": node, "job_id": job_id, "attempt": job["attempt"], "replica": 0}
    h = actors.headers(actors.agent_for(node))
    assert api.post("/v1/agent/started", json=ref, headers=h).status_code == 200
    body = {**ref, "exit_code": None, "reason": "lost", "node_fault": True,
            "message": "node failure: cannot write the attempt's logs"}
    assert api.post("/v1/agent/exited", json=body, headers=h).status_code == 200
    return node


def _due_now(ctx, job_id: str) -> None:
    """Let the back-off pass (the test does not wait seconds for it)."""
    with ctx.sessions() as session, session.begin():
        session.get(Job, job_id).retry_not_before = datetime(2000, 1, 1)


def test_a_node_that_fails_launches_backs_the_job_off_and_sends_it_elsewhere(ctx, api, actors) -> None:
    register(api, actors.agent_for("n1"), "n1", "h100-80gb:1")
    register(api, actors.agent_for("n2"), "n2", "h100-80gb:1")
    response = api.post("/v1/jobs", json=job_body(), headers=actors.headers(actors.admin))
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    ctx.admitter.run_once()
    bad = _node_fault(api, actors, job_id)
    # Cycles in quick succession (0.2 s) admit nothing: the job waits out its back-off, its retries kept.
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.2:
        ctx.admitter.run_once()
    job = _job(api, actors, job_id)
    assert job["state"] == "queued" and job["attempt"] == 1, job
    assert job["reason"].startswith("backing off after a node failed its launch: next try at"), job["reason"]
    _due_now(ctx, job_id)
    ctx.admitter.run_once()
    job = _job(api, actors, job_id)
    assert job["state"] == "admitted" and job["attempt"] == 2, job
    good = job["allocation"][0]["node"]
    assert good != bad, "the node that failed it is the last choice"
    # That one fails it too: the wait doubles, and with every node avoided the job still runs somewhere.
    _node_fault(api, actors, job_id)
    with ctx.sessions() as session:
        row = session.get(Job, job_id)
        assert row.retry_not_before is not None and len(row.avoid_nodes) == 2
    reason = _job(api, actors, job_id)["reason"]
    assert "(retry 2 of 3); next try in 10 s, preferring another node than" in reason, reason
    _due_now(ctx, job_id)
    ctx.admitter.run_once()
    job = _job(api, actors, job_id)
    assert job["state"] == "admitted" and job["attempt"] == 3, job


def _node(name: str) -> NodeState:
    gpu = GpuState(uuid=f"GPU-{name}", index=0, model="h100-80gb", memory_mib=81559, sm_count=132)
    return NodeState(node_id=name, name=name, cpus_milli=8000, memory_mib=65536, free_cpus_milli=8000,
                     free_memory_mib=65536, gpus=(gpu,))


def test_avoided_nodes_are_a_soft_preference() -> None:
    packer = Packer(ClusterState((_node("a"), _node("b"))))
    plain = packer.place(Request(gpus=1))
    assert isinstance(plain, Placement)
    first = plain.replicas[0].node_id
    other = "b" if first == "a" else "a"
    avoiding = packer.place(Request(gpus=1, avoid_nodes=(first,)))
    assert isinstance(avoiding, Placement) and avoiding.replicas[0].node_id == other
    packer.commit(avoiding)  # the other node is full now: the avoided one is taken rather than nothing
    fallback = packer.place(Request(gpus=1, avoid_nodes=(first,)))
    assert isinstance(fallback, Placement) and fallback.replicas[0].node_id == first
