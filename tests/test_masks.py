"""Tests for ltjax.masks: hand-built masks with hand-computed expectations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import masks as M

T, F = True, False


def _params():
    return {
        "fc1": {"kernel": jnp.array([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]]),
                "bias": jnp.array([0.5, -0.5, 1.5])},
        "fc2": {"kernel": jnp.array([7.0, -8.0, 9.0, 10.0])},
        "out": {"kernel": jnp.array([[1.5, 2.5], [-3.5, 4.5]]), "bias": jnp.array([0.25, -0.25])},
    }


def _mask_a():
    return {
        "fc1": {"kernel": jnp.array([[T, F, T], [F, T, T]]), "bias": None},  # 4/6 alive
        "fc2": {"kernel": jnp.array([F, F, F, T])},                         # 1/4
        "out": {"kernel": jnp.array([[T, T], [T, T]]), "bias": None},         # 4/4
    }


def _mask_b():
    return {
        "fc1": {"kernel": jnp.array([[T, T, F], [F, T, F]]), "bias": None},  # 3/6
        "fc2": {"kernel": jnp.array([T, F, F, T])},                         # 2/4
        "out": {"kernel": jnp.array([[F, T], [T, F]]), "bias": None},         # 2/4
    }


def _is_kernel(path, _leaf):
    return M.path_str(path).endswith("kernel")


# --------------------------------------------------------------------------- names

def test_path_and_layer_names():
    flat, _ = jax.tree_util.tree_flatten_with_path({"a": {"b": {"kernel": 1}}, "c": 2})
    paths = [M.path_str(p) for p, _ in flat]
    assert paths == ["a/b/kernel", "c"]
    assert [M.layer_name(p) for p, _ in flat] == ["a/b", "c"]


def test_layer_names_order_sorted_keys():
    m = {"out": {"kernel": jnp.ones(2, bool)}, "fc2": {"kernel": jnp.ones(2, bool), "bias": None},
         "fc1": {"kernel": jnp.ones(2, bool), "bias": None}}
    assert M.layer_names(m) == ["fc1", "fc2", "out"]
    assert M.layer_names(_mask_a()) == ["fc1", "fc2", "out"]
    names = [n for n, _ in M.leaves_with_names(_mask_a())]
    assert names == ["fc1", "fc2", "out"]


def test_layer_names_list_and_nested():
    m = {"layers": [{"kernel": jnp.ones(1, bool)}, {"kernel": jnp.ones(1, bool)}]}
    assert M.layer_names(m) == ["layers/0", "layers/1"]


def test_make_mask():
    m = M.make_mask(_params(), _is_kernel)
    assert m["fc1"]["bias"] is None and m["out"]["bias"] is None
    for k in ("fc1", "fc2", "out"):
        leaf = m[k]["kernel"]
        assert leaf.dtype == jnp.bool_ and leaf.shape == _params()[k]["kernel"].shape
        assert bool(leaf.all())


# --------------------------------------------------------------------------- apply_mask

def test_apply_mask_exact():
    p = _params()
    out = M.apply_mask(p, _mask_a())
    np.testing.assert_array_equal(np.asarray(out["fc1"]["kernel"]), [[1.0, 0.0, 3.0], [0.0, 5.0, -6.0]])
    np.testing.assert_array_equal(np.asarray(out["fc2"]["kernel"]), [0.0, 0.0, 0.0, 10.0])
    np.testing.assert_array_equal(np.asarray(out["out"]["kernel"]), np.asarray(p["out"]["kernel"]))
    # None-mask leaves pass through untouched (same object)
    assert out["fc1"]["bias"] is p["fc1"]["bias"]
    assert out["out"]["bias"] is p["out"]["bias"]
    # zeros are exactly +0.0 and dtypes are kept
    z = np.asarray(out["fc2"]["kernel"])[:3]
    assert not np.any(np.signbit(z))
    assert out["fc1"]["kernel"].dtype == p["fc1"]["kernel"].dtype


def test_apply_mask_zeroes_nan_and_inf():
    p = {"l": {"kernel": jnp.array([np.nan, np.inf, -np.inf, 1.0])}}
    m = {"l": {"kernel": jnp.array([F, F, F, T])}}
    out = M.apply_mask(p, m)
    np.testing.assert_array_equal(np.asarray(out["l"]["kernel"]), [0.0, 0.0, 0.0, 1.0])


def test_apply_mask_bfloat16_dtype():
    p = {"l": {"kernel": jnp.array([1.0, 2.0], jnp.bfloat16)}}
    m = {"l": {"kernel": jnp.array([T, F])}}
    out = M.apply_mask(p, m)
    assert out["l"]["kernel"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(out["l"]["kernel"], np.float32), [1.0, 0.0])


def test_apply_mask_vmap():
    p = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), _params())
    ma, mb = _mask_a(), _mask_b()
    m = jax.tree.map(lambda x, y: None if x is None else jnp.stack([x, y]), ma, mb,
                     is_leaf=lambda x: x is None)
    out = jax.vmap(M.apply_mask)(p, m)
    np.testing.assert_array_equal(np.asarray(out["fc2"]["kernel"]),
                                  [[0.0, 0.0, 0.0, 10.0], [14.0, 0.0, 0.0, 20.0]])
    np.testing.assert_array_equal(np.asarray(out["out"]["bias"]), [[0.25, -0.25], [0.5, -0.5]])


# --------------------------------------------------------------------------- counts

def test_count_size_density():
    m = _mask_a()
    c = M.count(m)
    assert list(c) == ["fc1", "fc2", "out"]
    assert {k: int(v) for k, v in c.items()} == {"fc1": 4, "fc2": 1, "out": 4}
    assert all(v.dtype == jnp.int32 for v in c.values())
    assert M.size(m) == {"fc1": 6, "fc2": 4, "out": 4}
    d = M.density(m)
    np.testing.assert_allclose(float(d["fc1"]), 4 / 6, rtol=1e-6)
    assert float(d["fc2"]) == 0.25
    assert float(d["out"]) == 1.0
    assert all(v.dtype == jnp.float32 for v in d.values())


def test_global_density():
    # (4 + 1 + 4) / (6 + 4 + 4) = 9/14 ; biases not counted
    np.testing.assert_allclose(float(M.global_density(_mask_a())), 9 / 14, rtol=1e-6)
    np.testing.assert_allclose(float(M.global_density(_mask_b())), 7 / 14, rtol=1e-6)
    full = M.make_mask(_params(), _is_kernel)
    assert float(M.global_density(full)) == 1.0


def test_density_vmap():
    ma, mb = _mask_a(), _mask_b()
    m = jax.tree.map(lambda x, y: None if x is None else jnp.stack([x, y]), ma, mb,
                     is_leaf=lambda x: x is None)
    gd = jax.vmap(M.global_density)(m)
    np.testing.assert_allclose(np.asarray(gd), [9 / 14, 7 / 14], rtol=1e-6)
    c = jax.vmap(M.count)(m)
    np.testing.assert_array_equal(np.asarray(c["fc1"]), [4, 3])


# --------------------------------------------------------------------------- set operations

def test_complement():
    m = _mask_a()
    c = M.complement(m)
    assert c["fc1"]["bias"] is None and c["out"]["bias"] is None
    np.testing.assert_array_equal(np.asarray(c["fc1"]["kernel"]), [[F, T, F], [T, F, F]])
    np.testing.assert_array_equal(np.asarray(c["fc2"]["kernel"]), [T, T, T, F])
    np.testing.assert_array_equal(np.asarray(c["out"]["kernel"]), [[F, F], [F, F]])
    assert c["fc1"]["kernel"].dtype == jnp.bool_
    # complement of complement is identity; densities add to 1
    cc = M.complement(c)
    for k in ("fc1", "fc2", "out"):
        np.testing.assert_array_equal(np.asarray(cc[k]["kernel"]), np.asarray(m[k]["kernel"]))
    np.testing.assert_allclose(float(M.global_density(c)), 5 / 14, rtol=1e-6)


def test_intersection():
    i = M.intersection(_mask_a(), _mask_b())
    assert i["fc1"]["bias"] is None
    np.testing.assert_array_equal(np.asarray(i["fc1"]["kernel"]), [[T, F, F], [F, T, F]])
    np.testing.assert_array_equal(np.asarray(i["fc2"]["kernel"]), [F, F, F, T])
    np.testing.assert_array_equal(np.asarray(i["out"]["kernel"]), [[F, T], [T, F]])


def test_overlap():
    o = M.overlap(_mask_a(), _mask_b())
    assert {k: int(v) for k, v in o.items()} == {"fc1": 2, "fc2": 1, "out": 2, "total": 5}
    self_o = M.overlap(_mask_a(), _mask_a())
    assert int(self_o["total"]) == 9
    none_o = M.overlap(_mask_a(), M.complement(_mask_a()))
    assert {k: int(v) for k, v in none_o.items()} == {"fc1": 0, "fc2": 0, "out": 0, "total": 0}


def test_hamming():
    # fc1: a=[T,F,T,F,T,T] b=[T,T,F,F,T,F] -> differ at 1,2,5 = 3
    # fc2: a=[F,F,F,T] b=[T,F,F,T] -> 1
    # out: a=[T,T,T,T] b=[F,T,T,F] -> 2       total 6 / 14
    np.testing.assert_allclose(float(M.hamming(_mask_a(), _mask_b())), 6 / 14, rtol=1e-6)
    np.testing.assert_allclose(float(M.hamming(_mask_b(), _mask_a())), 6 / 14, rtol=1e-6)
    assert float(M.hamming(_mask_a(), _mask_a())) == 0.0
    assert float(M.hamming(_mask_a(), M.complement(_mask_a()))) == 1.0


def test_hamming_vmap_jit():
    ma, mb = _mask_a(), _mask_b()
    stack = lambda x, y: None if x is None else jnp.stack([x, y])  # noqa: E731
    left = jax.tree.map(stack, ma, ma, is_leaf=lambda x: x is None)
    right = jax.tree.map(stack, mb, ma, is_leaf=lambda x: x is None)
    h = jax.jit(jax.vmap(M.hamming))(left, right)
    np.testing.assert_allclose(np.asarray(h), [6 / 14, 0.0], rtol=1e-6)


@pytest.mark.parametrize("fn", [M.count, M.density])
def test_empty_mask_tree(fn):
    assert fn({"a": {"bias": None}}) == {}
    assert M.layer_names({"a": {"bias": None}}) == []


def test_compare_counts_by_hand():
    a = {"l1": {"kernel": jnp.array([[1, 1, 0], [0, 1, 0]], bool)}, "l2": {"kernel": jnp.array([1, 0, 1, 1], bool)},
         "b": {"bias": None}}
    b = {"l1": {"kernel": jnp.array([[1, 0, 1], [0, 1, 1]], bool)}, "l2": {"kernel": jnp.array([0, 0, 1, 1], bool)},
         "b": {"bias": None}}
    c = M.compare(a, b)
    as_int = {k: {q: int(v) for q, v in row.items()} for k, row in c.items()}
    assert as_int["l1"] == {"kept_a": 3, "kept_b": 4, "overlap": 2, "only_a": 1, "only_b": 2, "difference": 3}
    assert as_int["l2"] == {"kept_a": 3, "kept_b": 2, "overlap": 2, "only_a": 1, "only_b": 0, "difference": 1}
    assert as_int["total"] == {"kept_a": 6, "kept_b": 6, "overlap": 4, "only_a": 2, "only_b": 2, "difference": 4}
    # the report's identity for equal-size masks: Kept = Overlap + Difference (one-sided)
    t = as_int["total"]
    assert t["kept_a"] == t["overlap"] + t["only_a"] and t["only_a"] == t["only_b"]
    # the count difference agrees with the normalized Hamming distance
    assert t["difference"] / 10 == pytest.approx(float(M.hamming(a, b)))
