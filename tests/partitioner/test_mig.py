"""MIG layout validation: the facts' full layouts, reasons, and a brute-force property."""

from hypothesis import given, settings
from hypothesis import strategies as st

from partitioner.catalog import lookup_model
from partitioner.mig import count_new_instances, free_starts, layout_mask, validate_layout

FULL = [
    [("7g.80gb", 0)],
    [("4g.40gb", 0), ("3g.40gb", 4)],
    [("3g.40gb", 4), ("2g.20gb", 0), ("2g.20gb", 2)],
    [("3g.40gb", 4), ("2g.20gb", 0), ("1g.10gb", 2), ("1g.10gb", 3)],
    [("3g.40gb", 4)] + [("1g.10gb", i) for i in range(4)],
    [("1g.10gb", i) for i in range(6)] + [("1g.20gb", 6)],
    [("1g.10gb", i) for i in range(7)],
]


def test_full_layouts_from_facts_are_valid():
    for layout in FULL:
        assert validate_layout("h100-80gb", layout) == [], layout
    assert layout_mask(lookup_model("h100-80gb"), FULL[-1]) == 0b0111_1111  # 7 x 1g strands slice 7


def test_reasons():
    assert "overlap" in validate_layout("h100-80gb", [("3g.40gb", 0), ("4g.40gb", 0)])[0]
    assert "bad start" in validate_layout("h100-80gb", [("3g.40gb", 2)])[0]
    assert "too many" in " ".join(validate_layout("h100-80gb", [("1g.10gb+me", 0), ("1g.10gb+me", 1)]))
    assert "unknown MIG profile" in validate_layout("h100-80gb", [("1g.5gb", 0)])[0]
    assert "not MIG-capable" in validate_layout("t4", [])[0]
    assert "unknown GPU model" in validate_layout("zz", [])[0]
    assert validate_layout("a100-40gb", [("1g.10gb", 1)])  # 2-slice profile on A100-40GB: even starts only
    assert validate_layout("h100-80gb", [("1g.10gb", 1)]) == []


def _brute_valid(model, layout):
    used = set()
    counts = {}
    for name, start in layout:
        p = model.mig_profile(name)
        if p is None or start not in p.starts:
            return False
        counts[name] = counts.get(name, 0) + 1
        if counts[name] > p.max_count:
            return False
        span = set(range(start, start + p.memory_slices))
        if span & used:
            return False
        used |= span
    return True


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["a100-40gb", "h100-80gb", "b200", "a30"]),
       st.lists(st.tuples(st.integers(0, 6), st.integers(0, 7)), max_size=8))
def test_validate_matches_brute_force(key, picks):
    model = lookup_model(key)
    layout = [(model.mig_profiles[i % len(model.mig_profiles)].name, s) for i, s in picks]
    assert (validate_layout(key, layout) == []) == _brute_valid(model, layout)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.integers(0, 6))
def test_free_starts_and_greedy_count(mask, row):
    model = lookup_model("h100-80gb")
    p = model.mig_profiles[row]
    for s in free_starts(p, mask):
        assert mask & (((1 << p.memory_slices) - 1) << s) == 0
    n = count_new_instances(p, mask)
    # brute force: the largest set of pairwise disjoint free starts, capped by max_count
    best = 0
    starts = free_starts(p, mask)
    for sub in range(1 << len(starts)):
        chosen = [s for i, s in enumerate(starts) if sub >> i & 1]
        spans = [set(range(s, s + p.memory_slices)) for s in chosen]
        if all(not (a & b) for i, a in enumerate(spans) for b in spans[i + 1:]):
            best = max(best, min(len(chosen), p.max_count))
    assert n == best
