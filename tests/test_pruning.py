"""Tests for ltjax.pruning (and the score functions it consumes).

Every expected mask below is computed by hand from the documented rules:
  * k = round(rate * alive), halves rounded up, alive = survivors in the pool;
  * survivors are ranked by (score, flat position) ascending, the first k are removed;
  * pruned weights never come back and their scores are ignored; NaN sorts last;
  * global scope pools every non-excluded prunable layer in tree order (sorted dict keys).
"""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import masks as M
from ltjax import pruning, scores

T, F = True, False


def _is_kernel(path, _leaf) -> bool:
    return M.path_str(path).endswith("kernel")


def _np(tree):
    """Mask pytree -> same structure with numpy arrays (None kept)."""
    return jax.tree.map(lambda m: None if m is None else np.asarray(m), tree,
                        is_leaf=lambda x: x is None)


def _assert_mask_equal(actual, expected):
    """Exact equality of two mask pytrees, including the None pattern and bool dtype."""
    fa, ta = jax.tree_util.tree_flatten(actual, is_leaf=lambda x: x is None)
    expected = jax.tree.map(lambda e: None if e is None else np.asarray(e, bool), expected,
                            is_leaf=lambda x: x is None or isinstance(x, list))
    fe, te = jax.tree_util.tree_flatten(expected, is_leaf=lambda x: x is None)
    assert ta == te
    for a, e in zip(fa, fe):
        if e is None:
            assert a is None
        else:
            assert a is not None
            a = np.asarray(a)
            assert a.dtype == np.bool_
            np.testing.assert_array_equal(a, np.asarray(e, bool))


# --------------------------------------------------------------------------- fixtures

FC1_KERNEL = np.array([[0.5, -3.0, 0.1],
                       [2.0, -0.2, 1.0]], np.float32)
OUT_KERNEL = np.array([[0.3, -0.05],
                       [4.0, 0.7]], np.float32)


def _params():
    return {
        "fc1": {"kernel": jnp.asarray(FC1_KERNEL), "bias": jnp.array([9.0, -9.0, 0.0])},
        "out": {"kernel": jnp.asarray(OUT_KERNEL), "bias": jnp.array([0.0, 1.0])},
    }


def _mask(params=None):
    return M.make_mask(_params() if params is None else params, _is_kernel)


# --------------------------------------------------------------------------- layerwise

def test_make_mask_pattern():
    m = _mask()
    assert m["fc1"]["bias"] is None and m["out"]["bias"] is None
    assert m["fc1"]["kernel"].dtype == jnp.bool_
    assert m["fc1"]["kernel"].shape == (2, 3) and bool(m["fc1"]["kernel"].all())
    assert M.layer_names(m) == ["fc1", "out"]


def test_layerwise_hand_computed_dict_rates():
    params = _params()
    mask = _mask(params)
    s = scores.magnitude(params, mask)
    new = pruning.prune(s, mask, {"out": 0.25, "*": 0.5})
    # fc1: |w| = [.5, 3, .1, 2, .2, 1], k = round(0.5*6) = 3 -> drop .1 (pos2), .2 (pos4), .5 (pos0)
    # out: |w| = [.3, .05, 4, .7],      k = round(0.25*4) = 1 -> drop .05 (pos1)
    expected = {
        "fc1": {"kernel": [[F, T, F], [T, F, T]], "bias": None},
        "out": {"kernel": [[T, F], [T, T]], "bias": None},
    }
    _assert_mask_equal(new, expected)


def test_layerwise_first_matching_pattern_wins():
    params = _params()
    mask = _mask(params)
    s = scores.magnitude(params, mask)
    # "*" comes first, so it also applies to "out": k_out = round(0.5*4) = 2 -> drop .05, .3
    new = pruning.prune(s, mask, {"*": 0.5, "out": 0.25})
    np.testing.assert_array_equal(np.asarray(new["fc1"]["kernel"]), [[F, T, F], [T, F, T]])
    np.testing.assert_array_equal(np.asarray(new["out"]["kernel"]), [[F, F], [T, T]])


