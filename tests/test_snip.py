"""SNIP and iterative SNIP: saliency against independent computations, exact counts,
one step = SNIP, schedules by hand, and the lottery driver's snip/isnip comparisons."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import masks as M
from ltjax import models, pruning, snip
from ltjax.data import normalize
from ltjax.train import loss_and_correct
from tests.helpers import assert_masks_agree

MODEL = models.mlp((6, 5), input_shape=(4, 4, 1), num_outputs=3, init="glorot_normal")
MEAN, STD = (0.5,), (0.25,)


def loss_fn(params, x, y):
    per, _ = loss_and_correct(MODEL.apply(params, normalize(x, MEAN, STD)), y)
    return jnp.mean(per)


@pytest.fixture(scope="module")
def setup():
    params = MODEL.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, (8, 4, 4, 1)), jnp.uint8)
    y = jnp.asarray(rng.integers(0, 3, 8), jnp.int32)
    dense = M.make_mask(params, MODEL.is_prunable)
    return params, dense, x, y


def flat(tree):
    return np.concatenate([np.asarray(v).ravel() for _, v in M.leaves_with_names(tree)])


def test_saliency_equals_normalized_abs_theta_times_weight_gradient(setup):
    params, dense, x, y = setup
    s = snip.connection_sensitivity(loss_fn, params, dense, x, y)
    g = jax.grad(loss_fn)(params, x, y)  # ∂L/∂w at w = θ (dense), computed independently of the gates
    ref = {name: np.abs(np.asarray(params[name]["kernel"]) * np.asarray(g[name]["kernel"]))
           for name in ("fc1", "fc2", "out")}
    total = sum(v.sum() for v in ref.values())
    for name in ref:
        np.testing.assert_allclose(np.asarray(s[name]["kernel"]), ref[name] / total, rtol=2e-5, atol=1e-9)
        assert s[name]["bias"] is None
    assert flat(s).sum() == pytest.approx(1.0, abs=1e-5)


def test_saliency_matches_finite_differences_in_the_gates(setup):
    params, dense, x, y = setup
    s = snip.connection_sensitivity(loss_fn, params, dense, x, y)
    # unnormalized |g_j| recovered by the same normalizer; compare with central differences in c_j
    g = jax.grad(loss_fn)(params, x, y)
    total = sum(float(jnp.sum(jnp.abs(params[n]["kernel"] * g[n]["kernel"]))) for n in ("fc1", "fc2", "out"))
    rng = np.random.default_rng(1)
    eps = 1e-2
    for name in ("fc1", "out"):
        k = np.asarray(params[name]["kernel"])
        for _ in range(4):
            i, j = rng.integers(k.shape[0]), rng.integers(k.shape[1])

            def with_gate(c):
                p = jax.tree.map(lambda a: a, params)
                p[name] = dict(p[name], kernel=params[name]["kernel"].at[i, j].multiply(c))
                return float(loss_fn(p, x, y))

            fd = (with_gate(1 + eps) - with_gate(1 - eps)) / (2 * eps)
            assert abs(fd) / total == pytest.approx(float(s[name]["kernel"][i, j]), rel=2e-2, abs=1e-6)


def test_pruned_weights_get_zero_saliency_and_the_rest_sum_to_one(setup):
    params, dense, x, y = setup
    mask = jax.tree.map(lambda m: None if m is None else m.at[0].set(False), dense, is_leaf=lambda v: v is None)
    s = snip.connection_sensitivity(loss_fn, params, mask, x, y)
    assert np.all(np.asarray(s["fc1"]["kernel"])[0] == 0)
    assert flat(s).sum() == pytest.approx(1.0, abs=1e-5)


def test_snip_keeps_exactly_the_most_salient(setup):
    params, dense, x, y = setup
    s = flat(snip.connection_sensitivity(loss_fn, params, dense, x, y))
    for keep in (1, 17, 50, len(s) - 1, len(s)):
        m = flat(snip.snip(loss_fn, params, dense, x, y, keep))
        assert m.sum() == keep
        order = np.lexsort((np.arange(len(s)), s))  # ascending by (score, position)
        expect = np.zeros(len(s), bool)
        expect[order[len(s) - keep:]] = True
        np.testing.assert_array_equal(m, expect)


def test_snip_is_global_and_excluded_layers_are_untouched(setup):
    params, dense, x, y = setup
    m = snip.snip(loss_fn, params, dense, x, y, 20, exclude=("out",))
    c = M.count(m)
    assert int(c["fc1"]) + int(c["fc2"]) == 20 and int(c["out"]) == dense["out"]["kernel"].size


def test_iterative_snip_with_one_step_is_snip(setup):
    params, dense, x, y = setup
    for keep in (5, 40, 90):
        a = snip.snip(loss_fn, params, dense, x, y, keep)
        b = snip.iterative_snip(loss_fn, params, dense, x, y, [keep])
        for (_, u), (_, v) in zip(M.leaves_with_names(a), M.leaves_with_names(b)):
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_iterative_snip_rescoring_shrinks_masks_and_hits_the_count(setup):
    params, dense, x, y = setup
    sizes = M.size(dense)
    sched = snip.geometric_schedule(sizes, {k: 0.2 for k in sizes}, 40)
    steps = [snip.iterative_snip(loss_fn, params, dense, x, y, sched[:i + 1]) for i in range(len(sched))]
    prev = flat(dense)
    for n, m in zip(sched, steps):
        m = flat(m)
        assert m.sum() == n
        assert not np.any(m & ~prev)  # masks only shrink
        prev = m
    # repeated counts are no-op steps
    padded = snip.iterative_snip(loss_fn, params, dense, x, y, sched + [sched[-1]] * 3)
    np.testing.assert_array_equal(flat(padded), flat(steps[-1]))
    # re-scoring matters: step 2's ranking is computed on the pruned network
    manual = snip.snip(loss_fn, params, snip.snip(loss_fn, params, dense, x, y, sched[0]), x, y, sched[1])
    np.testing.assert_array_equal(flat(manual), flat(steps[1]))


def test_iterative_snip_under_vmap_with_per_ticket_schedules(setup):
    params, dense, x, y = setup
    stack = lambda *t: jax.tree.map(lambda *a: jnp.stack(a), *t)  # noqa: E731
    P = stack(params, MODEL.init(jax.random.PRNGKey(1)))
    D = stack(dense, dense)
    keeps = snip.schedule_array([[80, 60], [70]])
    np.testing.assert_array_equal(np.asarray(keeps), [[80, 60], [70, 70]])
    out = jax.vmap(lambda p, m, ks: snip.iterative_snip(loss_fn, p, m, x, y, ks))(P, D, keeps)
    assert [sum(int(v[t]) for v in jax.vmap(M.count)(out).values()) for t in range(2)] == [60, 70]
    single = snip.iterative_snip(loss_fn, params, dense, x, y, [80, 60])
    # vmapped and alone: the saliencies may round differently, so up to near-ties (exact total)
    assert_masks_agree(jax.tree.map(lambda a: a[0], out), single, per_layer_counts=False, batched=False)


def test_geometric_schedule_by_hand():
    alive, rates = {"a": 100, "b": 10}, {"a": 0.2, "b": 0.1}
    # step 1: a 100-20=80, b 10-round(1.0)=9 → 89; step 2: a 80-16=64, b 9-round(0.9)=8 → 72; step 3: 51+7=58
    assert snip.geometric_schedule(alive, rates, 72) == [89, 72]
    assert snip.geometric_schedule(alive, rates, 80) == [89, 80]
    assert snip.geometric_schedule(alive, rates, 58) == [89, 72, 58]
    assert snip.geometric_schedule(alive, rates, 110) == [110]
    assert snip.geometric_schedule(alive, {"a": 0.0, "b": 0.0}, 50) == [50]  # rates that never finish
    with pytest.raises(ValueError, match="keep=111"):
        snip.geometric_schedule(alive, rates, 111)


def test_schedule_reproduces_imp_ticket_sizes():
    # LeNet-300-100 with the report's rates: the i-th entry is IMP round i's ticket size
    sizes = {"fc1": 784 * 300, "fc2": 300 * 100, "out": 100 * 10}
    rates = {"fc1": 0.2, "fc2": 0.2, "out": 0.1}
    counts, imp = dict(sizes), []
    for _ in range(10):
        counts = {k: v - int(pruning.prune_count(v, rates[k])) for k, v in counts.items()}
        imp.append(sum(counts.values()))
    assert snip.geometric_schedule(sizes, rates, imp[-1]) == imp


def test_prune_to_count_by_hand():
    mask = {"a": {"kernel": jnp.array([True, True, False, True])}, "b": {"kernel": jnp.array([True, True])}}
    scores = {"a": {"kernel": jnp.array([0.5, 0.1, 9.0, 0.3])}, "b": {"kernel": jnp.array([0.3, 0.7])}}
    out = pruning.prune_to_count(scores, mask, 3)
    # survivors ranked: a1 0.1 < a3 0.3 = b0 0.3 (a3 earlier) < a0 0.5 < b1 0.7 → drop a1, a3
    np.testing.assert_array_equal(out["a"]["kernel"], [True, False, False, False])
    np.testing.assert_array_equal(out["b"]["kernel"], [True, True])
    same = pruning.prune_to_count(scores, mask, 10)
    np.testing.assert_array_equal(same["a"]["kernel"], mask["a"]["kernel"])
