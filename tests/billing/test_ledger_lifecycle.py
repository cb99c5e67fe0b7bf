"""The ledger follows allocations: opened at the start claim, closed at release, same transaction."""

from __future__ import annotations

from tests import builders
from tests.api.helpers import auth, exited, get_job, started
from tests.billing.helpers import admitted, finish, intervals, running


def test_a_job_that_never_started_costs_nothing(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = admitted(api, ctx, actors.member_a, project="alpha")
    assert intervals(ctx, job["id"]) == []
    assert api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(actors.admin)).status_code == 200
    assert intervals(ctx, job["id"]) == []


def test_start_opens_and_exit_closes_one_interval_per_allocation(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:2")
    job = running(api, ctx, actors, actors.member_a, project="alpha", resources={"gpus": 2, "cpus": 2})
    rows = intervals(ctx, job["id"])
    assert len(rows) == 2 and all(r.ended_at is None for r in rows)
    assert {r.gpu_model for r in rows} == {"h100-80gb"} and sum(r.gpus for r in rows) == 2
    assert sum(r.cpus_milli for r in rows) == 2000
    assert {r.project_name for r in rows} == {"alpha"} and rows[0].node_name == "n1"
    # A repeated claim (at-least-once delivery) opens nothing new.
    assert started(api, actors.agent, job).status_code == 200
    assert len(intervals(ctx, job["id"])) == 2
    finish(api, actors, job)
    rows = intervals(ctx, job["id"])
    assert all(r.ended_at is not None and r.ended_at >= r.started_at for r in rows)


def test_a_refused_report_writes_no_ledger_row(api, ctx, actors) -> None:
    """The claim and the ledger row share a transaction: a refused claim leaves neither."""
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = admitted(api, ctx, actors.member_a, project="alpha")
    assert started(api, actors.agent, job, attempt=2).status_code == 409
    assert intervals(ctx, job["id"]) == []


def test_a_running_cancel_closes_on_the_exit_report(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = running(api, ctx, actors, actors.member_a, project="alpha")
    assert api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(actors.admin)).status_code == 200
    assert intervals(ctx, job["id"])[0].ended_at is None  # still held until the agent stops it
    exited(api, actors.agent, job, exit_code=143, reason="stopped")
    assert intervals(ctx, job["id"])[0].ended_at is not None
    assert get_job(api, actors.admin, job["id"])["state"] == "cancelled"


def test_shared_blocks_are_billed_as_blocks(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    a = running(api, ctx, actors, actors.member_a, project="alpha",
                resources={"blocks": 30, "gpu_memory_mib": 8192})
    b = running(api, ctx, actors, actors.member_b, project="beta",
                resources={"blocks": 50, "gpu_memory_mib": 8192})
    rows = intervals(ctx)
    assert sorted((r.project_name, r.kind, r.blocks, r.gpu_memory_mib) for r in rows) == [
        ("alpha", "blocks", 30, 8192), ("beta", "blocks", 50, 8192)]
    assert rows[0].gpu_uuid == rows[1].gpu_uuid
    finish(api, actors, a)
    finish(api, actors, b)
