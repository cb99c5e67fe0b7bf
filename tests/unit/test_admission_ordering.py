"""The documented total order of pending jobs (admission/ordering.py)."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queue_service.admission.ordering import ordered, sort_key
from queue_service.admission.snapshot import PendingJob
from tests.support.builders import pending


def ids(jobs) -> list[str]:
    return [j.job_id for j in jobs]


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        pytest.param(
            [pending("low", priority=100), pending("high", priority=1000), pending("mid", priority=500)],
            ["high", "mid", "low"], id="class value, highest first",
        ),
        pytest.param(
            [pending("late", at_s=10), pending("early", at_s=1)],
            ["early", "late"], id="same priority: earlier submit first",
        ),
        pytest.param(
            [pending("b"), pending("a"), pending("c")],
            ["a", "b", "c"], id="same priority and time: id tie-break",
        ),
        pytest.param(
            [pending("prod", priority=1000), pending("boosted", priority=100, priority_override=5000)],
            ["boosted", "prod"], id="override above every class beats class value",
        ),
        pytest.param(
            [pending("demoted", priority=1000, priority_override=0), pending("exp", priority=100)],
            ["exp", "demoted"], id="override below every class ranks last",
        ),
        pytest.param(
            [pending("early-low", priority=100, at_s=0), pending("late-high", priority=500, at_s=99)],
            ["late-high", "early-low"], id="priority beats submit time",
        ),
        pytest.param(
            [pending("b", at_s=0), pending("a", at_s=1)],
            ["b", "a"], id="submit time beats id",
        ),
        pytest.param(
            [pending("x", priority=100, priority_override=500, at_s=5), pending("y", priority=500, at_s=1)],
            ["y", "x"], id="override equal to a class value ties, then submit time",
        ),
    ],
)
def test_order(jobs: list[PendingJob], expected: list[str]) -> None:
    assert ids(ordered(jobs)) == expected


def test_effective_priority_uses_override_even_when_zero() -> None:
    assert pending("j", priority=1000, priority_override=0).effective_priority == 0
    assert pending("j", priority=1000).effective_priority == 1000


def test_ordered_does_not_mutate_input_and_accepts_iterables() -> None:
    jobs = [pending("b", priority=1), pending("a", priority=2)]
    before = list(jobs)
    assert ids(ordered(iter(jobs))) == ["a", "b"]
    assert jobs == before


job_strategy = st.builds(
    pending,
    st.text(alphabet="0123456789abcdef", min_size=1, max_size=4),
    priority=st.sampled_from([100, 500, 1000]),
    priority_override=st.none() | st.integers(-10, 2000),
    at_s=st.integers(0, 5),  # few distinct times: ties are common
)


@settings(max_examples=200, deadline=None)
@given(st.lists(job_strategy, max_size=25, unique_by=lambda j: j.job_id), st.randoms(use_true_random=False))
def test_order_is_total_and_independent_of_input_order(jobs: list[PendingJob], rnd: random.Random) -> None:
    first = ordered(jobs)
    shuffled = list(jobs)
    rnd.shuffle(shuffled)
    # Independent of input order: exactly the same sequence.
    assert ids(ordered(shuffled)) == ids(first)
    assert ids(ordered(reversed(jobs))) == ids(first)
    # Total: distinct jobs never compare equal, and the sequence is strictly increasing.
    keys = [sort_key(j) for j in first]
    assert len(set(keys)) == len(keys)
    assert all(a < b for a, b in pairwise(keys))
    # Consistent with the written rule, pair by pair.
    for a, b in pairwise(first):
        if a.effective_priority != b.effective_priority:
            assert a.effective_priority > b.effective_priority
        elif a.submitted_at != b.submitted_at:
            assert a.submitted_at < b.submitted_at
        else:
            assert a.job_id < b.job_id
