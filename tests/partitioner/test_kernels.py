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
       st.sampled_from([(1, 0), (2, 0), (3, 0), (3, 1), (3, 2), (3, 3)]), st.integers(-1, 5),
       st.randoms(use_true_random=False))
def test_replay_kernel_matches_reference(nodes, tasks, policy_variant, n_fgd, rnd):
    """Every policy and fragment variant; gpuq also under the load rule (FGD over the first n_fgd shapes first).

    Variant 3 is the lexicographic rule: the kernel's one-pass pair of fragments and its encoded key
    against the reference's two separate fragments compared as a tuple.
    """
    policy, variant = policy_variant
    shapes = [(t[0], t[3] if t[2] else 0, t[2], t[4], 1 / len(tasks)) for t in tasks[:5]]
    n_fgd = min(n_fgd, len(shapes))
    order = list(range(len(nodes)))
    rnd.shuffle(order)
    want = reference.replay(nodes, tasks, shapes, order, policy, levels=50.0, variant=variant, n_fgd=n_fgd)
    nc, nm, ng, nmod = _arrays(nodes, 4)
    tc, tm, tg, tmi, tmo = _arrays(tasks, 5)
    sc, smi, sg, smo = _arrays(shapes, 4)
    sp = np.array([s[4] for s in shapes])
    out_node = np.full(len(tasks), -1, dtype=np.int64)
    out_gpu = np.full(len(tasks), -1, dtype=np.int64)
    replay(nc, nm, ng, nmod, np.array(order, dtype=np.int64), tc, tm, tg, tmi, tmo, sc, smi, sg, smo, sp,
           policy, 42, 50.0, variant, out_node, out_gpu, n_fgd)
    assert out_node.tolist() == want


@settings(max_examples=80, deadline=None)
@given(st.lists(node_st, min_size=1, max_size=6), st.lists(task_st, min_size=1, max_size=40),
       st.integers(-1, 6), st.sampled_from([10.0, 30.0, 100.0]), st.randoms(use_true_random=False))
def test_lexicographic_replay_matches_reference(nodes, tasks, n_fgd, levels, rnd):
    """gpuq's lexicographic rule (variant 3) on its own, with coarse and fine second keys (many ties)."""
    shapes = [(t[0], t[3] if t[2] else 0, t[2], t[4], (i + 1) / (3 * len(tasks))) for i, t in enumerate(tasks[:6])]
    n_fgd = min(n_fgd, len(shapes))
    order = list(range(len(nodes)))
    rnd.shuffle(order)
    want = reference.replay(nodes, tasks, shapes, order, 3, levels=levels, variant=3, n_fgd=n_fgd)
    nc, nm, ng, nmod = _arrays(nodes, 4)
    tc, tm, tg, tmi, tmo = _arrays(tasks, 5)
    sc, smi, sg, smo = _arrays(shapes, 4)
    sp = np.array([s[4] for s in shapes])
    out_node = np.full(len(tasks), -1, dtype=np.int64)
    out_gpu = np.full(len(tasks), -1, dtype=np.int64)
    replay(nc, nm, ng, nmod, np.array(order, dtype=np.int64), tc, tm, tg, tmi, tmo, sc, smi, sg, smo, sp,
           3, 42, levels, 3, out_node, out_gpu, n_fgd)
    assert out_node.tolist() == want


unit_st = st.tuples(st.integers(0, 1), st.integers(0, 100), st.integers(0, 80000))


@settings(max_examples=150, deadline=None)
@given(st.lists(unit_st, min_size=1, max_size=8), st.integers(0, 64000), st.integers(0, 3),
       st.lists(st.tuples(st.integers(0, 2), st.integers(1, 100), st.integers(0, 40000), st.integers(1, 3),
                          st.integers(0, 16000), st.floats(0.01, 1)), min_size=1, max_size=5),
       st.integers(0, 5))
def test_node_fragment_kernel_matches_reference(units, cpu, packed, shapes, n_first):
    """Every fragment variant; 0 and the lexicographic pair (3) over FGD's first ``n_first`` shapes."""
    units = [(k, 100 if (k == 0 and b > 50) else (0 if k == 0 else b), m) for k, b, m in units]
    n_first = min(n_first, len(shapes))
    if packed == 3:
        want = (reference.place_node_fragment(units, cpu, shapes[:n_first], 0),
                reference.place_node_fragment(units, cpu, shapes, 1))
    else:
        want = (reference.place_node_fragment(units, cpu, shapes[:n_first] if packed == 0 else shapes, packed), 0.0)
    got = node_fragment(0, np.array([0, len(units)]), *_arrays(units, 3), -1, 0, 0, 0, cpu,  # type: ignore[call-arg]
                        *_arrays(shapes, 5), np.array([s[5] for s in shapes]), packed, n_first)
    for g, w in zip(got, want, strict=True):
        assert abs(g - w) < 1e-6 * max(1.0, abs(w))