def test_layerwise_float_rate_and_exact_names():
    params = _params()
    mask = _mask(params)
    s = scores.magnitude(params, mask)
    # float rate 0.5 everywhere, explicit names in the dict produce the same result
    a = pruning.prune(s, mask, 0.5)
    b = pruning.prune(s, mask, {"fc1": 0.5, "out": 0.5})
    _assert_mask_equal(a, b)
    np.testing.assert_array_equal(np.asarray(a["out"]["kernel"]), [[F, F], [T, T]])


def test_layerwise_halves_round_up():
    # 5 weights, rate 0.5 -> k = round(2.5) = 3 (halves up)
    s = {"l": {"kernel": jnp.array([5.0, 4.0, 3.0, 2.0, 1.0])}}
    m = {"l": {"kernel": jnp.ones(5, bool)}}
    new = pruning.prune(s, m, 0.5)
    np.testing.assert_array_equal(np.asarray(new["l"]["kernel"]), [T, T, F, F, F])
    # 10 weights at rate 0.35 -> k = round(3.5) = 4
    s = {"l": {"kernel": jnp.arange(10.0)[::-1]}}
    m = {"l": {"kernel": jnp.ones(10, bool)}}
    new = pruning.prune(s, m, 0.35)
    np.testing.assert_array_equal(np.asarray(new["l"]["kernel"]), [T] * 6 + [F] * 4)


def test_layerwise_nested_layer_names_and_glob():
    params = {
        "block": {"dense": {"kernel": jnp.array([1.0, 2.0, 3.0, 4.0])},
                  "proj": {"kernel": jnp.array([4.0, 3.0, 2.0, 1.0])}},
        "head": {"kernel": jnp.array([1.0, 2.0, 3.0, 4.0]), "bias": jnp.zeros(4)},
    }
    mask = M.make_mask(params, _is_kernel)
    assert M.layer_names(mask) == ["block/dense", "block/proj", "head"]
    s = scores.magnitude(params, mask)
    new = pruning.prune(s, mask, {"block/*": 0.5, "head": 0.25})
    np.testing.assert_array_equal(np.asarray(new["block"]["dense"]["kernel"]), [F, F, T, T])
    np.testing.assert_array_equal(np.asarray(new["block"]["proj"]["kernel"]), [T, T, F, F])
    np.testing.assert_array_equal(np.asarray(new["head"]["kernel"]), [F, T, T, T])
    assert new["head"]["bias"] is None


def test_layerwise_exclude_keeps_layer():
    params = _params()
    mask = _mask(params)
    mask["out"]["kernel"] = jnp.array([[T, F], [T, T]])
    s = scores.magnitude(params, mask)
    new = pruning.prune(s, mask, 0.5, exclude=("out",))
    np.testing.assert_array_equal(np.asarray(new["fc1"]["kernel"]), [[F, T, F], [T, F, T]])
    np.testing.assert_array_equal(np.asarray(new["out"]["kernel"]), [[T, F], [T, T]])


def test_rate_zero_and_one():
    params = _params()
    mask = _mask(params)
    s = scores.magnitude(params, mask)
    _assert_mask_equal(pruning.prune(s, mask, 0.0), mask)
    allgone = pruning.prune(s, mask, 1.0)
    assert not bool(allgone["fc1"]["kernel"].any()) and not bool(allgone["out"]["kernel"].any())
    g = pruning.prune(s, mask, 1.0, scope="global")
    _assert_mask_equal(g, allgone)


def test_input_masks_not_mutated():
    params = _params()
    mask = _mask(params)
    s = scores.magnitude(params, mask)
    pruning.prune(s, mask, 0.5)
    assert bool(mask["fc1"]["kernel"].all()) and bool(mask["out"]["kernel"].all())


# --------------------------------------------------------------------------- ties

