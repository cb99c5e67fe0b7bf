"""POST /v1/jobs/{id}/cancel in every state."""

from __future__ import annotations

from tests import builders
from tests.api.helpers import auth, exited, get_job, gpus_of, started, submit


def _cancel(api, token: str, job_id: str):
    return api.post(f"/v1/jobs/{job_id}/cancel", headers=auth(token))


def test_cancel_queued_is_immediate(api, ctx, actors) -> None:
    job = submit(api, actors.member_a, project="alpha")
    response = _cancel(api, actors.member_a, job["id"])
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["state"] == "cancelled" and answer["finished_at"] is not None
    assert "cancelled by" in answer["reason"]
    # A later cycle does not resurrect it, even with room for it.
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    assert ctx.admitter.run_once().admitted == 0
    assert get_job(api, actors.admin, job["id"])["state"] == "cancelled"


def test_cancel_admitted_frees_the_allocation_at_once(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = submit(api, actors.admin)
    waiting = submit(api, actors.admin)
    ctx.admitter.run_once()
    job = get_job(api, actors.admin, job["id"])
    assert job["state"] == "admitted"
    [gpu] = gpus_of(api, actors.admin, "n1")
    assert gpu["held_whole"] and gpu["free_blocks"] == 0 and gpu["jobs"] == [job["id"]]

    response = _cancel(api, actors.operator, job["id"])
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"
    [gpu] = gpus_of(api, actors.admin, "n1")
    assert not gpu["held_whole"] and gpu["free_blocks"] == 100 and gpu["free_memory_mib"] == gpu["memory_mib"]
    assert gpu["jobs"] == []
    # The agent's late start claim is refused, and the freed GPU goes to the next job.
    assert started(api, actors.agent, job).status_code == 409
    ctx.admitter.run_once()
    assert get_job(api, actors.admin, waiting["id"])["state"] == "admitted"


def test_cancel_running_waits_for_the_agent(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = submit(api, actors.member_a, project="alpha")
    ctx.admitter.run_once()
    job = get_job(api, actors.admin, job["id"])
    assert started(api, actors.agent, job).status_code == 200

    response = _cancel(api, actors.member_a, job["id"])
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["state"] == "running"
    assert "cancel requested" in answer["reason"]
    assert answer["allocation"], "a running job keeps its allocation until the agent reports exit"
    assert gpus_of(api, actors.admin, "n1")[0]["held_whole"]
    # Cancelling again is harmless.
    assert _cancel(api, actors.member_a, job["id"]).json()["state"] == "running"
    # The agent stops it and reports; only then is it cancelled and the GPU free.
    response = exited(api, actors.agent, job, exit_code=143, reason="stopped", message="SIGTERM")
    assert response.status_code == 200, response.text
    assert response.json() == {"state": "cancelled", "finalized": True}
    final = get_job(api, actors.member_a, job["id"])
    assert final["state"] == "cancelled" and final["finished_at"] is not None
    assert "stopping" not in final["reason"]
    assert not gpus_of(api, actors.admin, "n1")[0]["held_whole"]


def test_cancel_of_a_final_job_changes_nothing(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = submit(api, actors.admin)
    ctx.admitter.run_once()
    job = get_job(api, actors.admin, job["id"])
    started(api, actors.agent, job)
    assert exited(api, actors.agent, job, exit_code=0).status_code == 200
    before = get_job(api, actors.admin, job["id"])
    assert before["state"] == "succeeded"
    response = _cancel(api, actors.admin, job["id"])
    assert response.status_code == 200
    assert response.json() == before
    assert get_job(api, actors.admin, job["id"]) == before


def test_viewer_may_not_cancel(api, actors) -> None:
    job = submit(api, actors.admin)
    response = _cancel(api, actors.viewer, job["id"])
    assert response.status_code == 403, response.text
    assert get_job(api, actors.admin, job["id"])["state"] == "queued"
    # Neither may an agent, nor a member of another project (who is told it does not exist).
    assert _cancel(api, actors.agent, job["id"]).status_code in (403, 404)
    assert _cancel(api, actors.member_b, job["id"]).status_code == 404
    assert get_job(api, actors.admin, job["id"])["state"] == "queued"