# -- score_nodes, the kernel the live service calls, against its slow twin -----------------------

live_unit_st = st.one_of(
    st.tuples(st.just(0), st.sampled_from([0, 100]), st.just(81559), st.booleans()),  # exclusive GPU
    st.tuples(st.just(1), st.integers(0, 100), st.integers(0, 81559), st.booleans()),  # shared GPU
    st.tuples(st.sampled_from([2, 3]), st.integers(0, 100), st.integers(0, 40000), st.booleans()),  # MIG
)
live_node_st = st.tuples(st.integers(0, 64000), st.integers(0, 512000), st.sampled_from([16000, 64000]),
                         st.lists(live_unit_st, min_size=0, max_size=8))
live_request_st = st.one_of(
    st.tuples(st.just(2), st.just(100), st.just(0), st.integers(1, 4), st.sampled_from([0, 4000, 32000]),
              st.sampled_from([0, 1024])),
    st.tuples(st.just(1), st.integers(1, 100), st.sampled_from([0, 1000, 20000]), st.just(1),
              st.sampled_from([0, 4000]), st.just(0)),
)
shape_st = st.tuples(st.integers(0, 2), st.sampled_from([10, 25, 50, 100]), st.sampled_from([0, 10000]),
                     st.integers(1, 4), st.sampled_from([0, 4000, 16000]), st.floats(0.05, 1))


@settings(max_examples=500, deadline=None)
@given(live_request_st, st.lists(live_node_st, min_size=1, max_size=5), st.lists(shape_st, min_size=1, max_size=4),
       st.sampled_from([(1, 0), (2, 0), (3, 0), (3, 1), (3, 2), (3, 3), (4, 0)]), st.integers(-1, 4),
       st.sampled_from([10.0, 30.0, 100.0]), st.booleans(), st.booleans())
def test_score_nodes_matches_its_slow_twin(request, nodes, shapes, policy_variant, n_fgd, levels, fit_ties,
                                           warm_cache):
    """Scores and chosen units agree for every policy and every gpuq variant (0 FGD's fragment, 1 multi-task,
    2 summed, 3 lexicographic), FGD's shapes a prefix of any length, with the fragment cache cold or already
    filled by an earlier call."""
    from partitioner.kernels.place import score_nodes

    policy, variant = policy_variant
    kind, blocks, mem, count, cpu, ram = request
    want = reference.score_nodes(request, nodes, shapes, policy, variant, n_fgd, levels, fit_ties)
    units = [u for *_, us in nodes for u in us]
    starts = np.cumsum([0] + [len(us) for *_, us in nodes]).astype(np.int64)
    col = lambda rows, i, dt=np.int64: np.array([r[i] for r in rows], dtype=dt)  # noqa: E731
    ok = col(units, 3, np.bool_)
    frag = np.zeros((len(nodes), 2))
    frag_ok = np.zeros(len(nodes), dtype=np.bool_)
    out_score = np.empty(len(nodes))
    out_unit = np.empty(len(nodes), dtype=np.int64)
    args = (kind, blocks, mem, count, cpu, ram, ok, col(nodes, 0), col(nodes, 1), col(nodes, 2), starts,
            col(units, 0), col(units, 1), col(units, 2), *(col(shapes, i) for i in range(5)),
            col(shapes, 5, np.float64), policy, variant, n_fgd, levels, fit_ties, out_score, out_unit, frag, frag_ok)
    score_nodes(*args)
    if warm_cache:
        score_nodes(*args)  # the second call reads F from the cache it filled
    for n, (score, unit) in enumerate(want):
        if score == -np.inf:
            assert out_score[n] == -np.inf, (n, out_score[n])
            continue
        assert abs(out_score[n] - score) < 1e-9, (n, out_score[n], score)
        if kind == 1:
            assert out_unit[n] - starts[n] == unit, (n, out_unit[n] - starts[n], unit)
