"""ltjax.optim.keep_pruned: pruned weights and their optimizer state stay exactly 0 in any optax chain."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ltjax import masks as M
from ltjax import models
from ltjax.optim import keep_pruned

MODEL = models.mlp((32, 16), input_shape=(8,), num_outputs=3)
X = jax.random.normal(jax.random.PRNGKey(1), (64, 8))
Y = jax.random.randint(jax.random.PRNGKey(2), (64,), 0, 3)

OPTIMIZERS = {
    "sgd_momentum": lambda: optax.sgd(0.05, momentum=0.9),
    "adam": lambda: optax.adam(1e-3),
    "adamw_cosine": lambda: optax.adamw(optax.cosine_decay_schedule(1e-3, 1000), weight_decay=0.05),
}


def _loss(params):
    logits = MODEL.apply(params, X)
    return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()


def _setup():
    params = MODEL.init(jax.random.PRNGKey(0))
    keep = jax.tree_util.tree_map_with_path(
        lambda p, a: jax.random.bernoulli(jax.random.fold_in(jax.random.PRNGKey(3), len(str(p))), 0.3, a.shape)
        if MODEL.is_prunable(p, a) else None, params)
    return params, keep


def _train(opt, params, steps=1000):
    state = opt.init(params)

    def step(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(_loss)(p), s, p)
        return (optax.apply_updates(p, u), s), None

    return jax.jit(lambda p, s: jax.lax.scan(step, (p, s), None, length=steps)[0])(params, state)


def _per_weight_leaves(state, like):
    """The leaves of an optimizer state that are per-weight arrays of ``like``'s shape."""
    return [a for a in jax.tree.leaves(state) if getattr(a, "shape", None) == like.shape]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_pruned_weights_and_their_moments_stay_exactly_zero(name):
    params, mask = _setup()  # params NOT masked on entry: the first step zeroes the pruned ones
    trained, state = _train(keep_pruned(OPTIMIZERS[name](), mask), params)
    for layer in ("fc1", "fc2", "out"):
        m, w = np.asarray(mask[layer]["kernel"]), np.asarray(trained[layer]["kernel"])
        assert (w[~m] == 0).all() and not np.signbit(w[~m]).any(), f"{name}: a pruned {layer} weight moved"
        assert (w[m] != np.asarray(params[layer]["kernel"])[m]).mean() > 0.9, "survivors must train"
        moments = _per_weight_leaves(state.inner, w)
        assert moments, "the inner optimizer keeps per-weight state"
        for mom in moments:
            assert (np.asarray(mom)[~m] == 0).all(), f"{name}: optimizer state of a pruned weight is nonzero"
    assert _loss(trained) < _loss(params)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_survivors_follow_a_hand_written_masked_step(name):
    """The wrapper computes what masking by hand does: gradient ⊙ mask, update, weights ⊙ mask.
    To float32 rounding, not bitwise: the two are different programs, which XLA fuses (and
    so rounds) differently; 50 steps move a weight by ~1e-8 relative. Pruned weights: exactly 0."""
    params, mask = _setup()
    params = M.apply_mask(params, mask)
    ours, _ = _train(keep_pruned(OPTIMIZERS[name](), mask), params, steps=50)
    inner = OPTIMIZERS[name]()

    def step(carry, _):
        p, s = carry
        u, s = inner.update(M.apply_mask(jax.grad(_loss)(p), mask), s, p)
        return (M.apply_mask(optax.apply_updates(p, u), mask), s), None

    ref = jax.jit(lambda p: jax.lax.scan(step, (p, inner.init(p)), None, length=50)[0][0])(params)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(np.asarray(a) == 0, np.asarray(b) == 0)


def test_unmasked_leaves_train_as_without_the_wrapper():
    params, mask = _setup()
    none = jax.tree.map(lambda m: None, mask, is_leaf=lambda m: m is None or hasattr(m, "shape"))
    ours, _ = _train(keep_pruned(optax.adam(1e-3), none), params, steps=20)
    plain, _ = _train(optax.adam(1e-3), params, steps=20)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
        np.testing.assert_array_equal(a, b)


def test_update_without_params_zeroes_pruned_updates():
    params, mask = _setup()
    opt = keep_pruned(optax.sgd(0.1), mask)
    u, _ = opt.update(jax.tree.map(jnp.ones_like, params), opt.init(params))
    k = np.asarray(u["fc1"]["kernel"])
    m = np.asarray(mask["fc1"]["kernel"])
    assert (k[~m] == 0).all() and (k[m] == -0.1).all()
    assert (np.asarray(u["fc1"]["bias"]) == -0.1).all()
