"""Dependencies (Slurm's --dependency): waiting with the reason, afterok / afternotok / afterany chains,
a dependency that can never be met cancels the job (kill_invalid_depend), bad dependencies refused."""

from __future__ import annotations

from tests import builders
from tests.api.helpers import auth, exited, get_job, started, submit


def _events(api, token: str, job_id: str) -> list[tuple[str, str | None, str, str]]:
    data = api.get(f"/v1/jobs/{job_id}/events", headers=auth(token)).json()["data"]
    return [(e["event"], e["from_state"], e["to_state"], e["actor"]) for e in data]


def _run(api, ctx, actors, job_id: str, *, exit_code: int = 0) -> None:
    """Admit, start and end one job through the agent routes."""
    ctx.admitter.run_once()
    job = get_job(api, actors.admin, job_id)
    assert job["state"] == "admitted", job
    assert started(api, actors.agent, job).status_code == 200
    assert exited(api, actors.agent, job, exit_code=exit_code).status_code == 200


def test_afterok_chain_waits_then_runs(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:2")
    first = submit(api, actors.admin)
    second = submit(api, actors.admin, depends_on=[{"job_id": first["id"]}])
    third = submit(api, actors.admin, depends_on=[{"job_id": second["id"], "condition": "ok"}])
    assert second["depends_on"] == [{"job_id": first["id"], "condition": "ok"}]
    ctx.admitter.run_once()
    # Room for all three, yet only the first is admitted: the others wait, saying for what.
    assert get_job(api, actors.admin, first["id"])["state"] == "admitted"
    waiting = get_job(api, actors.admin, second["id"])
    assert waiting["state"] == "queued" and waiting["reason"] == f"waiting for job {first['id']} to succeed"
    assert get_job(api, actors.admin, third["id"])["state"] == "queued"
    job = get_job(api, actors.admin, first["id"])
    started(api, actors.agent, job)
    exited(api, actors.agent, job, exit_code=0)
    _run(api, ctx, actors, second["id"])
    _run(api, ctx, actors, third["id"])
    assert get_job(api, actors.admin, third["id"])["state"] == "succeeded"


def test_afternotok_runs_on_failure_and_is_cancelled_on_success(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    failing = submit(api, actors.admin)
    cleanup = submit(api, actors.admin, depends_on=[{"job_id": failing["id"], "condition": "notok"}])
    fine = submit(api, actors.admin, depends_on=[{"job_id": failing["id"], "condition": "ok"}])
    anyway = submit(api, actors.admin, depends_on=[{"job_id": failing["id"], "condition": "any"}])
    _run(api, ctx, actors, failing["id"], exit_code=3)
    ctx.admitter.run_once()
    cancelled = get_job(api, actors.admin, fine["id"])
    assert cancelled["state"] == "cancelled"
    assert cancelled["reason"].startswith(f"dependency can never be met: job {failing['id']} is failed")
    assert _events(api, actors.admin, fine["id"])[-1] == ("cancel", "queued", "cancelled", "service")
    # notok and any are both met by the failure; they run one after the other on the one GPU.
    states = {get_job(api, actors.admin, j["id"])["state"] for j in (cleanup, anyway)}
    assert states == {"admitted", "queued"}


def test_a_cancelled_dependency_cancels_the_chain(api, ctx, actors) -> None:
    first = submit(api, actors.admin)
    second = submit(api, actors.admin, depends_on=[{"job_id": first["id"]}])
    third = submit(api, actors.admin, depends_on=[{"job_id": second["id"]}])
    api.post(f"/v1/jobs/{first['id']}/cancel", headers=auth(actors.admin))
    ctx.admitter.run_once()
    ctx.admitter.run_once()
    assert get_job(api, actors.admin, second["id"])["state"] == "cancelled"
    assert get_job(api, actors.admin, third["id"])["state"] == "cancelled"


def test_bad_dependencies_are_refused_and_queue_nothing(api, ctx, actors) -> None:
    other = submit(api, actors.member_b, project="beta")
    mine = submit(api, actors.member_a, project="alpha")
    cases = [
        ([{"job_id": "doesnotexist"}], "depends_on.0.job_id"),
        ([{"job_id": other["id"]}], "depends_on.0.job_id"),  # another project's job, for a member
        ([{"job_id": mine["id"]}, {"job_id": mine["id"]}], "depends_on.1.job_id"),
        ([{"job_id": mine["id"], "condition": "later"}], "depends_on.0.condition"),
    ]
    before = len(api.get("/v1/jobs", headers=auth(actors.admin)).json()["data"])
    for deps, field in cases:
        response = api.post("/v1/jobs", json=builders.job_body(project="alpha", depends_on=deps),
                            headers=auth(actors.member_a))
        assert response.status_code == 422, (deps, response.text)
        assert response.json()["field"] == field, response.json()
    assert len(api.get("/v1/jobs", headers=auth(actors.admin)).json()["data"]) == before
