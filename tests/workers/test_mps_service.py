"""The service's side of MPS status: heartbeats store it, /v1/nodes shows it, the admitter honours it.

A GPU whose MPS daemon failed takes no block job (the job goes to a GPU whose
daemon is ready, or waits with "MPS on <GPU> failed: …").
"""

from __future__ import annotations

import pytest

from tests import builders
from tests.api.helpers import auth, get_job, submit

BLOCKS = {"blocks": 20, "gpu_memory_mib": 4096}


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """SQLite only: a JSON column and a heartbeat field (the migration is checked on both databases elsewhere)."""
    return sqlite_url


def beat(api, token, mps: dict | None) -> None:
    body = {"node_name": "n1"} | ({"mps": mps} if mps is not None else {})
    response = api.post("/v1/agent/heartbeat", json=body, headers=auth(token))
    assert response.status_code == 200, response.text


def gpus(api, token) -> list[dict]:
    return api.get("/v1/nodes", headers=auth(token)).json()[0]["gpus"]


def test_mps_status_is_stored_shown_and_a_failed_gpu_takes_no_block_job(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:2")
    g0, g1 = (g["uuid"] for g in gpus(api, actors.viewer))
    assert [g["mps"] for g in gpus(api, actors.viewer)] == [None, None], "nothing reported yet"
    beat(api, actors.agent, {g0: "failed: no CUDA-capable device is detected", g1: "ready"})
    shown = gpus(api, actors.viewer)
    assert [g["mps"] for g in shown] == ["failed: no CUDA-capable device is detected", "ready"]
    beat(api, actors.agent, None)  # an agent that says nothing of MPS leaves the status as it was
    assert gpus(api, actors.viewer)[0]["mps"].startswith("failed: ")
    bad = api.post("/v1/agent/heartbeat", json={"node_name": "n1", "mps": {g0: "fine"}}, headers=auth(actors.agent))
    assert bad.status_code == 422 and "mps" in bad.text, bad.text

    first = submit(api, actors.admin, resources=BLOCKS)
    for _ in range(3):
        ctx.admitter.run_once()
    first = get_job(api, actors.admin, first["id"])
    assert first["state"] == "admitted", first
    assert [a["gpu_uuid"] for a in first["allocation"]] == [g1], "placed on the GPU whose daemon is ready"

    beat(api, actors.agent, {g0: "failed: no CUDA-capable device is detected", g1: "failed: daemon died"})
    second = submit(api, actors.admin, resources=BLOCKS)
    for _ in range(3):
        ctx.admitter.run_once()
    second = get_job(api, actors.admin, second["id"])
    assert second["state"] == "queued", second
    assert "MPS on GPU-" in second["reason"] and "failed:" in second["reason"], second["reason"]
    beat(api, actors.agent, {g1: "ready"})  # g0 left out: its daemon stopped, no status
    assert [g["mps"] for g in gpus(api, actors.viewer)] == [None, "ready"]
    for _ in range(3):
        ctx.admitter.run_once()
    assert get_job(api, actors.admin, second["id"])["state"] == "admitted", "ready again: it runs"

