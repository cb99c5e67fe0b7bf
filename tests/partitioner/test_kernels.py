"""Numba kernels against the pure-Python reference (hypothesis)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from partitioner import reference
from partitioner.kernels.place import node_fragment
from partitioner.kernels.replay import replay

node_st = st.tuples(st.sampled_from([8000, 16000, 32000]), st.sampled_from([32768, 65536]),
                    st.sampled_from([1, 2, 4, 8]), st.integers(0, 1))
task_st = st.one_of(
    st.tuples(st.sampled_from([0, 2000, 4000]), st.sampled_from([0, 4096]), st.just(0), st.just(0), st.just(-1)),
    st.tuples(st.sampled_from([1000, 4000]), st.sampled_from([0, 8192]), st.just(1),
              st.sampled_from([100, 250, 500, 700]), st.sampled_from([-1, 1, 2])),
    st.tuples(st.sampled_from([1000, 6000]), st.just(0), st.sampled_from([1, 2, 4, 8]), st.just(1000),
              st.sampled_from([-1, 1])),
)


def _arrays(rows, n):
    return [np.array([r[i] for r in rows], dtype=np.int64) for i in range(n)]


@settings(max_examples=40, deadline=None)
@given(st.lists(node_st, min_size=1, max_size=6), st.lists(task_st, min_size=1, max_size=40),
       st.sampled_from([(1, 0), (2, 0), (3, 0), (3, 1), (3, 2)]), st.randoms(use_true_random=False))
def test_replay_kernel_matches_reference(nodes, tasks, policy_variant, rnd):
    policy, variant = policy_variant
    shapes = [(t[0], t[3] if t[2] else 0, t[2], t[4], 1 / len(tasks)) for t in tasks[:5]]
    order = list(range(len(nodes)))
    rnd.shuffle(order)
    want = reference.replay(nodes, tasks, shapes, order, policy, levels=50.0, variant=variant)
    nc, nm, ng, nmod = _arrays(nodes, 4)
    tc, tm, tg, tmi, tmo = _arrays(tasks, 5)
    sc, smi, sg, smo = _arrays(shapes, 4)
    sp = np.array([s[4] for s in shapes])
    out_node = np.full(len(tasks), -1, dtype=np.int64)
    out_gpu = np.full(len(tasks), -1, dtype=np.int64)
    replay(nc, nm, ng, nmod, np.array(order, dtype=np.int64), tc, tm, tg, tmi, tmo, sc, smi, sg, smo, sp,
           policy, 42, 50.0, variant, out_node, out_gpu)
    assert out_node.tolist() == want


unit_st = st.tuples(st.integers(0, 1), st.integers(0, 100), st.integers(0, 80000))


@settings(max_examples=150, deadline=None)
@given(st.lists(unit_st, min_size=1, max_size=8), st.integers(0, 64000), st.booleans(),
       st.lists(st.tuples(st.integers(0, 2), st.integers(1, 100), st.integers(0, 40000), st.integers(1, 3),
                          st.integers(0, 16000), st.floats(0.01, 1)), min_size=1, max_size=5))
def test_node_fragment_kernel_matches_reference(units, cpu, packed, shapes):
    units = [(k, 100 if (k == 0 and b > 50) else (0 if k == 0 else b), m) for k, b, m in units]
    want = reference.place_node_fragment(units, cpu, shapes, packed)
    got = node_fragment(0, np.array([0, len(units)]), *_arrays(units, 3), -1, 0, 0, 0, cpu,
                        *_arrays(shapes, 5), np.array([s[5] for s in shapes]), packed)
    assert abs(got - want) < 1e-6 * max(1.0, abs(want))
