"""The catalogue against GPU-FACTS.md §1."""

import pytest

from partitioner.catalog import all_mig_profile_names, find_mig_profile, lookup_model, model_for_nvml

# (smi id, NVML const suffix, compute, memory slices, max, starts) — GPU-FACTS.md §1
FACTS = [
    (19, "1_SLICE", 1, 1, 7, (0, 1, 2, 3, 4, 5, 6)),
    (20, "1_SLICE_REV1", 1, 1, 1, (0, 1, 2, 3, 4, 5, 6)),
    (15, "1_SLICE_REV2", 1, 2, 4, (0, 2, 4, 6)),
    (14, "2_SLICE", 2, 2, 3, (0, 2, 4)),
    (9, "3_SLICE", 3, 4, 2, (0, 4)),
    (5, "4_SLICE", 4, 4, 1, (0,)),
    (0, "7_SLICE", 7, 8, 1, (0,)),
]
NAMES = {
    "a100-40gb": ["1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"],
    "a100-80gb": ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"],
    "h100-80gb": ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"],
    "h100-nvl": ["1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"],
    "h200": ["1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"],
    "b200": ["1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"],
}


@pytest.mark.parametrize("key", sorted(NAMES))
def test_mig_table_matches_facts(key):
    model = lookup_model(key)
    assert model is not None and model.compute_slices == 7 and model.memory_slices == 8
    assert len(model.mig_profiles) == 7
    for (pid, const, cs, ms, mx, starts), name in zip(FACTS, NAMES[key], strict=True):
        p = model.mig_profile(name)
        assert p is not None, name
        assert (p.profile_id, p.nvml_const, p.compute_slices, p.memory_slices, p.max_count, p.starts) == (
            pid, f"NVML_GPU_INSTANCE_PROFILE_{const}", cs, ms, mx, starts)
        assert 0 < p.memory_mib <= model.memory_mib and 0 < p.sm_count <= model.sm_count


def test_a30():
    model = lookup_model("a30")
    assert (model.compute_slices, model.memory_slices) == (4, 4)
    got = {p.name: (p.compute_slices, p.memory_slices, p.max_count, p.starts) for p in model.mig_profiles}
    assert got == {"1g.6gb": (1, 1, 4, (0, 1, 2, 3)), "2g.12gb": (2, 2, 2, (0, 2)), "4g.24gb": (4, 4, 1, (0,))}


def test_h100_sm_counts_from_facts():
    model = lookup_model("h100-80gb")
    assert {p.name: p.sm_count for p in model.mig_profiles if "+" not in p.name and p.name != "1g.20gb"} == {
        "1g.10gb": 16, "2g.20gb": 32, "3g.40gb": 60, "4g.40gb": 64, "7g.80gb": 132}
    assert model.sm_count == 132 and lookup_model("a100-40gb").sm_count == 108


def test_1g10gb_name_clash_resolves_per_model():
    small = find_mig_profile("a100-40gb", "1g.10gb")
    big = find_mig_profile("h100-80gb", "1g.10gb")
    assert (small.profile_id, small.memory_slices) == (15, 2)
    assert (big.profile_id, big.memory_slices) == (19, 1)
    assert find_mig_profile("t4", "1g.10gb") is None
    assert find_mig_profile("nope", "1g.10gb") is None


@pytest.mark.parametrize("name,key", [
    ("h100-80gb", "h100-80gb"), ("A100-40GB", "a100-40gb"), ("t4", "t4"), ("l40s", "l40s"), ("h200", "h200"),
    ("b200", "b200"), ("a30", "a30"), ("h100-nvl", "h100-nvl"), ("a100-80gb", "a100-80gb"),
    ("v100-16gb", "v100-16gb"), ("v100-32gb", "v100-32gb"), ("p100", "p100"), ("l4", "l4"), ("a10", "a10"),
    ("NVIDIA H100 80GB HBM3", "h100-80gb"), ("NVIDIA A100-SXM4-40GB", "a100-40gb"), ("Tesla T4", "t4"),
    ("NVIDIA L4", "l4"), ("NVIDIA A100 80GB PCIe", "a100-80gb"), ("Tesla V100-PCIE-32GB", "v100-32gb"),
    ("V100M16", "v100-16gb"), ("V100M32", "v100-32gb"), ("G2", "g2"), ("G3", "g3"), ("NVIDIA H100 NVL", "h100-nvl"),
])
def test_lookup(name, key):
    assert lookup_model(name).key == key


def test_non_mig_models_and_unknowns():
    assert not lookup_model("t4").mig_capable and lookup_model("h100-80gb").mig_capable
    assert lookup_model("Radeon 7900") is None and lookup_model("") is None
    made = model_for_nvml("NVIDIA Future X9", 100000, 200)
    assert (made.key, made.memory_mib, made.sm_count, made.mig_profiles) == ("nvidia-future-x9", 100000, 200, ())
    assert model_for_nvml("NVIDIA H100 80GB HBM3", 1, 1).key == "h100-80gb"


def test_all_profile_names():
    names = all_mig_profile_names()
    assert {"1g.10gb", "3g.40gb", "1g.5gb+me", "1g.6gb", "7g.180gb"} <= names and "9g.1gb" not in names
