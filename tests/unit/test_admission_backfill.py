"""Backfill around the blocked head: issue 14's scenario, and gangs that can never fit."""

from __future__ import annotations

from datetime import timedelta

from partitioner.place import Packer
from partitioner.types import Request
from queue_service.admission.cycle import run_cycle
from tests import builders
from tests.api.helpers import auth, job_count
from tests.support.builders import T0, cluster, gpu, node, pending, snapshot
from tests.support.first_fit import FirstFitPacker


def test_a_job_admitted_earlier_in_the_cycle_counts_for_the_heads_reservation() -> None:
    """Issue 14: A (production, 1 GPU, 8 s), HEAD (normal, 2 GPUs), B (normal, 1 GPU, 1000 s) on a 2-GPU node.

    One cycle used to admit A and B (B as backfill) because the reservation ignored A, so HEAD waited
    for B's 1000 s. A's time limit gives the reservation a start: HEAD is reserved from A's end, B waits.
    """
    jobs = [pending("A", Request(gpus=1), priority=1000, time_limit_s=8),
            pending("HEAD", Request(gpus=2), priority=500, at_s=1),
            pending("B", Request(gpus=1), priority=500, at_s=2, time_limit_s=1000)]
    for factory in (Packer, FirstFitPacker):
        result = run_cycle(snapshot(cluster(node("n", gpu("g0"), gpu("g1", index=1))), jobs), factory)
        assert [a.job_id for a in result.admitted] == ["A"], factory
        assert result.reservation is not None and result.reservation.job_id == "HEAD"
        assert result.reservation.start == T0 + timedelta(seconds=8)
        assert result.reservation.placement is not None
        assert "reserved from 12:00:08" in result.waiting["HEAD"], result.waiting
        assert "reserved for job HEAD" in result.waiting["B"], result.waiting


def test_a_short_job_still_backfills_before_the_reservation() -> None:
    jobs = [pending("A", Request(gpus=1), priority=1000, time_limit_s=60),
            pending("HEAD", Request(gpus=3), at_s=1),
            pending("short", Request(gpus=1), at_s=2, time_limit_s=30)]
    nodes = cluster(node("n", gpu("g0"), gpu("g1", index=1), gpu("g2", index=2)))
    result = run_cycle(snapshot(nodes, jobs), Packer)
    assert [(a.job_id, a.backfill) for a in result.admitted] == [("A", False), ("short", True)]
    assert result.reservation is not None and result.reservation.start == T0 + timedelta(seconds=60)


def test_a_job_admitted_without_a_time_limit_leaves_the_reservation_open_ended() -> None:
    jobs = [pending("A", Request(gpus=1), priority=1000),
            pending("HEAD", Request(gpus=2), at_s=1),
            pending("B", Request(gpus=1), at_s=2, time_limit_s=1000)]
    result = run_cycle(snapshot(cluster(node("n", gpu("g0"), gpu("g1", index=1))), jobs), Packer)
    assert [a.job_id for a in result.admitted] == ["A"]
    assert result.reservation is not None and result.reservation.start is None
    assert result.reservation.placement is not None, "it fits once A ends: the GPUs are reserved"
    assert "B" in result.waiting


def test_a_gang_larger_than_the_emptied_cluster_can_never_fit() -> None:
    three = cluster(node("n0", gpu("g0"), gpu("g1", index=1)), node("n1", gpu("g2")))
    gang = Request(gpus=1, replicas=4)
    decision = Packer(three).place(gang)
    assert not hasattr(decision, "replicas") and decision.never, decision
    assert "4 replicas" in decision.reason and "at most 3" in decision.reason, decision.reason
    assert Packer(three).place(Request(gpus=1, replicas=3)).replicas  # exactly the cluster: fits
    two_each = Packer(three).place(Request(gpus=2, replicas=2))
    assert two_each.never and "at most 1" in two_each.reason, two_each
    # Blocks and CPU-bound gangs: 3 × 60 blocks needs 3 GPUs; 3 × 40 CPUs needs 3 nodes of 64.
    assert Packer(three).place(Request(blocks=60, replicas=4)).never
    assert not Packer(three).place(Request(blocks=60, replicas=3)).never
    assert Packer(three).place(Request(cpus_milli=40_000, replicas=3)).never


def test_a_never_fitting_gang_is_set_aside_so_unlimited_jobs_are_not_held_behind_it() -> None:
    three = cluster(node("n0", gpu("g0"), gpu("g1", index=1)), node("n1", gpu("g2")))
    jobs = [pending("gang", Request(gpus=1, replicas=4), priority=1000), pending("plain", Request(gpus=1), at_s=1)]
    result = run_cycle(snapshot(three, jobs), Packer)
    assert "gang" in result.never and "replicas" in result.never["gang"]
    assert [a.job_id for a in result.admitted] == ["plain"] and result.reservation is None


def test_a_gang_that_can_never_fit_is_refused_at_submit_naming_replicas(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:2")
    builders.register(api, actors.agent_for("n2"), "n2", "h100-80gb:1")
    before = job_count(ctx)
    body = builders.job_body(resources={"gpus": 1, "replicas": 4})
    response = api.post("/v1/jobs", json=body, headers=auth(actors.admin))
    assert response.status_code == 422, response.text
    assert "replicas" in response.json()["detail"] and "at most 3" in response.json()["detail"], response.json()
    assert job_count(ctx) == before
    ok = api.post("/v1/jobs", json=builders.job_body(resources={"gpus": 1, "replicas": 3}), headers=auth(actors.admin))
    assert ok.status_code == 201, ok.text