def test_ties_break_toward_earlier_position():
    s = {"l": {"kernel": jnp.full((2, 3), 7.0)}}
    m = {"l": {"kernel": jnp.ones((2, 3), bool)}}
    # k = round(0.5*6) = 3: row-major positions 0, 1, 2 go
    new = pruning.prune(s, m, 0.5)
    np.testing.assert_array_equal(np.asarray(new["l"]["kernel"]), [[F, F, F], [T, T, T]])


def test_ties_partial_break_toward_earlier_position():
    s = {"l": {"kernel": jnp.array([3.0, 1.0, 2.0, 1.0, 1.0, 0.5])}}
    m = {"l": {"kernel": jnp.ones(6, bool)}}
    # k = round(0.5*6) = 3: 0.5 (pos5), then the 1.0 tie at pos1, pos3 (pos4 survives)
    new = pruning.prune(s, m, 0.5)
    np.testing.assert_array_equal(np.asarray(new["l"]["kernel"]), [T, F, T, F, T, F])


def test_negative_and_positive_zero_tie():
    s = {"l": {"kernel": jnp.array([0.0, -0.0, 0.0, -0.0])}}
    m = {"l": {"kernel": jnp.ones(4, bool)}}
    new = pruning.prune(s, m, 0.5)
    np.testing.assert_array_equal(np.asarray(new["l"]["kernel"]), [F, F, T, T])


@pytest.mark.parametrize("out_first", [False, True])
def test_global_ties_break_toward_earlier_layer(out_first):
    fc1 = jnp.array([1.0, 1.0, 2.0])
    out = jnp.array([1.0, 1.0])
    if out_first:  # insertion order must not matter: jax sorts dict keys, fc1 < out
        s = {"out": {"kernel": out}, "fc1": {"kernel": fc1}}
        m = {"out": {"kernel": jnp.ones(2, bool)}, "fc1": {"kernel": jnp.ones(3, bool)}}
    else:
        s = {"fc1": {"kernel": fc1}, "out": {"kernel": out}}
        m = {"fc1": {"kernel": jnp.ones(3, bool)}, "out": {"kernel": jnp.ones(2, bool)}}
    # pool of 5, k = round(0.6*5) = 3: fc1[0], fc1[1], then out[0] (fc1[2] has score 2)
    new = pruning.prune(s, m, 0.6, scope="global")
    np.testing.assert_array_equal(np.asarray(new["fc1"]["kernel"]), [F, F, T])
    np.testing.assert_array_equal(np.asarray(new["out"]["kernel"]), [F, T])


def test_global_all_equal_scores_prune_first_layer_first():
    s = {"a": {"kernel": jnp.ones((2, 2))}, "b": {"kernel": jnp.ones(3)}}
    m = {"a": {"kernel": jnp.ones((2, 2), bool)}, "b": {"kernel": jnp.ones(3, bool)}}
    # pool 7, k = round(0.8*7) = round(5.6) = 6 -> all of a, b[0], b[1]
    new = pruning.prune(s, m, 0.8, scope="global")
    np.testing.assert_array_equal(np.asarray(new["a"]["kernel"]), [[F, F], [F, F]])
    np.testing.assert_array_equal(np.asarray(new["b"]["kernel"]), [F, F, T])


# --------------------------------------------------------------------------- global

def _global_tree():
    s = {
        "a": {"kernel": jnp.array([[0.9, 0.1], [0.4, 0.6]]), "bias": jnp.array([0.0, 0.0])},
        "b": {"kernel": jnp.array([0.2, 0.8, 0.05, 0.7])},
        "out": {"kernel": jnp.array([0.01, 0.02, 0.03]), "bias": jnp.array([5.0])},
    }
    m = {
        "a": {"kernel": jnp.array([[T, T], [T, T]]), "bias": None},
        "b": {"kernel": jnp.array([T, T, F, T])},  # b[2] already pruned
        "out": {"kernel": jnp.array([T, F, T]), "bias": None},
    }
    return s, m


