"""Deconstructing lottery tickets (ltjax.supermask): each mask criterion on a hand-computed
case, the quadrant rule of the "init & final" criteria, signed constants by hand, the
straight-through Bernoulli mask's value and gradient, and on real MNIST: a learned supermask
never changes a weight, its recorded accuracy is that of θ0 ⊙ mask, and masks of a briefly
trained LeNet lift the untrained θ0 far above chance."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ltjax import data as D
from ltjax import masks as M
from ltjax import models
from ltjax import supermask as S
from ltjax.train import TrainSpec, device_data, make_trainer

# one 2×3 layer, flat positions 0..5
W_INIT = np.array([[0.1, -0.5, 0.3], [-0.2, 0.4, -0.05]], np.float32)
W_FINAL = np.array([[0.6, 0.2, -0.1], [-0.3, -0.9, 0.05]], np.float32)
# keep 3 of 6. |wi| = .1 .5 .3 .2 .4 .05, |wf| = .6 .2 .1 .3 .9 .05; signs agree at 0 and 3.
# init&final: ranks |wi| = 1 5 3 2 4 0, ranks |wf| = 4 2 1 3 5 0 (sixths), min = 1 2 1 2 4 0.
# large_final_same_sign scores .6 0 0 .3 0 0: the tie among the zeros removes earlier positions.
KEPT = {
    "large_final": {0, 3, 4},
    "small_final": {1, 2, 5},
    "large_init": {1, 2, 4},
    "small_init": {0, 3, 5},
    "large_init_large_final": {1, 3, 4},
    "small_init_small_final": {2, 3, 5},
    "magnitude_increase": {0, 3, 4},  # |wf| − |wi| = .5 −.3 −.2 .1 .5 0
    "movement": {0, 1, 4},  # |wf − wi| = .5 .7 .4 .1 1.3 .1
    "large_final_same_sign": {0, 3, 5},
}


def _layer(w):
    return {"fc1": {"kernel": jnp.asarray(w), "bias": jnp.zeros(3)}}


def _dense():
    return {"fc1": {"kernel": jnp.ones((2, 3), bool), "bias": None}}


@pytest.mark.parametrize("name", sorted(KEPT))
def test_each_criterion_keeps_the_hand_computed_weights(name):
    mask = S.criterion_mask(name, _layer(W_INIT), _layer(W_FINAL), _dense(), 0.5)
    kept = set(np.flatnonzero(np.asarray(mask["fc1"]["kernel"])).tolist())
    assert kept == KEPT[name]
    assert mask["fc1"]["bias"] is None


def test_criteria_formulas():
    wi, wf = jnp.asarray(W_INIT), jnp.asarray(W_FINAL)
    np.testing.assert_allclose(S.CRITERIA["magnitude_increase"](wi, wf), np.abs(W_FINAL) - np.abs(W_INIT))
    np.testing.assert_allclose(S.CRITERIA["movement"](wi, wf), np.abs(W_FINAL - W_INIT))
    # the paper's formula for large_final_same_sign: max(0, wi · wf / |wi|)
    np.testing.assert_allclose(S.CRITERIA["large_final_same_sign"](wi, wf),
                               np.maximum(0, W_INIT * W_FINAL / np.abs(W_INIT)), rtol=1e-6)
    np.testing.assert_array_equal(S.rank(jnp.array([3.0, 1.0, 1.0, 2.0])), np.array([3, 0, 1, 2]) / 4)


def test_init_and_final_criteria_keep_a_quadrant_at_exact_counts():
    # Zhou et al.'s code keeps the weights above one common percentile of |wi| and of |wf|: the
    # kept set must be exactly {rank_i ≥ t and rank_f ≥ t} for its own threshold t, at any count.
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    wi, wf = jax.random.normal(k1, (40, 25)), jax.random.normal(k2, (40, 25))
    ri, rf = np.asarray(S.rank(jnp.abs(wi))), np.asarray(S.rank(jnp.abs(wf)))
    dense = {"l": {"kernel": jnp.ones((40, 25), bool)}}
    for density in (0.5, 0.2, 0.05):
        m = np.asarray(S.criterion_mask("large_init_large_final", {"l": {"kernel": wi}}, {"l": {"kernel": wf}},
                                        dense, density)["l"]["kernel"])
        assert m.sum() == round(density * 1000)
        t = np.minimum(ri, rf)[m].min()
        quadrant = (ri >= t) & (rf >= t)
        # all of the quadrant above t is kept; at t itself only ties (one weight: ranks are distinct)
        assert np.all(m <= quadrant) and quadrant.sum() - m.sum() <= 1


def test_random_criterion_needs_a_key_and_counts_are_exact_per_layer():
    model = models.mlp((30, 20), input_shape=(12,), num_outputs=5, init="glorot_normal")
    p0 = model.init(jax.random.PRNGKey(0))
    pf = model.init(jax.random.PRNGKey(1))
    dense = M.make_mask(p0, model.is_prunable)
    with pytest.raises(ValueError, match="key="):
        S.criterion_scores("random", p0, pf, dense)
    with pytest.raises(ValueError, match="valid criteria"):
        S.criterion_scores("largest", p0, pf, dense)
    density = {"fc*": 0.3, "out": 0.6}
    for name in S.NAMES:
        mask = S.criterion_mask(name, p0, pf, dense, density, key=jax.random.PRNGKey(2))
        counts = {k: int(v) for k, v in M.count(mask).items()}
        assert counts == {"fc1": round(0.3 * 360), "fc2": round(0.3 * 600), "out": round(0.6 * 100)}, name
    a = S.criterion_mask("random", p0, pf, dense, 0.5, key=jax.random.PRNGKey(2))
    b = S.criterion_mask("random", p0, pf, dense, 0.5, key=jax.random.PRNGKey(3))
    assert M.hamming(a, b) > 0


def test_signed_constant_by_hand():
    w = jnp.array([[1.0, -3.0], [0.0, 2.0]])  # mean 0, population variance (1 + 9 + 0 + 4) / 4 = 3.5
    params = {"fc1": {"kernel": w, "bias": jnp.array([0.5, -0.5])}}
    mask = {"fc1": {"kernel": jnp.ones((2, 2), bool), "bias": None}}
    out = S.signed_constant(params, mask)
    s = np.sqrt(3.5)
    np.testing.assert_allclose(out["fc1"]["kernel"], [[s, -s], [0.0, s]], rtol=1e-6)
    np.testing.assert_array_equal(out["fc1"]["bias"], params["fc1"]["bias"])
    np.testing.assert_allclose(S.signed_constant(params, mask, 2.0)["fc1"]["kernel"], [[2 * s, -2 * s], [0, 2 * s]],
                               rtol=1e-6)


def test_straight_through_mask_is_binary_with_the_sigmoid_gradient():
    s = {"a": jnp.array([0.0, 2.0, -1.0, 30.0, -30.0]), "b": None}
    c = jnp.array([1.0, -2.0, 3.0, 1.0, 1.0])
    m = S.sample_mask(s, jax.random.PRNGKey(0))
    assert set(np.unique(np.asarray(m["a"])).tolist()) <= {0.0, 1.0} and m["b"] is None
    assert float(m["a"][3]) == 1.0 and float(m["a"][4]) == 0.0  # σ(±30) rounds to a sure draw
    g = jax.grad(lambda t: jnp.sum(c * S.sample_mask(t, jax.random.PRNGKey(0))["a"]))(s)
    sig = 1 / (1 + np.exp(-np.asarray(s["a"], np.float64)))
    np.testing.assert_allclose(g["a"], np.asarray(c) * sig * (1 - sig), rtol=1e-5, atol=1e-12)
    assert float(g["a"][0]) == 0.25  # σ'(0) = 1/4
    # the empirical keep rate follows σ(s)
    keys = jax.random.split(jax.random.PRNGKey(1), 4000)
    rate = jax.vmap(lambda k: S.sample_mask({"a": jnp.array([0.0, 2.0, -1.0])}, k)["a"])(keys).mean(0)
    np.testing.assert_allclose(rate, 1 / (1 + np.exp(-np.array([0.0, 2.0, -1.0]))), atol=0.03)


def test_trainer_rejects_batch_norm_and_ragged_steps():
    with pytest.raises(ValueError, match="batch norm"):
        S.make_supermask_trainer(models.resnet20(), S.SupermaskSpec(), (0.0,), (1.0,))
    with pytest.raises(ValueError, match="multiple of eval_every"):
        S.make_supermask_trainer(models.mlp((8,)), S.SupermaskSpec(steps=150, eval_every=100), (0.0,), (1.0,))


@pytest.fixture(scope="module")
def mnist():
    ds = D.load("mnist", validation_size=0)
    return ds, device_data(ds)


def test_learned_supermask_never_changes_a_weight_on_mnist(mnist):
    ds, data = mnist
    model = models.mlp((300, 100), init="glorot_normal")
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    theta0 = models.run_init(jax.vmap(model.init), keys)
    spec = S.SupermaskSpec(steps=200, eval_every=100, tx=optax.adam(0.1))
    res = S.make_supermask_trainer(model, spec, ds.mean, ds.std)(theta0, keys, data)
    for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(theta0)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bitwise: only the mask learned
    assert res.logits["fc1"]["bias"] is None and res.logits["fc1"]["kernel"].shape == (2, 784, 300)
    assert not np.array_equal(res.logits["fc1"]["kernel"][0], res.logits["fc1"]["kernel"][1])  # seeds differ
    # the recorded accuracy of the thresholded mask is that of the untrained θ0 ⊙ (s > 0)
    hard = S.threshold_mask(res.logits)
    _, acc = jax.jit(jax.vmap(lambda p, m: S.masked_accuracy(model, p, m, data, ds.mean, ds.std)))(theta0, hard)
    np.testing.assert_allclose(acc, res.curves.test_acc_threshold[:, -1], atol=1e-6)
    np.testing.assert_allclose(jax.vmap(S._global_density)(hard), res.curves.density[:, -1], atol=1e-6)
    assert np.all(res.curves.test_acc_sampled[:, -1] > 0.8)  # far above chance (10%) after 200 steps

    signed = S.make_supermask_trainer(model, spec._replace(signed_constant=True, steps=100), ds.mean, ds.std)
    res = signed(theta0, keys, data)
    want = jax.vmap(lambda p: S.signed_constant(p, M.make_mask(p, model.is_prunable)))(theta0)
    for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(want)):  # σ summed in another order: 1 ulp
        np.testing.assert_array_equal(np.sign(a), np.sign(b))
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_criterion_masks_on_untrained_lenet_are_far_above_chance(mnist):
    # the supermask effect at small size: LeNet-300-100 trained 300 steps, masks at 10% of each
    # hidden layer (50% of the output layer) applied to θ0 without training
    ds, data = mnist
    model = models.mlp((300, 100), init="glorot_normal")
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    theta0 = models.run_init(jax.vmap(model.init), keys)
    dense = jax.vmap(lambda p: M.make_mask(p, model.is_prunable))(theta0)
    spec = TrainSpec(optimizer="adam", lr=1.2e-3, batch_size=60, eval_every=300)
    final, _ = make_trainer(model, spec, ds.mean, ds.std)(theta0, dense, keys, data, 0, 300)
    density = {"fc*": 0.1, "out": 0.5}

    def acc(name, signed):
        def one(p0, pf, m, k):
            mask = S.criterion_mask(name, p0, pf, m, density, key=k)
            w = S.signed_constant(p0, m) if signed else p0
            return S.masked_accuracy(model, w, mask, data, ds.mean, ds.std)[1]
        return np.asarray(jax.jit(jax.vmap(one))(theta0, final, dense, keys))

    same_sign = acc("large_final_same_sign", True)
    assert np.all(same_sign > 0.5), same_sign
    assert np.all(same_sign > acc("random", True) + 0.3)
