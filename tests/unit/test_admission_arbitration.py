"""Reservation, backfill, preemption choice, quotas and fair share (pure, table-driven)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from partitioner.place import Packer
from partitioner.types import Request
from queue_service.admission.cycle import run_cycle
from queue_service.admission.fair_share import UsageInterval, decayed_usage, standings
from queue_service.admission.ordering import ordered
from queue_service.admission.snapshot import PendingJob, Quota, RunningJob
from tests.support.builders import T0, gpus, node, pending, running, snapshot, whole_gpus


def decide(held: list[RunningJob], jobs: list[PendingJob], quotas=None, n_gpus: int = 2):
    """One cycle on node ``n`` with GPUs g0..g{n_gpus-1}, the ``held`` jobs running."""
    return run_cycle(snapshot([node("n", *gpus("g", n_gpus))], jobs, running=held, quotas=quotas), Packer)


def test_head_gets_a_reservation_at_the_earliest_end() -> None:
    result = decide([running("r1", whole_gpus("n", "g0"), ends_in_s=600),
                     running("r2", whole_gpus("n", "g1"), ends_in_s=300)],
                    [pending("head", Request(gpus=1))])
    assert result.reservation.job_id == "head"
    assert result.reservation.start == T0 + timedelta(seconds=300), "the earlier of the two ends"
    assert "reserved from 12:05:00" in result.waiting["head"]


@pytest.mark.parametrize("limit, admitted", [
    (200, True),    # ends before the reservation (600 s): backfills
    (600, True),    # ends exactly when the reservation starts
    (601, False),   # would delay the head
    (None, False),  # no time limit: cannot backfill
])
def test_backfill_only_if_it_ends_before_the_reservation(limit: int | None, admitted: bool) -> None:
    result = decide([running("r1", whole_gpus("n", "g0"), ends_in_s=600)],
                    [pending("head", Request(gpus=2), at_s=0),
                     pending("small", Request(gpus=1), time_limit_s=limit, at_s=1)])
    assert ("small" in {a.job_id for a in result.admitted}) is admitted
    if admitted:
        assert result.admitted[0].backfill
    else:
        assert "head" in result.waiting["small"]


def test_backfill_on_capacity_the_reservation_does_not_need() -> None:
    # Two nodes of two GPUs, one busy GPU on each; the head needs two GPUs on one node.
    held = [running("ra", whole_gpus("a", "a0"), started_s_ago=0, ends_in_s=600),
            running("rb", whole_gpus("b", "b0"), started_s_ago=0, ends_in_s=900)]
    snap = snapshot([node("a", *gpus("a", 2)), node("b", *gpus("b", 2))],
                    [pending("head", Request(gpus=2)), pending("long", Request(gpus=1), time_limit_s=10_000, at_s=1)],
                    running=held)
    result = run_cycle(snap, Packer)
    assert result.reservation.start == T0 + timedelta(seconds=600)
    reserved = {s.gpu_uuid for m in result.reservation.placement.replicas for s in m.slices}
    assert reserved == {"a0", "a1"}
    assert [a.job_id for a in result.admitted] == ["long"]
    assert {s.gpu_uuid for m in result.admitted[0].placement.replicas for s in m.slices} == {"b1"}


def test_preemption_picks_the_fewest_lowest_ranked_most_recent_victims() -> None:
    held = [
        running("old-low", whole_gpus("n", "g0"), priority=100, preemptible=True, started_s_ago=7200),
        running("new-low", whole_gpus("n", "g1"), priority=100, preemptible=True, started_s_ago=600),
        running("mid", whole_gpus("n", "g2"), priority=300, preemptible=True),
        running("prod", whole_gpus("n", "g3"), priority=1000, preemptible=False),
    ]
    result = decide(held, [pending("urgent", Request(gpus=1), priority=1000)], n_gpus=4)
    assert [p.victims for p in result.preemptions] == [("new-low",)]
    two = decide(held, [pending("urgent2", Request(gpus=2), priority=1000)], n_gpus=4)
    assert sorted(two.preemptions[0].victims) == ["new-low", "old-low"]


@pytest.mark.parametrize("case, held, request_priority, expected", [
    ("not preemptible", [running("v", whole_gpus("n", "g0"), priority=100)], 1000, []),
    ("equal rank", [running("v", whole_gpus("n", "g0"), priority=500, preemptible=True)], 500, []),
    ("too fresh", [running("v", whole_gpus("n", "g0"), priority=100, preemptible=True, started_s_ago=10)], 1000, []),
    ("lower and preemptible", [running("v", whole_gpus("n", "g0"), priority=100, preemptible=True)], 1000, [("v",)]),
])
def test_who_may_be_preempted(case: str, held, request_priority: int, expected) -> None:
    result = decide(held, [pending("w", Request(gpus=1), priority=request_priority)], n_gpus=1)
    assert [p.victims for p in result.preemptions] == expected, case


def test_stopping_victims_are_not_preempted_twice() -> None:
    victim = running("v", whole_gpus("n", "g0"), priority=100, preemptible=True, stopping=True, ends_in_s=30)
    result = decide([victim], [pending("w", Request(gpus=1), priority=1000)], n_gpus=1)
    assert result.preemptions == [] and result.reservation.start == T0 + timedelta(seconds=30)


def test_borrowed_capacity_is_reclaimed_for_a_project_under_its_guarantee() -> None:
    quotas = {"owed": Quota(guaranteed=1.0, borrow_limit=0.0), "borrower": Quota(guaranteed=0.0)}
    held = [running("b1", whole_gpus("n", "g0"), project="borrower"),
            running("b2", whole_gpus("n", "g1"), project="borrower")]
    result = decide(held, [pending("w", Request(gpus=1), project="owed")], quotas)
    assert len(result.preemptions) == 1 and "borrowed capacity" in result.preemptions[0].why
    # A project at its guarantee is owed nothing more.
    full = decide([held[0], running("o", whole_gpus("n", "g1"), project="owed")],
                  [pending("w2", Request(gpus=1), project="owed")], quotas)
    assert full.preemptions == [] and "quota" in full.waiting["w2"]


def test_quota_ceiling_blocks_only_that_project() -> None:
    quotas = {"capped": Quota(guaranteed=0.0, borrow_limit=1.0)}
    result = decide([], [pending("c1", Request(gpus=1), project="capped"),
                         pending("c2", Request(gpus=1), project="capped", at_s=1),
                         pending("free", Request(gpus=1), project="other", at_s=2)], quotas)
    assert sorted(a.job_id for a in result.admitted) == ["c1", "free"]
    assert "quota reached" in result.waiting["c2"]


def test_fair_share_orders_equal_priorities_by_decayed_usage() -> None:
    week = 7 * 24 * 3600.0
    usage = decayed_usage([UsageInterval("heavy", 4.0, T0 - timedelta(hours=10), T0),
                           UsageInterval("light", 1.0, T0 - timedelta(hours=1), None)], now=T0, half_life_s=week)
    assert usage["heavy"] > usage["light"] > 0
    # A week-old hour weighs half of this hour.
    recent = decayed_usage([UsageInterval("p", 1.0, T0 - timedelta(hours=1), T0)], now=T0, half_life_s=week)["p"]
    old = decayed_usage([UsageInterval("p", 1.0, T0 - timedelta(seconds=week + 3600), T0 - timedelta(seconds=week))],
                        now=T0, half_life_s=week)["p"]
    assert abs(old / recent - 0.5) < 0.01
    stand = standings(usage, {"heavy": 4.0, "light": 1.0})  # weight 4 makes heavy's standing lower
    jobs = [replace(pending("h", Request(gpus=1), project="heavy"), fair_share=stand["heavy"]),
            replace(pending("l", Request(gpus=1), project="light", at_s=-5), fair_share=stand["light"])]
    first = ordered(jobs)[0].job_id
    assert first == ("h" if stand["heavy"] < stand["light"] else "l")
    assert ordered([replace(jobs[0], priority=1000), jobs[1]])[0].job_id == "h", "priority still comes first"