def test_global_with_excluded_layer_hand_computed():
    s, m = _global_tree()
    s["a"]["bias"] = None
    s["out"]["bias"] = None
    new = pruning.prune(s, m, 0.5, scope="global", exclude=("out",))
    # pool = a (4 alive) + b (3 alive) = 7, k = round(3.5) = 4.
    # survivor scores: a: .9 .1 .4 .6 ; b: .2 .8 (.05 pruned) .7
    # lowest four: .1 (a1), .2 (b0), .4 (a2), .6 (a3)
    np.testing.assert_array_equal(np.asarray(new["a"]["kernel"]), [[T, F], [F, F]])
    np.testing.assert_array_equal(np.asarray(new["b"]["kernel"]), [F, T, F, T])
    # excluded layer unchanged even though it holds the lowest scores
    np.testing.assert_array_equal(np.asarray(new["out"]["kernel"]), [T, F, T])
    assert new["a"]["bias"] is None and new["out"]["bias"] is None
    # exact count pruned in the pool
    before = sum(int(m[k]["kernel"].sum()) for k in ("a", "b"))
    after = sum(int(new[k]["kernel"].sum()) for k in ("a", "b"))
    assert before - after == int(pruning.prune_count(7, 0.5)) == 4


def test_global_exclude_glob():
    s, m = _global_tree()
    s["a"]["bias"] = None
    s["out"]["bias"] = None
    new = pruning.prune(s, m, 0.5, scope="global", exclude=("o*",))
    np.testing.assert_array_equal(np.asarray(new["out"]["kernel"]), [T, F, T])
    np.testing.assert_array_equal(np.asarray(new["a"]["kernel"]), [[T, F], [F, F]])


def test_global_without_exclude_hand_computed():
    s, m = _global_tree()
    s["a"]["bias"] = None
    s["out"]["bias"] = None
    # pool alive = 4 + 3 + 2 = 9, k = round(0.3*9) = round(2.7) = 3
    # lowest survivors: out .01, out .03, a .1
    new = pruning.prune(s, m, 0.3, scope="global")
    np.testing.assert_array_equal(np.asarray(new["a"]["kernel"]), [[T, F], [T, T]])
    np.testing.assert_array_equal(np.asarray(new["b"]["kernel"]), [T, T, F, T])
    np.testing.assert_array_equal(np.asarray(new["out"]["kernel"]), [F, F, F])


def test_global_differs_from_layerwise():
    s, m = _global_tree()
    s["a"]["bias"] = None
    s["out"]["bias"] = None
    lw = pruning.prune(s, m, 0.5)
    # layerwise: a k=2 -> .1, .4 ; b k=round(1.5)=2 -> .2, .7 ; out k=1 -> .01
    np.testing.assert_array_equal(np.asarray(lw["a"]["kernel"]), [[T, F], [F, T]])
    np.testing.assert_array_equal(np.asarray(lw["b"]["kernel"]), [F, T, F, F])
    np.testing.assert_array_equal(np.asarray(lw["out"]["kernel"]), [F, F, T])


def test_scores_on_unprunable_leaves_are_ignored():
    # scores given (non-None) where the mask is None must not matter
    s, m = _global_tree()
    a = pruning.prune(s, m, 0.5, scope="global", exclude=("out",))
    s2, _ = _global_tree()
    s2["a"]["bias"] = None
    s2["out"]["bias"] = None
    b = pruning.prune(s2, m, 0.5, scope="global", exclude=("out",))
    _assert_mask_equal(a, b)


def test_global_everything_excluded_is_noop():
    s, m = _global_tree()
    new = pruning.prune(s, m, 0.5, scope="global", exclude=("*",))
    _assert_mask_equal(new, m)


# --------------------------------------------------------------------------- survivors only

