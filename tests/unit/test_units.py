"""Whole-GPU equivalents (``admission.units``): one rule for held slices and for queued requests."""

from __future__ import annotations

import pytest

from partitioner.catalog import MODELS
from partitioner.types import Request
from queue_service.admission.units import held_equivalents, mig_share, request_equivalents

# (what, kind, blocks, mig_profile, gpu_model, expected)
HELD = [
    ("whole GPU", "gpu", 0, None, "h100-80gb", 1.0),
    ("whole GPU, model unknown", "gpu", 0, None, None, 1.0),
    ("25 blocks of a whole GPU", "blocks", 25, None, "h100-80gb", 0.25),
    ("100 blocks of a whole GPU", "blocks", 100, None, "t4", 1.0),
    ("A100 3g.40gb", "mig", 0, "3g.40gb", "a100-80gb", 3 / 7),
    ("A100-40GB 3g.20gb", "mig", 0, "3g.20gb", "a100-40gb", 3 / 7),
    ("A30 2g.12gb: 2 of 4 slices", "mig", 0, "2g.12gb", "a30", 0.5),
    ("A30 1g.6gb", "mig", 0, "1g.6gb", "a30", 0.25),
    ("A30 4g.24gb: the whole A30", "mig", 0, "4g.24gb", "a30", 1.0),
    ("H100 1g.10gb", "mig", 0, "1g.10gb", "h100-80gb", 1 / 7),
    ("A100-40GB 1g.10gb (profile 15, same name, 1 compute slice)", "mig", 0, "1g.10gb", "a100-40gb", 1 / 7),
    ("H100 7g.80gb", "mig", 0, "7g.80gb", "h100-80gb", 1.0),
    ("NVML name for the model", "mig", 0, "2g.12gb", "NVIDIA A30", 0.5),
    ("50 blocks of a shared A30 2g.12gb", "blocks", 50, "2g.12gb", "a30", 0.25),
    ("70 blocks of a shared H100 3g.40gb", "blocks", 70, "3g.40gb", "h100-80gb", 0.3),
    ("CPU-only", "cpu", 0, None, None, 0.0),
    ("CPU-only on a GPU node", "cpu", 0, None, "h100-80gb", 0.0),
]


@pytest.mark.parametrize(("what", "kind", "blocks", "profile", "model", "expected"), HELD, ids=[h[0] for h in HELD])
def test_held_equivalents(what, kind, blocks, profile, model, expected) -> None:  # what: the case id
    assert held_equivalents(kind, blocks=blocks, mig_profile=profile, gpu_model=model) == pytest.approx(expected)


REQUESTS = [
    ("2 whole GPUs × 3 replicas", Request(gpus=2, replicas=3), 6.0),
    ("25 blocks", Request(blocks=25, gpu_memory_mib=1024), 0.25),
    ("3g.40gb, any model", Request(mig_profile="3g.40gb"), 3 / 7),
    ("2g.12gb exists only on the A30", Request(mig_profile="2g.12gb"), 0.5),
    ("2g.12gb on allowed A30", Request(mig_profile="2g.12gb", gpu_models=("a30",)), 0.5),
    ("2 × 1g.6gb × 2 replicas", Request(mig_profile="1g.6gb", mig_count=2, replicas=2), 1.0),
    ("1g.10gb, name on A100-40GB and 80 GB parts", Request(mig_profile="1g.10gb"), 1 / 7),
    ("1g.10gb on H100 only", Request(mig_profile="1g.10gb", gpu_models=("h100-80gb",)), 1 / 7),
    ("CPU-only", Request(cpus_milli=2000, memory_mib=1024), 0.0),
]


@pytest.mark.parametrize(("what", "request_", "expected"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_request_equivalents(what, request_, expected) -> None:  # what: the case id
    assert request_equivalents(request_) == pytest.approx(expected)


def test_a_request_counts_what_its_placement_will_hold() -> None:
    """Every catalogue profile: the queued job's count equals the allocation's once placed on that model."""
    for model in MODELS:
        for profile in model.mig_profiles:
            placed = held_equivalents("mig", mig_profile=profile.name, gpu_model=model.key)
            assert request_equivalents(Request(mig_profile=profile.name, gpu_models=(model.key,))) == placed
            assert placed == profile.compute_slices / model.compute_slices


def test_unknown_models_and_profiles() -> None:
    # A model the catalogue does not know: the profile's share on the models that define the name.
    assert mig_share("2g.12gb", "some-future-gpu") == pytest.approx(0.5)
    assert mig_share("3g.40gb", None) == pytest.approx(3 / 7)
    # A name no model defines counts as a whole GPU (an instance is never more than its GPU).
    assert mig_share("9g.999gb", "h100-80gb") == 1.0
    # Allowed models that lack the profile (submit refuses that): the whole catalogue answers.
    assert request_equivalents(Request(mig_profile="2g.12gb", gpu_models=("h100-80gb",))) == pytest.approx(0.5)
