"""Controls (reinit, shuffle, reset) and the 2018 convergence rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import controls, models, rounds
from ltjax import masks as M
from ltjax.stopping import convergence_iteration

MODEL = models.mlp((30, 20), input_shape=(8,), init="trunc_normal", init_std=0.1)


def _ticket(seed=0, density=0.3):
    params = MODEL.init(jax.random.PRNGKey(seed))
    mask = M.make_mask(params, MODEL.is_prunable)
    mask = jax.tree.map(lambda m, k: None if m is None else jax.random.uniform(k, m.shape) < density,
                        mask, {n: {"kernel": jax.random.PRNGKey(i + 10), "bias": None} for i, n in enumerate(mask)},
                        is_leaf=lambda x: x is None)
    return M.apply_mask(params, mask), mask


def test_shuffle_keeps_counts_and_values_but_moves_them():
    params, mask = _ticket()
    new_p, new_m = controls.shuffle(jax.random.PRNGKey(1), params, mask)
    for name in M.layer_names(mask):
        m0, m1 = np.asarray(mask[name]["kernel"]), np.asarray(new_m[name]["kernel"])
        p0, p1 = np.asarray(params[name]["kernel"]), np.asarray(new_p[name]["kernel"])
        assert m1.sum() == m0.sum()                                  # per-layer count
        np.testing.assert_array_equal(np.sort(p1[m1]), np.sort(p0[m0]))  # the multiset of values
        assert np.all(p1[~m1] == 0)
        assert not np.array_equal(m0, m1)                            # positions changed
        np.testing.assert_array_equal(new_p[name]["bias"], params[name]["bias"])
        assert new_m[name]["bias"] is None


def test_shuffle_only_selected_layers_and_is_keyed():
    params, mask = _ticket()
    p1, m1 = controls.shuffle(jax.random.PRNGKey(1), params, mask, layers=("fc*",))
    np.testing.assert_array_equal(m1["out"]["kernel"], mask["out"]["kernel"])
    np.testing.assert_array_equal(p1["out"]["kernel"], params["out"]["kernel"])
    p2, m2 = controls.shuffle(jax.random.PRNGKey(1), params, mask, layers=("fc*",))
    np.testing.assert_array_equal(m1["fc1"]["kernel"], m2["fc1"]["kernel"])
    _, m3 = controls.shuffle(jax.random.PRNGKey(2), params, mask, layers=("fc*",))
    assert not np.array_equal(m1["fc1"]["kernel"], m3["fc1"]["kernel"])


def test_shuffle_positions_are_uniform():
    """Each position is equally likely to receive a survivor (chi-square-free check on 2000 draws)."""
    mask = {"l": {"kernel": jnp.array([True] * 3 + [False] * 7).reshape(2, 5), "bias": None}}
    params = {"l": {"kernel": jnp.where(mask["l"]["kernel"], 1.0, 0.0), "bias": jnp.zeros(5)}}
    keys = jax.random.split(jax.random.PRNGKey(0), 2000)
    _, m = jax.vmap(lambda k: controls.shuffle(k, params, mask))(keys)
    freq = np.asarray(m["l"]["kernel"]).mean(0)
    np.testing.assert_allclose(freq, 0.3, atol=0.04)


def test_random_pruning_keeps_per_layer_counts_and_the_start_weights_at_new_positions():
    source = MODEL.init(jax.random.PRNGKey(0))  # the unmasked weights the ticket starts from
    _, mask = _ticket()
    new_p, new_m = controls.random_prune(jax.random.PRNGKey(3), source, mask)
    for name in M.layer_names(mask):
        m0, m1 = np.asarray(mask[name]["kernel"]), np.asarray(new_m[name]["kernel"])
        w, src = np.asarray(new_p[name]["kernel"]), np.asarray(source[name]["kernel"])
        assert m1.sum() == m0.sum() and not np.array_equal(m0, m1)
        np.testing.assert_array_equal(w[m1], src[m1])  # θ0's own values at the new positions
        assert np.all(w[~m1] == 0)
        np.testing.assert_array_equal(new_p[name]["bias"], source[name]["bias"])
    again = controls.random_prune(jax.random.PRNGKey(3), source, mask)[1]
    np.testing.assert_array_equal(again["fc1"]["kernel"], new_m["fc1"]["kernel"])


def test_reinit_keeps_mask_changes_values_same_distribution():
    params, mask = _ticket()
    new = controls.reinit(jax.random.PRNGKey(5), MODEL.init, mask)
    k0, k1, m = (np.asarray(x) for x in (params["fc1"]["kernel"], new["fc1"]["kernel"], mask["fc1"]["kernel"]))
    assert np.all(k1[~m] == 0) and np.all(k1[m] != 0)
    assert not np.allclose(k0[m], k1[m])
    assert abs(k1[m].std() - k0[m].std()) < 0.01 and np.abs(k1[m]).max() <= 0.2  # N(0, 0.1²) cut at 2σ
    assert jax.vmap(lambda k: controls.reinit(k, MODEL.init, mask))(jax.random.split(jax.random.PRNGKey(0), 2))


def test_parse_controls():
    assert rounds.parse_controls(("reinit:3", "shuffle")) == [("reinit", 3), ("shuffle", 1)]
    for bad in (("nope",), ("reinit:0",), ("reinit:x",)):
        with pytest.raises(ValueError):
            rounds.parse_controls(bad)


# -- convergence rule (footnote 5) -----------------------------------------------------------

STEP = np.arange(100, 6001, 100)


def test_convergence_of_a_ramp():
    acc = np.minimum(STEP / 2000, 1.0) * 0.9  # rises until iteration 2000, then flat
    # MA over the last 10 evaluations is flat from 2900 (its window starts at 2000);
    # at 2800 the MA is still 0.0045 below its later value.
    assert convergence_iteration(STEP, acc) == 2900


def test_convergence_of_a_step_and_of_noise():
    acc = np.where(STEP < 1500, 0.5, 0.95)
    assert convergence_iteration(STEP, acc) == 2400
    big_wiggle = 0.9 + 0.05 * np.sin(STEP / 150.0)
    assert convergence_iteration(STEP, big_wiggle) == -1
    small_wiggle = 0.9 + 0.001 * np.sin(STEP / 150.0)
    assert convergence_iteration(STEP, small_wiggle) == 1000  # first full window
    batched = convergence_iteration(STEP, np.stack([acc, big_wiggle]))
    assert batched.tolist() == [2400, -1]


def test_convergence_needs_the_whole_span():
    acc = np.where(STEP < 5500, 0.5, 0.95)  # jumps too late to observe 1000 steady iterations
    assert convergence_iteration(STEP, acc) == 1000  # the early plateau qualifies
    short = np.arange(100, 1501, 100)
    assert convergence_iteration(short, np.linspace(0, 1, len(short))) == -1