def test_pruned_weight_with_huge_score_stays_pruned():
    s = {"l": {"kernel": jnp.array([5.0, 100.0, 1.0, 3.0, -10.0, 2.0])}}
    m = {"l": {"kernel": jnp.array([T, F, T, T, F, T])}}
    # alive = 4 -> k = 2 ; the pruned -10 is not counted and not "re-pruned" ; 100 stays pruned
    new = pruning.prune(s, m, 0.5)
    np.testing.assert_array_equal(np.asarray(new["l"]["kernel"]), [T, F, F, T, F, F])


def test_k_counted_from_survivors_only():
    # 10 weights, 5 already pruned with the lowest scores. rate 0.2:
    # from survivors: k = round(0.2*5) = 1 ; from all weights it would be 2.
    s = {"l": {"kernel": jnp.arange(10.0)}}
    m = {"l": {"kernel": jnp.array([F] * 5 + [T] * 5)}}
    new = pruning.prune(s, m, 0.2)
    np.testing.assert_array_equal(np.asarray(new["l"]["kernel"]), [F] * 6 + [T] * 4)
    g = pruning.prune(s, m, 0.2, scope="global")
    np.testing.assert_array_equal(np.asarray(g["l"]["kernel"]), [F] * 6 + [T] * 4)


def test_fully_pruned_layer_stays_empty():
    s = {"a": {"kernel": jnp.array([1.0, 2.0])}, "b": {"kernel": jnp.array([3.0, 4.0, 5.0])}}
    m = {"a": {"kernel": jnp.zeros(2, bool)}, "b": {"kernel": jnp.ones(3, bool)}}
    lw = pruning.prune(s, m, 0.5)
    np.testing.assert_array_equal(np.asarray(lw["a"]["kernel"]), [F, F])
    np.testing.assert_array_equal(np.asarray(lw["b"]["kernel"]), [F, F, T])  # k=round(1.5)=2
    g = pruning.prune(s, m, 0.5, scope="global")
    np.testing.assert_array_equal(np.asarray(g["a"]["kernel"]), [F, F])
    np.testing.assert_array_equal(np.asarray(g["b"]["kernel"]), [F, F, T])


# --------------------------------------------------------------------------- prune_count

@pytest.mark.parametrize(
    "alive, rate, expected",
    [
        (5, 0.5, 3),
        (10, 0.2, 2),
        (266200, 0.2, 53240),
        (0, 0.2, 0),
        (1, 0.5, 1),
        (3, 0.5, 2),
        (1, 0.2, 0),
        (3, 0.2, 1),   # 0.6 -> 1
        (7, 0.2, 1),   # 1.4 -> 1
        (8, 0.2, 2),   # 1.6 -> 2
        (5, 0.1, 1),   # 0.5 -> 1
        (15, 0.1, 2),  # 1.5 -> 2
        (25, 0.1, 3),  # 2.5 -> 3
        (4, 0.1, 0),   # 0.4 -> 0
        (10, 0.35, 4),  # 3.5 -> 4
        (30, 0.35, 11),  # 10.5 -> 11
        (20, 0.35, 7),
        (100, 1.0, 100),
        (100, 0.0, 0),
        (12345, 0.25, 3086),  # 3086.25
        (30_000_000, 0.2, 6_000_000),
    ],
)
def test_prune_count_exact(alive, rate, expected):
    got = pruning.prune_count(alive, rate)
    assert int(got) == expected


def _ref_count(alive: int, rate: float) -> int:
    return math.floor(Fraction(str(rate)) * alive + Fraction(1, 2))


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.35])
def test_prune_count_matches_exact_reference_random(rate):
    rs = np.random.RandomState(1234)
    alive = rs.randint(0, 30_000_001, size=5000)
    # make sure exact halves are included: multiples of 5 (rate .1) and 10 mod 20 (rate .35)
    alive = np.concatenate([alive, np.arange(0, 1000), 20 * rs.randint(0, 1_000_000, 200) + 10,
                            10 * rs.randint(0, 3_000_000, 200) + 5, [30_000_000]])
    got = np.asarray(pruning.prune_count(jnp.asarray(alive, jnp.int32), rate))
    ref = np.array([_ref_count(int(a), rate) for a in alive])
    np.testing.assert_array_equal(got, ref)
    # away from exact halves, Python's float formula floor(rate*alive + 0.5) agrees too
    # (at exact halves the float product may land just below .5 and round down)
    exact = [Fraction(str(rate)) * int(a) for a in alive]
    not_half = np.array([(x - math.floor(x)) != Fraction(1, 2) for x in exact])
    flt = np.array([math.floor(rate * int(a) + 0.5) for a in alive])
    np.testing.assert_array_equal(flt[not_half], ref[not_half])
    if rate != 0.2:  # 0.2 * n is never a half; for 0.1 and 0.35 the halves were exercised
        assert (~not_half).sum() >= 100


