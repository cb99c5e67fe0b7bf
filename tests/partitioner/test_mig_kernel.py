"""MIG slot-search kernel against its pure-Python twin (hypothesis)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from partitioner import reference
from partitioner.kernels.mig import mig_pick

# (size, max_count, starts) of the 8-slice geometry (GPU-FACTS.md §1) and A30's 4-slice one
PROFILES = [(1, 7, [0, 1, 2, 3, 4, 5, 6]), (2, 4, [0, 2, 4, 6]), (2, 3, [0, 2, 4]), (4, 2, [0, 4]), (4, 1, [0]),
            (8, 1, [0]), (1, 4, [0, 1, 2, 3])]

gpu_st = st.tuples(st.integers(0, 3), st.integers(0, 255), st.booleans(), st.booleans(),
                   st.integers(0, len(PROFILES) - 1))
unit_st = st.tuples(st.integers(0, 7), st.sampled_from([2, 3]), st.sampled_from([0, 100]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=4, max_size=4),
       st.lists(gpu_st, min_size=1, max_size=8), st.lists(unit_st, max_size=10), st.integers(1, 5), st.integers(0, 3))
def test_mig_pick_matches_reference(nodes, gpus, units, need, cpu):
    gpus = [(n, mask, is_mig or ok, ok, 10 + p, *PROFILES[p]) for n, mask, is_mig, ok, p in gpus]
    units = [(g, kind, gpus[g][4] if g < len(gpus) else 99, free) for g, kind, free in units if g < len(gpus)]
    want, want_reused = reference.mig_pick(need, cpu, 0, nodes, gpus, units)
    reused = np.empty(len(nodes), dtype=np.int64)
    i64 = lambda xs: np.array(xs, dtype=np.int64)  # noqa: E731
    got = mig_pick(need, cpu, 0, i64([c for c, _ in nodes]), i64([m for _, m in nodes]),
                   i64([g[0] for g in gpus]), i64([g[1] for g in gpus]), np.array([g[2] for g in gpus]),
                   np.array([g[3] for g in gpus]), i64([g[4] for g in gpus]), i64([g[5] for g in gpus]),
                   i64([g[6] for g in gpus]), i64([sum(1 << s for s in g[7]) for g in gpus]),
                   i64([u[0] for u in units]), i64([u[1] for u in units]), i64([u[2] for u in units]),
                   i64([u[3] for u in units]), reused)
    assert got == want
    assert reused.tolist() == want_reused
