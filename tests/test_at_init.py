"""Pruning at initialization (ltjax.at_init): SynFlow by hand and its conservation, its exact
iterative counts and its overflow guard; GraSP's Hessian-gradient product against finite
differences; inverted scores; layer collapse; the scores and controls inside a study."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import at_init, lottery, models, pruning, scores
from ltjax import masks as M
from ltjax.config import Config
from ltjax.train import loss_and_correct


def _mlp(widths, inputs, outputs):  # Flax initializes biases to 0: bias-free at θ0
    return models.mlp(widths, input_shape=(inputs,), num_outputs=outputs, init="glorot_normal")


def _zero_biases(params):
    return jax.tree_util.tree_map_with_path(
        lambda p, v: jnp.zeros_like(v) if M.path_str(p).endswith("bias") else v, params)


def _flat(tree):
    return np.concatenate([np.asarray(v).ravel() for _, v in M.leaves_with_names(tree)])


def test_synflow_two_layer_case_by_hand():
    # R = 1ᵀ |W2|ᵀ |W1|ᵀ 1 for x = 1 (Flax kernels are (in, out)); ReLU is the identity on
    # non-negative values. Score of W1[i, j] = |W1[i, j]| · (Σ_k |W2[j, k]|) (input 1),
    # score of W2[j, k] = (Σ_i |W1[i, j]|) · |W2[j, k]|.
    model = _mlp((2,), 3, 2)
    w1 = jnp.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.0]])
    w2 = jnp.array([[2.0, -1.0], [0.25, 4.0]])
    params = {"fc1": {"kernel": w1, "bias": jnp.zeros(2)}, "out": {"kernel": w2, "bias": jnp.zeros(2)}}
    dense = M.make_mask(params, model.is_prunable)
    s = at_init.synflow_scores(model.apply, params, dense, (3,))
    a1, a2 = np.abs(np.asarray(w1)), np.abs(np.asarray(w2))
    np.testing.assert_allclose(s["fc1"]["kernel"], a1 * a2.sum(1)[None, :], rtol=1e-6)
    np.testing.assert_allclose(s["out"]["kernel"], a1.sum(0)[:, None] * a2, rtol=1e-6)
    assert s["fc1"]["bias"] is None
    # a pruned weight scores 0 and drops out of the others' flow
    mask = {**dense, "fc1": {**dense["fc1"], "kernel": jnp.array([[True, False], [True, True], [True, True]])}}
    s = at_init.synflow_scores(model.apply, params, mask, (3,))
    a1m = a1 * np.asarray(mask["fc1"]["kernel"])
    np.testing.assert_allclose(s["fc1"]["kernel"], a1m * a2.sum(1)[None, :], rtol=1e-6)
    np.testing.assert_allclose(s["out"]["kernel"], a1m.sum(0)[:, None] * a2, rtol=1e-6)


def test_synflow_conserves_flow_per_layer_without_biases():
    # Tanaka et al., Theorem 2 (network-wise conservation): the synaptic saliency summed over any
    # layer that separates input from output is the same; for SynFlow every layer's sum is R.
    model = _mlp((20, 12, 7), 10, 4)
    params = _zero_biases(model.init(jax.random.PRNGKey(3)))
    dense = M.make_mask(params, model.is_prunable)
    mask = pruning.prune(scores.magnitude(params, dense), dense, 0.6, scope="global")
    s = at_init.synflow_scores(model.apply, params, mask, (10,))
    lin = jax.tree.map(jnp.abs, M.apply_mask(params, mask))
    r = float(jnp.sum(model.apply(lin, jnp.ones((1, 10)))))
    sums = [float(jnp.sum(v)) for _, v in M.leaves_with_names(s)]
    np.testing.assert_allclose(sums, [r] * len(sums), rtol=1e-5)


def test_synflow_iterative_reaches_exact_counts_on_the_exponential_schedule():
    keeps = np.asarray(pruning.exponential_keeps(1000, 10, 100))
    assert keeps[-1] == 10 and np.all(np.diff(keeps) <= 0) and keeps[0] == round(1000 * 0.01 ** 0.01)
    np.testing.assert_array_equal(keeps[[49]], [100])  # density 0.01^(50/100) = 0.1
    model = _mlp((30, 20), 12, 5)
    params = model.init(jax.random.PRNGKey(0))
    dense = M.make_mask(params, model.is_prunable)
    total = sum(M.size(dense).values())
    score = lambda m: at_init.synflow_scores(model.apply, params, m, (12,))  # noqa: E731
    for rate in (0.9, 0.999):
        new, ok = jax.jit(lambda d: pruning.prune_in_steps(score, d, 100, rate=rate, scope="global"))(dense)
        assert bool(ok)
        assert int(sum(M.count(new).values())) == total - pruning.static_prune_count(total, rate)
    # layerwise: every layer at its own exact count; steps=1 with a rate is prune itself
    new, _ = pruning.prune_in_steps(score, dense, 7, rate={"out": 0.5, "*": 0.8}, scope="layerwise")
    for layer, n in M.count(new).items():
        size = M.size(dense)[layer]
        assert int(n) == size - pruning.static_prune_count(size, 0.5 if layer == "out" else 0.8)
    one, _ = pruning.prune_in_steps(score, dense, 1, rate=0.7, scope="global")
    np.testing.assert_array_equal(_flat(one), _flat(pruning.prune(score(dense), dense, 0.7, scope="global")))


def test_synflow_overflow_guard_keeps_the_float64_ranking_on_a_deep_narrow_net():
    depth, width = 60, 6
    model = models.mlp((width,) * depth, input_shape=(width,), num_outputs=width, init="glorot_normal")
    params = _zero_biases(model.init(jax.random.PRNGKey(1)))
    params = jax.tree.map(lambda v: v * 3.0, params)  # each layer multiplies the flow by ~10
    dense = M.make_mask(params, model.is_prunable)
    order = [f"fc{i}" for i in range(1, depth + 1)] + ["out"]  # network order (tree order is fc1, fc10, …)
    ws = [np.abs(np.asarray(params[n]["kernel"], np.float64)) for n in order]
    # float64 reference: forward a = 1ᵀ|W1|…, backward b = …|WL|1; score = a_in ⊗ b_out ⊙ |W|
    fwd = [np.ones(width)]
    for w in ws:
        fwd.append(fwd[-1] @ w)
    bwd = [np.ones(width)]
    for w in ws[::-1]:
        bwd.append(w @ bwd[-1])
    bwd = bwd[::-1][1:]
    by_layer = {n: (np.outer(a, b) * w).ravel() for n, a, b, w in zip(order, fwd[:-1], bwd, ws)}
    ref = np.concatenate([by_layer[n] for n in M.layer_names(dense)])
    assert fwd[-1].sum() > 1e39  # naive float32 overflows
    naive = jnp.sum(model.apply(jax.tree.map(jnp.abs, params), jnp.ones((1, width))))
    assert not np.isfinite(float(naive))
    s = _flat(at_init.synflow_scores(model.apply, params, dense, (width,)))
    assert np.all(np.isfinite(s)) and s.max() > 0
    np.testing.assert_allclose(s / s.sum(), ref / ref.sum(), rtol=1e-3)  # one common factor Π c_l
    k = len(ref) // 10
    np.testing.assert_array_equal(np.sort(np.argsort(-s, kind="stable")[:k]),
                                  np.sort(np.argsort(-ref, kind="stable")[:k]))


def _loss(model):
    def loss(params, x, y):
        per, _ = loss_and_correct(model.apply(params, x), y)
        return jnp.mean(per)
    return loss


def test_grasp_hessian_gradient_product_against_finite_differences():
    model = models.mlp((5,), input_shape=(4,), num_outputs=3, init="glorot_normal")
    params = model.init(jax.random.PRNGKey(2))
    rng = np.random.default_rng(0)
    x, y = jnp.asarray(rng.normal(size=(16, 4)), jnp.float32), jnp.asarray(rng.integers(0, 3, 16))
    dense = M.make_mask(params, model.is_prunable)
    mask = pruning.prune(scores.magnitude(params, dense), dense, 0.3)
    loss = lambda p: _loss(model)(p, x, y)  # noqa: E731
    hg = at_init.hessian_gradient_product(loss, params, mask)
    # central differences of ∇L along g = m ⊙ ∇L on the kernels (zero on the biases), in float64
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), M.apply_mask(params, mask))
        grad = jax.grad(lambda p: _loss(model)(p, jnp.asarray(x, jnp.float64), y))
        g = jax.tree.map(lambda m, v: jnp.zeros_like(v) if m is None else jnp.where(m, v, 0.0), mask, grad(p64),
                         is_leaf=lambda a: a is None)
        eps = 1e-5
        plus = grad(jax.tree.map(lambda a, b: a + eps * b, p64, g))
        minus = grad(jax.tree.map(lambda a, b: a - eps * b, p64, g))
        fd = jax.tree.map(lambda a, b: (a - b) / (2 * eps), plus, minus)
        fd = {n: np.asarray(fd[n]["kernel"]) * np.asarray(mask[n]["kernel"]) for n in M.layer_names(mask)}
    for n in M.layer_names(mask):
        np.testing.assert_allclose(np.asarray(hg[n]["kernel"]), fd[n], rtol=2e-3, atol=1e-6)
        assert hg[n]["bias"] is None
    s = at_init.grasp_scores(loss, params, mask)
    for n in M.layer_names(mask):  # ltjax's score θ ⊙ Hg = −(GraSP's S): higher survives
        np.testing.assert_allclose(s[n]["kernel"], np.asarray(params[n]["kernel"]) * fd[n], rtol=2e-3, atol=1e-7)


def test_invert_keeps_the_lowest_at_exact_counts():
    perm = np.random.default_rng(0).permutation(52).astype(np.float32)  # distinct scores: no ties
    sc = {"a": {"kernel": jnp.asarray(perm[:40].reshape(8, 5))}, "b": {"kernel": jnp.asarray(perm[40:].reshape(3, 4))}}
    neg = jax.tree.map(lambda v: -v, sc)
    dense = jax.tree.map(lambda v: jnp.ones(v.shape, bool), sc)
    s = _flat(sc)
    low, _ = pruning.prune_in_steps(lambda m: neg, dense, 1, keep=13, scope="global")
    lo = _flat(low)
    assert lo.sum() == 13 and s[lo].max() < s[~lo].min()  # exactly the 13 lowest
    top, _ = pruning.prune_in_steps(lambda m: sc, dense, 1, keep=52 - 13, scope="global")
    np.testing.assert_array_equal(lo, ~_flat(top))  # the complement of keeping the top 39
    keep = {"a": 9, "b": 5}
    low, _ = pruning.prune_in_steps(lambda m: neg, dense, 1, keep=keep, scope="layerwise")
    for n in keep:
        v, m = np.asarray(sc[n]["kernel"]).ravel(), np.asarray(low[n]["kernel"]).ravel()
        assert m.sum() == keep[n] and v[m].max() < v[~m].min()
    # in steps (SynFlow's inversion), still exact counts
    low, _ = pruning.prune_in_steps(lambda m: neg, dense, 5, keep=keep, scope="layerwise")
    assert {n: int(c) for n, c in M.count(low).items()} == keep


def test_collapse_on_a_hand_made_mask():
    mask = {"fc1": {"kernel": jnp.ones((3, 2), bool), "bias": None},
            "fc2": {"kernel": jnp.zeros((2, 2), bool), "bias": None},
            "out": {"kernel": jnp.array([[True, False], [False, False]]), "bias": None}}
    assert {k: bool(v) for k, v in at_init.collapsed_layers(mask).items()} == {"fc1": False, "fc2": True,
                                                                              "out": False}
    assert bool(at_init.collapsed(mask))
    mask["fc2"]["kernel"] = mask["fc2"]["kernel"].at[1, 0].set(True)
    assert not bool(at_init.collapsed(mask))
    stacked = jax.tree.map(lambda v: jnp.stack([v, jnp.zeros_like(v)]), mask)
    np.testing.assert_array_equal(jax.vmap(at_init.collapsed)(stacked), [False, True])
    # magnitude at init, layerwise scope never collapses; global on a tiny last layer does
    fake = lambda d: {"a": {"kernel": jnp.arange(100.0) >= 100 * (1 - d)},  # noqa: E731
                      "b": {"kernel": jnp.array([d >= 0.1])}}
    assert at_init.largest_compression(fake, [0.5, 0.2, 0.1, 0.05, 0.01]) == 10.0
    assert at_init.largest_compression(fake, [0.05]) is None


STUDY = dict(name="pai", dataset="synthetic_mnist", validation_size=200, model="mlp", widths=(32,),
             optimizer="adam", lr=1e-3, batch_size=32, iterations=20, eval_every=20, rounds=2, seeds=2,
             prune_rate=0.9, mode="at_init", scope="global", layer_rates=())


def _quiet(_):
    pass


def _remaining(group):  # a control's survivors, (copies, T)
    return sum(np.asarray(v) for v in group["remaining"].values())


@pytest.mark.parametrize("score", ["synflow", "grasp"])
def test_at_init_studies_with_the_sanity_checks_in_one_program(tmp_path, score):
    run = lottery.run(Config(**STUDY, score=score, controls=("shuffle", "reinit", "invert")).validate(),
                      tmp_path, progress=False, log=_quiet)
    r1 = run.rounds[1]
    mask = jax.tree.map(jnp.asarray, r1.mask)
    theta0 = jax.tree.map(jnp.asarray, run.theta0)
    total = sum(M.size(jax.tree.map(lambda a: a[0], mask)).values())
    kept = np.asarray(sum(jax.vmap(M.count)(mask).values()))
    np.testing.assert_array_equal(kept, total - pruning.static_prune_count(total, 0.9))
    # the study's ticket is the score's own mask of θ0 (SynFlow: 100 steps, GraSP: one)
    model = models.build("mlp", widths=(32,))
    if score == "synflow":
        th = jax.tree.map(lambda a: a[1], theta0)
        score_fn = lambda m: at_init.synflow_scores(model.apply, th, m, model.input_shape)  # noqa: E731
        want, _ = jax.jit(lambda d: pruning.prune_in_steps(score_fn, d, 100, rate=0.9, scope="global"))(
            M.make_mask(th, model.is_prunable))
        np.testing.assert_array_equal(_flat(jax.tree.map(lambda a: a[1], mask)), _flat(want))
    inv = r1.metrics["controls"]["invert"]
    np.testing.assert_array_equal(_remaining(inv)[0], kept)
    overlap = np.asarray(inv["vs_ticket"]["total"]["overlap"]).reshape(-1)
    assert np.all(overlap < kept)  # keeps other weights than the ticket


def test_synflow_and_grasp_controls_beside_imp_tickets(tmp_path):
    cfg = Config(**{**STUDY, "mode": "iterative", "score": "magnitude", "prune_rate": 0.5,
                    "controls": ("synflow", "grasp", "magnitude_at_init", "snip")}).validate()
    run = lottery.run(cfg, tmp_path, progress=False, log=_quiet)
    kept = np.asarray(sum(jax.vmap(M.count)(jax.tree.map(jnp.asarray, run.rounds[1].mask)).values()))
    for name in ("synflow", "grasp", "magnitude_at_init", "snip"):
        np.testing.assert_array_equal(_remaining(run.rounds[1].metrics["controls"][name])[0], kept)


def test_prune_at_init_results_page_from_a_made_up_study():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import prune_at_init as study

    row = {"density": 0.01, "test_acc": 0.9, "collapsed": False, "shuffle": 0.91, "reinit": 0.89, "invert": 0.5}
    res = {"settings": {"iterations": 100, "eval_every": 50, "densities": [0.01], "seeds": 1,
                        "collapse_densities": [0.1, 0.001]},
           "methods": {"snip": {"dense_test_acc": 0.97, "rounds": [row], "wall_s": 3.0},
                       "random": {"dense_test_acc": 0.97, "rounds": [{**row, "invert": None}], "wall_s": 2.0}},
           "collapse": {"snip": {"largest_compression": 10.0,
                                 "survivors": {"0.1": {"fc1": 5, "out": 2}, "0.001": {"fc1": 0, "out": 1}}}},
           "collapse_wall_s": 1.0, "verdicts": {"invert": "yes"}}
    text = study.page(res)
    assert "| snip | 1.00% | 90.00 | 91.00 | 89.00 | 50.00 | no |" in text
    assert "| random | 1.00% | 90.00 | 91.00 | 89.00 | – | no |" in text
    assert "| snip | 5, 2 | 0, 1 | 10x |" in text
    assert "| yes |" in text and "not judged" in text