def test_prune_count_under_jit_and_vmap():
    f = jax.jit(jax.vmap(lambda a: pruning.prune_count(a, 0.2)))
    a = jnp.array([0, 5, 10, 13, 266200, 30_000_000], jnp.int32)
    np.testing.assert_array_equal(np.asarray(f(a)), [_ref_count(int(x), 0.2) for x in a])


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_prune_count_bad_rate(rate):
    with pytest.raises(ValueError):
        pruning.prune_count(10, rate)


# --------------------------------------------------------------------------- iterative rounds

def test_iterative_rounds_only_shrink_and_density():
    rs = np.random.RandomState(0)
    mask = {"l": {"kernel": jnp.ones(1000, bool)}}
    n = 1000
    for r in range(1, 11):
        s = {"l": {"kernel": jnp.asarray(rs.randn(1000).astype(np.float32))}}
        new = pruning.prune(s, mask, 0.2)
        old_m = np.asarray(mask["l"]["kernel"])
        new_m = np.asarray(new["l"]["kernel"])
        assert not np.any(new_m & ~old_m), f"mask grew in round {r}"
        n = n - math.floor(0.2 * n + 0.5)
        assert int(new_m.sum()) == n
        # the removed weights are exactly the lowest-scoring survivors
        sc = np.asarray(s["l"]["kernel"])
        removed = old_m & ~new_m
        if removed.any() and new_m.any():
            assert sc[removed].max() <= sc[new_m].min()
        assert abs(float(M.density(new)["l"]) - 0.8 ** r) <= r / 1000
        assert abs(float(M.global_density(new)) - 0.8 ** r) <= r / 1000
        mask = new
    assert n == 107


def test_iterative_rounds_global_jitted():
    rs = np.random.RandomState(1)
    mask = {"a": {"kernel": jnp.ones((20, 30), bool)}, "b": {"kernel": jnp.ones(400, bool)}}
    step = jax.jit(lambda s, m: pruning.prune(s, m, 0.2, scope="global"))
    n = 1000
    for _ in range(5):
        s = {"a": {"kernel": jnp.asarray(rs.rand(20, 30).astype(np.float32))},
             "b": {"kernel": jnp.asarray(rs.rand(400).astype(np.float32))}}
        new = step(s, mask)
        for k in ("a", "b"):
            assert not np.any(np.asarray(new[k]["kernel"]) & ~np.asarray(mask[k]["kernel"]))
        n -= math.floor(0.2 * n + 0.5)
        assert sum(int(new[k]["kernel"].sum()) for k in ("a", "b")) == n
        mask = new


# --------------------------------------------------------------------------- vmap / jit

def _ticket_tree(rs):
    return {
        "fc1": {"kernel": jnp.asarray(rs.randn(4, 5).astype(np.float32)), "bias": None},
        "fc2": {"kernel": jnp.asarray(rs.randn(5, 3).astype(np.float32)), "bias": None},
        "out": {"kernel": jnp.asarray(rs.randn(3, 2).astype(np.float32)), "bias": None},
    }


