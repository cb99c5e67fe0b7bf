"""Admission through the partitioner on a real database: GPUs change mode only when idle,
MIG instances are carved in valid slots, and nothing is held twice."""

from __future__ import annotations

from sqlalchemy import select

from partitioner.mig import validate_layout
from queue_service.db.models import Allocation, Gpu
from tests.builders import job_body, register


def _submit(api, actors, resources: dict) -> str:
    response = api.post("/v1/jobs", json=job_body(resources=resources), headers=actors.headers(actors.admin))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _finish(api, actors, job_id: str) -> None:
    job = api.get(f"/v1/jobs/{job_id}", headers=actors.headers(actors.admin)).json()
    node = job["allocation"][0]["node"]
    ref = {"node_name": node, "job_id": job_id, "attempt": job["attempt"], "replica": 0}
    h = actors.headers(actors.agent_for(node))
    assert api.post("/v1/agent/started", json=ref, headers=h).status_code == 200
    assert api.post("/v1/agent/exited", json={**ref, "exit_code": 0, "reason": "exited"}, headers=h).status_code == 200


def test_modes_follow_demand(ctx, api, actors) -> None:
    register(api, actors.agent_for("mig-node"), "mig-node", "a100-40gb:1")
    mig = [_submit(api, actors, {"mig": "3g.20gb"}) for _ in range(3)]
    ctx.admitter.run_once()
    states = {j: api.get(f"/v1/jobs/{j}", headers=actors.headers(actors.admin)).json() for j in mig}
    admitted = [j for j, s in states.items() if s["state"] == "admitted"]
    assert len(admitted) == 2, "an A100-40GB holds two 3g.20gb instances"
    starts = sorted(states[j]["allocation"][0]["mig_start"] for j in admitted)
    assert starts == [0, 4]
    waiting = next(s for j, s in states.items() if j not in admitted)
    assert waiting["state"] == "queued" and waiting["reason"]
    with ctx.sessions() as session:
        gpu = session.scalars(select(Gpu)).one()
        assert gpu.mode == "mig"
        assert validate_layout(gpu.model, [(m["profile"], m["start"]) for m in gpu.mig_layout]) == []

    # A blocks job cannot take the GPU while MIG instances are held...
    blocks = _submit(api, actors, {"blocks": 20, "gpu_memory_mib": 4096})
    ctx.admitter.run_once()
    assert api.get(f"/v1/jobs/{blocks}", headers=actors.headers(actors.admin)).json()["state"] == "queued"
    # ...and every MIG job, in order, gets an instance as earlier ones end.
    for job_id in admitted:
        _finish(api, actors, job_id)
    ctx.admitter.run_once()
    third = api.get(f"/v1/jobs/{waiting['id']}", headers=actors.headers(actors.admin)).json()
    assert third["state"] == "admitted"
    _finish(api, actors, waiting["id"])
    # Now idle: the GPU is re-carved for the waiting blocks job. It stays in MIG mode (leaving it needs a
    # GPU reset on real hardware): the blocks go to a shared MIG instance, served by one MPS daemon.
    ctx.admitter.run_once()
    job = api.get(f"/v1/jobs/{blocks}", headers=actors.headers(actors.admin)).json()
    assert job["state"] == "admitted", job["reason"]
    with ctx.sessions() as session:
        gpu = session.scalars(select(Gpu)).one()
        assert gpu.mode == "mig"
        shared = [m for m in gpu.mig_layout if m.get("shared")]
        assert len(shared) == 1, gpu.mig_layout
        assert validate_layout(gpu.model, [(m["profile"], m["start"]) for m in gpu.mig_layout]) == []
        live = session.scalars(select(Allocation).where(Allocation.released_at.is_(None))).all()
        assert [(a.kind, a.blocks, a.mig_start) for a in live] == [("blocks", 20, shared[0]["start"])]


def test_whole_gpu_job_waits_for_shared_gpu_to_drain(ctx, api, actors) -> None:
    register(api, actors.agent_for("one-gpu"), "one-gpu", "h100-80gb:1")
    share = _submit(api, actors, {"blocks": 50, "gpu_memory_mib": 1024})
    ctx.admitter.run_once()
    whole = _submit(api, actors, {"gpus": 1})
    later_share = _submit(api, actors, {"blocks": 10, "gpu_memory_mib": 1024})
    ctx.admitter.run_once()
    get = lambda j: api.get(f"/v1/jobs/{j}", headers=actors.headers(actors.admin)).json()  # noqa: E731
    assert get(whole)["state"] == "queued"
    # Strict order: the later blocks job would fit beside the first, but must not overtake the head.
    assert get(later_share)["state"] == "queued" and whole in get(later_share)["reason"]
    _finish(api, actors, share)
    ctx.admitter.run_once()
    assert get(whole)["state"] == "admitted"
    assert get(whole)["allocation"][0]["kind"] == "gpu"


def test_real_gpus_keep_their_mig_mode(ctx, api, actors) -> None:
    """On NVML-probed GPUs MIG mode belongs to the driver: a non-MIG GPU is never re-carved as MIG."""
    from dataclasses import replace

    from tests.builders import inventory

    inv = replace(inventory("real", "a100-40gb:1"), gpu_source="nvml")
    assert api.post("/v1/agent/register", json={"inventory": inv.to_dict()},
                    headers=actors.headers(actors.agent_for("real"))).status_code == 200
    mig = _submit(api, actors, {"mig": "3g.20gb"})
    blocks = _submit(api, actors, {"blocks": 10, "gpu_memory_mib": 1000})
    ctx.admitter.run_once()
    job = api.get(f"/v1/jobs/{mig}", headers=actors.headers(actors.admin)).json()
    assert job["state"] == "queued"
    assert api.get(f"/v1/jobs/{blocks}", headers=actors.headers(actors.admin)).json()["state"] == "queued", \
        "strict order: the MIG job is the head and is not overtaken"
    with ctx.sessions() as session:
        assert session.scalars(select(Gpu)).one().mode == "exclusive"
