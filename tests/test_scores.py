"""Layerwise importance scores on hand-computed layers (only surviving weights count)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import pruning, scores

W = jnp.array([[3.0, -1.0], [0.5, -2.0]])
M = jnp.array([[True, True], [False, True]])  # 0.5 is pruned: it must not enter any sum
TREE_P = {"a": {"kernel": W, "bias": jnp.ones(2)}}
TREE_M = {"a": {"kernel": M, "bias": None}}


def score(name, params=TREE_P, mask=TREE_M):
    out = scores.get(name)(params, mask)
    assert out["a"]["bias"] is None
    return np.asarray(out["a"]["kernel"])


@pytest.mark.parametrize("name,expect", [
    ("magnitude", [[3, 1], [0.5, 2]]),
    ("l1", [[3 / 6, 1 / 6], [0, 2 / 6]]),
    ("l2", [[9 / 14, 1 / 14], [0, 4 / 14]]),
    ("softmax", [[math.e ** 3 / (math.e ** 3 + math.e + math.e ** 2), math.e / (math.e ** 3 + math.e + math.e ** 2)],
                 [0, math.e ** 2 / (math.e ** 3 + math.e + math.e ** 2)]]),
    ("minmax", [[1.0, 0.0], [0, 0.5]]),
    # LAMP: survivors' squares ascending 1, 4, 9; denominators = sums of squares not smaller: 14, 13, 9
    ("lamp", [[1.0, 1 / 14], [0, 4 / 13]]),
])
def test_scores_by_hand(name, expect):
    got = score(name)
    if name == "magnitude":  # magnitude ignores the mask (pruning never reads pruned scores)
        np.testing.assert_allclose(got, expect, rtol=1e-6)
    else:
        np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-7)


def test_lamp_ties_share_the_denominator():
    p = {"a": {"kernel": jnp.array([2.0, -2.0, 1.0])}}
    m = {"a": {"kernel": jnp.ones(3, bool)}}
    got = np.asarray(scores.lamp(p, m)["a"]["kernel"])
    np.testing.assert_allclose(got, [4 / 8, 4 / 8, 1 / 9], rtol=1e-6)


def test_lamp_matches_a_direct_definition_on_random_layers():
    rng = np.random.default_rng(0)
    for _ in range(5):
        w = rng.normal(size=(7, 5)).astype(np.float32)
        w[0, :2] = w[1, :2]  # some ties
        m = rng.random((7, 5)) > 0.3
        got = np.asarray(scores.lamp({"k": {"kernel": jnp.asarray(w)}}, {"k": {"kernel": jnp.asarray(m)}})["k"]["kernel"])
        sq = np.where(m, w * w, np.nan)
        ref = np.zeros_like(w)
        for idx in zip(*np.nonzero(m)):
            ref[idx] = sq[idx] / np.nansum(np.where(sq >= sq[idx], sq, 0.0))
        np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_degenerate_layers():
    p = {"a": {"kernel": jnp.array([5.0, 1.0])}}
    one = {"a": {"kernel": jnp.array([True, False])}}
    assert float(scores.minmax(p, one)["a"]["kernel"][0]) == 1.0  # single survivor: max = min
    assert float(scores.lamp(p, one)["a"]["kernel"][0]) == 1.0
    none = {"a": {"kernel": jnp.array([False, False])}}
    for name in ("l1", "l2", "softmax", "minmax", "lamp"):
        np.testing.assert_array_equal(scores.get(name)(p, none)["a"]["kernel"], [0.0, 0.0])
    big = {"a": {"kernel": jnp.array([1000.0, 999.0])}}
    s = np.asarray(scores.softmax(big, {"a": {"kernel": jnp.ones(2, bool)}})["a"]["kernel"])
    assert np.all(np.isfinite(s)) and s.sum() == pytest.approx(1.0)


def test_pooled_global_pruning_differs_from_magnitude_by_layer_normalization():
    """Magnitude pooled globally empties the small-weight layer; L1 rescales each layer to
    sum to one and prunes the large layer instead (the paper's motivation: layer collapse)."""
    params = {"x": {"kernel": jnp.array([10.0, 20.0, 30.0, 40.0])}, "y": {"kernel": jnp.array([1.0, 2.0])}}
    mask = jax.tree.map(lambda a: jnp.ones(a.shape, bool), params)
    mag = pruning.prune(scores.magnitude(params, mask), mask, 0.5, scope="global")
    np.testing.assert_array_equal(mag["y"]["kernel"], [False, False])
    np.testing.assert_array_equal(mag["x"]["kernel"], [False, True, True, True])
    l1 = pruning.prune(scores.l1(params, mask), mask, 0.5, scope="global")  # .1 .2 .3 .4 | .33 .67
    np.testing.assert_array_equal(l1["x"]["kernel"], [False, False, False, True])
    np.testing.assert_array_equal(l1["y"]["kernel"], [True, True])


def test_scores_vmap_over_tickets():
    P = {"a": {"kernel": jnp.stack([W, -2 * W]), "bias": jnp.ones((2, 2))}}
    Mk = {"a": {"kernel": jnp.stack([M, M]), "bias": None}}
    for name in sorted(set(scores.SCORES) - scores.NEEDS_BATCH):  # data scores: tests/test_rounds.py (snip)
        out = jax.vmap(scores.get(name))(P, Mk)["a"]["kernel"]
        np.testing.assert_allclose(out[0], score(name), rtol=1e-6)


@pytest.mark.slow
def test_several_scores_in_one_program(tmp_path):
    """scores=(magnitude, l1, lamp) × 2 seeds: 6 tickets in one program; the tickets of a
    seed share θ0 and each is pruned by its own score."""
    from ltjax import lottery, presets, report
    from ltjax import masks as Mk
    from tests.helpers import assert_masks_agree

    base = presets.get("lenet_mnist_openlth").replace(iterations=200, eval_every=100, seeds=2, rounds=2)
    run = lottery.run(base.replace(scores=("magnitude", "l1", "lamp")), tmp_path, progress=False, log=lambda _: None)
    assert list(run.rounds[1].metrics["ticket_score"]) == ["magnitude"] * 2 + ["l1"] * 2 + ["lamp"] * 2
    t0 = run.theta0["fc1"]["kernel"]
    assert t0.shape[0] == 6
    np.testing.assert_array_equal(t0[0], t0[2])  # seed 0 under magnitude and under l1
    np.testing.assert_array_equal(t0[1], t0[5])
    assert not np.array_equal(t0[0], t0[1])
    # each ticket's round-1 mask is its own score applied to its round-0 weights
    params0 = run.rounds[0].params
    for t, name in enumerate(run.rounds[1].metrics["ticket_score"]):
        p = jax.tree.map(lambda a: a[t], params0)
        dense = jax.tree.map(lambda a: a[t], run.rounds[0].mask)
        want = pruning.prune(scores.get(name)(p, dense), dense, 0.2, scope="global", exclude=("out",))
        got = jax.tree.map(lambda a: a[t], run.rounds[1].mask)
        # the run scored 6 tickets vmapped, this one alone: l1's and lamp's layer sums may round
        # differently, so positions agree up to near-ties (global pruning: the total is exact)
        assert_masks_agree(want, got, per_layer_counts=False, batched=False)
    total = lambda t: sum(int(v[t]) for v in run.rounds[1].metrics["remaining"].values())  # noqa: E731
    assert len({total(t) for t in range(6)}) == 1  # global pruning: the same count for every score
    lm = Mk.layer_names(run.rounds[1].mask)
    assert lm == ["fc1", "fc2", "out"]
    # l1 and magnitude choose different per-layer densities from the same weights
    d = run.rounds[1].metrics["layer_density"]["fc2"]
    assert d[0] != d[2]
    table = report.round_table(run)
    assert "score l1 (2 tickets):" in table and "score lamp (2 tickets):" in table


@pytest.mark.slow
def test_partial_reinitialization_keeps_theta0_on_common_survivors(tmp_path):
    from ltjax import lottery, presets
    from ltjax.config import ConfigError

    base = presets.get("lenet_mnist_openlth").replace(iterations=200, eval_every=100, seeds=2, rounds=2,
                                                      scores=("magnitude", "l1"))
    src = lottery.run(base, tmp_path, progress=False, log=lambda _: None)
    cfg = base.replace(partial_reinit_from=str(src.path), partial_reinit_round=1)
    run = lottery.run(cfg, tmp_path, progress=False, log=lambda _: None)
    m = src.rounds[1].mask["fc1"]["kernel"]  # (4, 784, 300): tickets (magnitude s0, s1, l1 s0, s1)
    common = np.stack([m[0] & m[2], m[1] & m[3]] * 2)
    new0, old0 = run.theta0["fc1"]["kernel"], src.theta0["fc1"]["kernel"]
    np.testing.assert_array_equal(new0[common], old0[common])
    assert np.mean(new0[~common] == old0[~common]) < 1e-3  # redrawn elsewhere
    np.testing.assert_array_equal(new0[0], new0[2])  # the tickets of a seed still share θ0
    assert 0.7 < common[0].mean() < 0.8  # both scores kept ~80% of fc1, mostly the same weights
    np.testing.assert_array_equal(run.theta0["fc1"]["bias"], src.theta0["fc1"]["bias"])  # zeros either way
    with pytest.raises(ConfigError, match="partial_reinit_round"):
        base.replace(partial_reinit_from=str(src.path)).validate()
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ConfigError, match="needs the same"):
        lottery.run(cfg.replace(seeds=1), tmp_path, progress=False, log=lambda _: None)
    with pytest.raises(ConfigError, match="not a readable ltjax run directory"):
        lottery.run(cfg.replace(partial_reinit_from=str(tmp_path / "nope")), tmp_path, progress=False,
                    log=lambda _: None)
    with pytest.raises(ConfigError, match="has completed rounds 0..1"):
        lottery.run(cfg.replace(partial_reinit_round=5), tmp_path, progress=False, log=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # rejected before anything was written


def test_registered_score_is_usable_by_name_and_bad_registrations_are_clear():
    import jax.numpy as jnp

    from ltjax import scores as S
    from ltjax.config import Config

    fn = S.per_layer(lambda a, alive: -a)  # smallest magnitudes survive
    S.register("neg_magnitude_test", fn)
    try:
        p = {"fc": {"kernel": jnp.array([1.0, -3.0, 2.0])}}
        m = {"fc": {"kernel": jnp.array([True, True, False])}}
        np.testing.assert_array_equal(S.get("neg_magnitude_test")(p, m)["fc"]["kernel"], [-1.0, -3.0, 0.0])
        Config(score="neg_magnitude_test").validate()
        with pytest.raises(ValueError, match="already registered"):
            S.register("neg_magnitude_test", fn)
        with pytest.raises(ValueError, match="not valid"):
            S.register("bad name", fn)
        with pytest.raises(TypeError, match="needs a function"):
            S.register("not_callable", 3)
    finally:
        S.SCORES.pop("neg_magnitude_test")