def _stack(trees):
    return jax.tree.map(lambda *xs: None if xs[0] is None else jnp.stack(xs), *trees,
                        is_leaf=lambda x: x is None)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(rate={"out": 0.1, "*": 0.2}),
        dict(rate=0.35, scope="global"),
        dict(rate=0.5, scope="global", exclude=("out",)),
    ],
)
def test_vmap_jit_matches_per_ticket(kwargs):
    rs = np.random.RandomState(42)
    ticket_scores = [_ticket_tree(rs) for _ in range(3)]
    # different starting masks per ticket (different alive counts -> traced k)
    ticket_masks = [
        jax.tree.map(lambda x: None if x is None else jnp.asarray(rs.rand(*x.shape) < p),
                     _ticket_tree(rs), is_leaf=lambda x: x is None)
        for p in (1.0, 0.8, 0.5)
    ]
    fn = lambda s, m: pruning.prune(s, m, **kwargs)  # noqa: E731
    batched = jax.jit(jax.vmap(fn))(_stack(ticket_scores), _stack(ticket_masks))
    for t in range(3):
        single = fn(ticket_scores[t], ticket_masks[t])
        jitted = jax.jit(fn)(ticket_scores[t], ticket_masks[t])
        _assert_mask_equal(jitted, single)
        got = jax.tree.map(lambda x: None if x is None else x[t], batched,
                           is_leaf=lambda x: x is None)
        _assert_mask_equal(got, single)
        # sanity: the per-ticket count rule holds
        if kwargs.get("scope") == "global" and not kwargs.get("exclude"):
            before = sum(int(v["kernel"].sum()) for v in ticket_masks[t].values())
            after = sum(int(v["kernel"].sum()) for v in single.values())
            assert before - after == _ref_count(before, kwargs["rate"])


def test_vmap_tickets_with_same_mask_differ_by_scores():
    rs = np.random.RandomState(7)
    s = jnp.asarray(rs.rand(3, 10).astype(np.float32))
    m = jnp.ones((3, 10), bool)
    out = jax.vmap(lambda si, mi: pruning.prune({"l": {"kernel": si}}, {"l": {"kernel": mi}}, 0.3))(s, m)
    got = np.asarray(out["l"]["kernel"])
    for t in range(3):
        expected = np.ones(10, bool)
        expected[np.argsort(np.asarray(s[t]), kind="stable")[:3]] = False
        np.testing.assert_array_equal(got[t], expected)


# --------------------------------------------------------------------------- NaN

def test_nan_scores_never_pruned():
    s = {"l": {"kernel": jnp.array([np.nan, 0.5, 0.1, np.nan, 0.3, 0.9])}}
    m = {"l": {"kernel": jnp.ones(6, bool)}}
    # k = round(0.5*6) = 3 -> .1, .3, .5 ; NaNs survive
    new = pruning.prune(s, m, 0.5)
    np.testing.assert_array_equal(np.asarray(new["l"]["kernel"]), [T, F, F, T, F, T])


def test_negative_nan_scores_never_pruned():
    # 0/0 yields a NaN with the sign bit set on common hardware; it must still sort last
    neg_nan = -jnp.float32(np.nan)
    assert np.signbit(np.asarray(neg_nan))
    s = {"l": {"kernel": jnp.array([0.2, 0.0, 0.0, 0.7]).at[1].set(neg_nan).at[2].set(jnp.nan)}}
    m = {"l": {"kernel": jnp.ones(4, bool)}}
    new = pruning.prune(s, m, 0.5)
    np.testing.assert_array_equal(np.asarray(new["l"]["kernel"]), [F, T, T, F])


def test_nan_scores_global_and_inf():
    s = {"a": {"kernel": jnp.array([np.nan, -np.inf])}, "b": {"kernel": jnp.array([np.inf, 1.0, np.nan])}}
    m = {"a": {"kernel": jnp.ones(2, bool)}, "b": {"kernel": jnp.ones(3, bool)}}
    # pool 5, k = round(0.6*5) = 3 -> -inf, 1.0, +inf ; NaNs stay
    new = pruning.prune(s, m, 0.6, scope="global")
    np.testing.assert_array_equal(np.asarray(new["a"]["kernel"]), [T, F])
    np.testing.assert_array_equal(np.asarray(new["b"]["kernel"]), [F, F, T])


