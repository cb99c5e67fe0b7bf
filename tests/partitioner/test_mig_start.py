"""Where a new MIG instance goes (mig.best_start): against its set twin, and against lowest-start on
every sequence of the exhaustive small cases, on every MIG-capable catalogue model."""

from __future__ import annotations

import itertools

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from partitioner import reference
from partitioner.catalog import MODELS, GpuModel, MigProfile, lookup_model
from partitioner.mig import best_start, free_starts, span_mask
from partitioner.place import Packer
from partitioner.types import GpuMode, Request
from tests.support.builders import cluster, gpu, node

MIG_MODELS = [m for m in MODELS if m.mig_capable]


def lowest_start(model: GpuModel, profile: MigProfile, mask: int, counts: list[int]) -> int | None:
    if counts[model.mig_profiles.index(profile)] >= profile.max_count:
        return None
    free = free_starts(profile, mask)
    return free[0] if free else None


def served(model: GpuModel, sequence, choose) -> int:
    """Compute slices placed when the requests of ``sequence`` arrive one by one (a misfit is refused)."""
    mask, counts, total = 0, [0] * len(model.mig_profiles), 0
    for profile in sequence:
        start = choose(model, profile, mask, counts)
        if start is None:
            continue
        mask |= span_mask(start, profile.memory_slices)
        counts[model.mig_profiles.index(profile)] += 1
        total += profile.compute_slices
    return total


@pytest.mark.parametrize("model", MIG_MODELS, ids=lambda m: m.key)
def test_never_worse_than_lowest_start_on_any_short_sequence(model: GpuModel) -> None:
    better = 0
    for length in range(1, 5):
        for sequence in itertools.product(model.mig_profiles, repeat=length):
            ours, lowest = served(model, sequence, best_start), served(model, sequence, lowest_start)
            assert ours >= lowest, ([p.name for p in sequence], ours, lowest)
            better += ours > lowest
    if model.compute_slices == 7:  # the 7x8 geometry strands slices; A30's nested 4x4 one does not
        assert better > 0, "strictly better somewhere"


def test_a_small_instance_leaves_the_4g_its_lowest_start_would_strand() -> None:
    """On an H100, 1g.20gb at slice 0 would kill the 4g.40gb (start 0 only): it goes to slice 6."""
    h100 = lookup_model("h100-80gb")
    assert h100 is not None
    small, big = h100.mig_profile("1g.20gb"), h100.mig_profile("4g.40gb")
    assert small is not None and big is not None
    assert best_start(h100, small, 0, [0] * len(h100.mig_profiles)) == 6
    assert lowest_start(h100, small, 0, [0] * len(h100.mig_profiles)) == 0
    packer = Packer(cluster(node("n", gpu("g0", mode=GpuMode.MIG))))
    first = packer.place(Request(mig_profile="1g.20gb"))
    assert not hasattr(first, "never"), first
    assert first.replicas[0].slices[0].mig_start == 6
    packer.commit(first)
    second = packer.place(Request(mig_profile="4g.40gb"))
    assert not hasattr(second, "never"), second
    assert second.replicas[0].slices[0].mig_start == 0, "the 4g still fits on the same GPU"


def test_several_new_instances_of_one_request_all_fit() -> None:
    packer = Packer(cluster(node("n", gpu("g0", mode=GpuMode.MIG))))
    got = packer.place(Request(mig_profile="1g.20gb", mig_count=4))
    assert not hasattr(got, "never"), got
    assert sorted(s.mig_start for s in got.replicas[0].slices) == [0, 2, 4, 6]


@st.composite
def states(draw):
    model = draw(st.sampled_from(MIG_MODELS))
    mask, counts = 0, [0] * len(model.mig_profiles)
    for _ in range(draw(st.integers(0, 5))):
        profile = draw(st.sampled_from(model.mig_profiles))
        free = free_starts(profile, mask)
        if free and counts[model.mig_profiles.index(profile)] < profile.max_count:
            mask |= span_mask(draw(st.sampled_from(free)), profile.memory_slices)
            counts[model.mig_profiles.index(profile)] += 1
    return model, draw(st.sampled_from(model.mig_profiles)), mask, counts


@settings(max_examples=300, deadline=None)
@given(states())
def test_best_start_matches_its_set_twin(state) -> None:
    model, profile, mask, counts = state
    assert best_start(model, profile, mask, counts) == reference.best_start(model, profile, mask, counts)