def test_nan_score_on_pruned_weight_irrelevant():
    s = {"l": {"kernel": jnp.array([np.nan, 2.0, 1.0, 3.0])}}
    m = {"l": {"kernel": jnp.array([F, T, T, T])}}
    new = pruning.prune(s, m, 0.34)  # alive 3, k = round(1.02) = 1
    np.testing.assert_array_equal(np.asarray(new["l"]["kernel"]), [F, T, F, T])


# --------------------------------------------------------------------------- bad input

def test_unknown_scope_raises():
    params = _params()
    mask = _mask(params)
    s = scores.magnitude(params, mask)
    with pytest.raises(ValueError) as e:
        pruning.prune(s, mask, 0.2, scope="per_layer")
    msg = str(e.value)
    assert "per_layer" in msg and "layerwise" in msg and "global" in msg


@pytest.mark.parametrize("scope", ["layerwise", "global"])
@pytest.mark.parametrize("rate", [-0.1, 1.01, 2.0])
def test_rate_out_of_range_raises(scope, rate):
    params = _params()
    mask = _mask(params)
    s = scores.magnitude(params, mask)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pruning.prune(s, mask, rate, scope=scope)


def test_rate_out_of_range_in_dict_raises():
    params = _params()
    mask = _mask(params)
    s = scores.magnitude(params, mask)
    with pytest.raises(ValueError):
        pruning.prune(s, mask, {"out": 1.5, "*": 0.2})


def test_layerwise_dict_without_match_names_layer():
    params = _params()
    mask = _mask(params)
    s = scores.magnitude(params, mask)
    with pytest.raises(ValueError) as e:
        pruning.prune(s, mask, {"fc1": 0.2})
    assert "'out'" in str(e.value)


def test_layerwise_dict_unmatched_but_excluded_is_ok():
    params = _params()
    mask = _mask(params)
    s = scores.magnitude(params, mask)
    new = pruning.prune(s, mask, {"fc1": 0.5}, exclude=("out",))
    np.testing.assert_array_equal(np.asarray(new["fc1"]["kernel"]), [[F, T, F], [T, F, T]])
    assert bool(new["out"]["kernel"].all())


def test_global_with_dict_rate_raises():
    params = _params()
    mask = _mask(params)
    s = scores.magnitude(params, mask)
    with pytest.raises(ValueError, match="global"):
        pruning.prune(s, mask, {"*": 0.2}, scope="global")


def test_layer_rates_helper():
    r = pruning.layer_rates(["fc1", "fc2", "out"], 0.2, {"out": 0.1})
    assert r == {"fc1": 0.2, "fc2": 0.2, "out": 0.1}
    assert pruning.layer_rates(["a"], 0.3) == {"a": 0.3}


# --------------------------------------------------------------------------- scores

def test_magnitude_scores():
    params = _params()
    mask = _mask(params)
    s = scores.magnitude(params, mask)
    assert s["fc1"]["bias"] is None and s["out"]["bias"] is None
    np.testing.assert_array_equal(np.asarray(s["fc1"]["kernel"]), np.abs(FC1_KERNEL))
    np.testing.assert_array_equal(np.asarray(s["out"]["kernel"]), np.abs(OUT_KERNEL))


def test_magnitude_scores_ignore_mask_values():
    params = _params()
    mask = _mask(params)
    mask["fc1"]["kernel"] = jnp.zeros((2, 3), bool)
    s = scores.magnitude(params, mask)
    np.testing.assert_array_equal(np.asarray(s["fc1"]["kernel"]), np.abs(FC1_KERNEL))


def test_scores_get():
    assert scores.get("magnitude") is scores.magnitude
    with pytest.raises(ValueError) as e:
        scores.get("nope")
    assert "nope" in str(e.value) and "magnitude" in str(e.value)
