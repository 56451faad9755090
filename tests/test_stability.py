"""Linear mode connectivity and instability (ltjax.stability): the path is exact at its ends,
the barrier by hand, batch-norm statistics recomputed as the mean of each batch's, copies train
as the trainer trains, k is read off one trajectory, and IMP runs give their rounds' pairs."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import lottery, models, stability, store
from ltjax import data as D
from ltjax import masks as M
from ltjax.config import Config
from ltjax.data.order import batch_indices
from ltjax.train import TrainSpec, device_data, evaluate, make_trainer

DS = D.load("synthetic_mnist", validation_size=64)
DATA = device_data(DS)
MODEL = models.mlp((32,), init="glorot_normal")
SPEC = TrainSpec(optimizer="momentum", lr=0.05, batch_size=32, eval_every=40)


def _theta0(n=1, seed=0):
    return models.run_init(jax.vmap(MODEL.init), jax.random.split(jax.random.PRNGKey(seed), n))


def _half_mask(params, seed=1):
    dense = jax.vmap(lambda p: M.make_mask(p, MODEL.is_prunable))(params)
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 8))
    return jax.tree.map(lambda m: jax.random.uniform(next(keys), m.shape) < 0.5, dense)


def test_interpolation_is_exact_at_both_ends_and_linear_between():
    a = {"w": jnp.array([1.0, -0.0, 3.0, -2.5]), "b": jnp.array([0.0])}
    b = {"w": jnp.array([3.0, 0.0, -1.0, -0.0]), "b": jnp.array([-0.0])}
    for alpha, want in ((0.0, a), (1.0, b)):
        got = stability.interpolate(a, b, jnp.float32(alpha))
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):  # bitwise, signed zeros too
            np.testing.assert_array_equal(np.asarray(x).view(np.uint32), np.asarray(y).view(np.uint32))
    np.testing.assert_array_equal(stability.interpolate(a, b, jnp.float32(0.25))["w"], [1.5, 0.0, 2.0, -1.875])


def test_error_barrier_by_hand():
    errors = jnp.array([[0.10, 0.30, 0.12], [0.20, 0.18, 0.16], [0.05, 0.05, 0.05]])
    np.testing.assert_allclose(stability.error_barrier(errors), [0.30 - 0.11, 0.20 - 0.18, 0.0], atol=1e-7)


class _BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(
            nn.Dense(32, name="fc1")(x.reshape(x.shape[0], -1))))
        return nn.Dense(10, name="out")(h)


class _BN(nn.Module):
    momentum: float

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(3, name="fc")(x.reshape(x.shape[0], -1))
        return nn.BatchNorm(use_running_average=not train, momentum=self.momentum, name="bn")(x)


@pytest.mark.parametrize("momentum", [0.9, 0.99])
def test_batch_statistics_are_the_mean_of_each_batchs(momentum):
    model = models.wrap(_BN(momentum), input_shape=(4,), num_outputs=3)
    params = model.init(jax.random.PRNGKey(0))
    weights, state = model.split(params)
    xs = jax.random.normal(jax.random.PRNGKey(1), (5, 8, 4)) * 2 + 1
    got = stability.batch_statistics(model, weights, state, xs)["batch_stats"]["bn"]
    h = np.einsum("nbi,io->nbo", np.asarray(xs, np.float64), np.asarray(weights["fc"]["kernel"], np.float64))
    h += np.asarray(weights["fc"]["bias"])
    np.testing.assert_allclose(got["mean"], h.mean(1).mean(0), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(got["var"], h.var(1).mean(0), rtol=2e-5, atol=2e-6)  # Flax: biased batch var


def test_copies_train_as_the_trainer_trains_and_stop_where_told():
    params, keys = _theta0(2), jax.random.split(jax.random.PRNGKey(5), 2)
    mask = _half_mask(params)
    ref, _ = make_trainer(MODEL, SPEC, DS.mean, DS.std)(params, mask, keys, DATA, 40, 80)
    zero, stops = jnp.array([40, 40]), jnp.array([120, 80])
    got = stability.train_copies(MODEL, SPEC, DS.mean, DS.std, params, mask, keys, zero, stops, 80, DATA)
    short = stability.train_copies(MODEL, SPEC, DS.mean, DS.std, params, mask, keys, zero, stops, 40, DATA)
    for g, r, s, m in zip(jax.tree.leaves(got), jax.tree.leaves(ref), jax.tree.leaves(short),
                          jax.tree.leaves(mask, is_leaf=lambda a: a is None)):
        g, r, s = np.asarray(g), np.asarray(r), np.asarray(s)
        if m is not None:
            assert (g[~np.asarray(m)] == 0).all()  # pruned weights exactly 0
        # another program than the trainer's (no in-loop evaluation): float32 reassociation at
        # most, ~1 ulp per step over 80 momentum steps
        np.testing.assert_allclose(g[0], r[0], rtol=1e-4, atol=1e-6)
        # copy 1 stops at 80 and idles for the rest of the 80-step program: what 40 steps give
        np.testing.assert_array_equal(g[1], s[1])
        assert not np.array_equal(g[0], g[1])


def test_spawn_points_read_one_trajectory_at_each_k():
    theta0 = jax.tree.map(lambda a: a[0], _theta0())
    key = jax.random.PRNGKey(9)
    pts = stability.spawn_points(MODEL, SPEC, DS.mean, DS.std, theta0, None, key, [0, 40, 80], DATA)
    for p, t in zip(jax.tree.leaves(pts), jax.tree.leaves(theta0)):
        np.testing.assert_array_equal(p[0], t)  # k = 0 is θ0 itself
    dense = jax.vmap(lambda p: M.make_mask(p, MODEL.is_prunable))(_theta0())
    ref, _ = make_trainer(MODEL, SPEC, DS.mean, DS.std)(_theta0(), dense, key[None], DATA, 0, 80)
    for p, r in zip(jax.tree.leaves(pts), jax.tree.leaves(ref)):
        np.testing.assert_allclose(p[2], r[0], rtol=1e-4, atol=1e-6)


def test_analyze_end_to_end_path_ends_are_the_copies():
    params = _theta0(2)
    mask = _half_mask(params)
    keys = stability.copy_keys(jax.random.PRNGKey(3), 2)
    res = stability.analyze(MODEL, SPEC, DS.mean, DS.std, params, mask, keys, [0, 40], 120, DATA, points=5,
                            train_examples=500)
    assert res.test_error.shape == (2, 5) and res.train_error.shape == (2, 5)
    np.testing.assert_array_equal(res.alphas, np.linspace(0, 1, 5, dtype=np.float32))
    forward = lambda p, x: MODEL.apply(p, D.normalize(x, DS.mean, DS.std))  # noqa: E731
    for p in range(2):
        for end, col in ((0, 0), (1, -1)):
            copy = jax.tree.map(lambda a: a[p, end], res.copies)
            mask_p = jax.tree.map(lambda a: a[p], mask)
            for w, m in zip(jax.tree.leaves(copy), jax.tree.leaves(mask_p, is_leaf=lambda a: a is None)):
                if m is not None:
                    assert (np.asarray(w)[~np.asarray(m)] == 0).all()
            _, acc = evaluate(forward, copy, DATA.x_test, DATA.y_test, DATA.w_test)
            # the same weights evaluated by a program of another shape (α vmapped): the
            # accuracy is a count of argmaxes, equal unless rounding moves a near-tie
            assert abs((1 - float(acc)) - res.test_error[p, col]) <= 1 / len(DS.y_test) + 1e-6
        assert not np.array_equal(np.asarray(jax.tree.leaves(res.copies)[0][p, 0]),
                                  np.asarray(jax.tree.leaves(res.copies)[0][p, 1]))
    np.testing.assert_allclose(res.test_instability, stability.error_barrier(res.test_error), atol=0)
    assert (res.test_instability >= 0).all()
    # a pair of identical networks is perfectly stable: every α is the same network
    same = jax.tree.map(lambda a: a[0, 0], res.copies)
    err, _, _ = stability.path_metrics(MODEL, SPEC, DS.mean, DS.std, same, same, jnp.linspace(0, 1, 4), DATA)
    assert float(stability.error_barrier(err)) == 0.0


def test_analyze_refuses_what_is_not_an_instability_analysis():
    params = _theta0(1)
    same = jnp.stack([jax.random.PRNGKey(1), jax.random.PRNGKey(1)])[None]
    with pytest.raises(ValueError, match="two different data-order keys"):
        stability.analyze(MODEL, SPEC, DS.mean, DS.std, params, None, same, 0, 40, DATA)
    keys = stability.copy_keys(jax.random.PRNGKey(0), 1)
    with pytest.raises(ValueError, match="0 <= k < stop"):
        stability.analyze(MODEL, SPEC, DS.mean, DS.std, params, None, keys, 40, 40, DATA)
    with pytest.raises(ValueError, match="pair axis of length 2"):
        stability.analyze(MODEL, SPEC, DS.mean, DS.std, params, None, stability.copy_keys(keys[0, 0], 2), 0, 40, DATA)
    with pytest.raises(ValueError, match="at least its two ends"):
        stability.analyze(MODEL, SPEC, DS.mean, DS.std, params, None, keys, 0, 40, DATA, points=1)


def test_batch_norm_paths_recompute_statistics_at_every_alpha():
    model = models.wrap(_BNNet(), input_shape=(28, 28, 1), num_outputs=10)  # a one-layer net with batch norm
    assert model.stateful
    params = models.run_init(jax.vmap(model.init), jax.random.split(jax.random.PRNGKey(0), 1))
    keys = stability.copy_keys(jax.random.PRNGKey(1), 1)
    spec = TrainSpec(optimizer="momentum", lr=0.05, batch_size=16, eval_every=10)
    res = stability.analyze(model, spec, DS.mean, DS.std, params, None, keys, 0, 20, DATA, points=3,
                            bn_batches=4, train_examples=256)
    assert np.isfinite(res.test_error).all()
    # the recomputed statistics of the α = 0 end are W1's own batches' mean, not its running average
    w1 = jax.tree.map(lambda a: a[0, 0], res.copies)
    weights, state = model.split(w1)
    idx = jax.vmap(lambda t: batch_indices(jax.random.PRNGKey(0), DS.x_train.shape[0], 16, t))(jnp.arange(4))
    stats = stability.batch_statistics(model, weights, state, D.normalize(DATA.x_train[idx], DS.mean, DS.std))
    forward = lambda p, x: model.apply(p, D.normalize(x, DS.mean, DS.std))  # noqa: E731
    _, acc = evaluate(forward, model.merge(weights, stats), DATA.x_test, DATA.y_test, DATA.w_test)
    assert abs((1 - float(acc)) - res.test_error[0, 0]) <= 1 / len(DS.y_test) + 1e-6
    assert not np.allclose(stats["batch_stats"]["bn"]["mean"], state["batch_stats"]["bn"]["mean"])
    # the interior point's statistics are W(½)'s own, not the mean of the ends' running statistics
    mid = jax.tree.map(lambda a, b: 0.5 * (a + b), *(jax.tree.map(lambda x: x[0, e], res.copies) for e in (0, 1)))
    w_mid, s_mid = model.split(mid)
    own = stability.batch_statistics(model, w_mid, s_mid, D.normalize(DATA.x_train[idx], DS.mean, DS.std))
    _, acc_mid = evaluate(forward, model.merge(w_mid, own), DATA.x_test, DATA.y_test, DATA.w_test)
    assert abs((1 - float(acc_mid)) - res.test_error[0, 1]) <= 1 / len(DS.y_test) + 1e-6


def test_run_pairs_are_each_rounds_mask_at_the_runs_restart(tmp_path):
    cfg = Config(name="lmc", dataset="synthetic_mnist", model="mlp", widths=(16,), init="glorot_normal",
                 optimizer="adam", lr=1e-3, batch_size=32, validation_size=64, iterations=40, eval_every=20,
                 prune_rate=0.5, rounds=2, seeds=2, strategy="rewind", rewind_iteration=20)
    run = lottery.run(cfg, tmp_path, progress=False, log=lambda s: None)
    pairs = stability.run_pairs(run)
    assert pairs.labels == [(0, 0), (0, 1), (1, 0), (1, 1)] and (pairs.step, pairs.stop) == (20, 40)
    for got, want in zip(jax.tree.leaves(pairs.masks), jax.tree.leaves(run.rounds[1].mask)):
        np.testing.assert_array_equal(got[2:], want)
    for got, want in zip(jax.tree.leaves(pairs.starts), jax.tree.leaves(run.theta_k)):
        np.testing.assert_array_equal(got[:2], want)
    with pytest.raises(ValueError, match="not completed"):
        stability.run_pairs(run, rounds=[5])
    cont = store.load_run(lottery.run(cfg.replace(strategy="continue", rewind_iteration=0, rounds=1), tmp_path,
                                      progress=False, log=lambda s: None).path)
    with pytest.raises(ValueError, match="'reset'.*'rewind'"):
        stability.run_pairs(cont)


def test_cli_instability_table_is_kept_in_the_run(tmp_path, capsys):
    from ltjax import cli

    cfg = Config(name="lmc_cli", dataset="synthetic_mnist", model="mlp", widths=(16,), init="glorot_normal",
                 optimizer="adam", lr=1e-3, batch_size=32, validation_size=64, iterations=40, eval_every=20,
                 prune_rate=0.5, rounds=2, seeds=1)
    run = lottery.run(cfg, tmp_path, progress=False, log=lambda s: None)
    assert cli.main(["instability", str(run.path), "--points", "3", "--train-examples", "100"]) == 0
    first = capsys.readouterr().out
    lines = [ln.split() for ln in first.splitlines()[1:-1]]
    assert [(int(ln[0]), int(ln[1])) for ln in lines] == [(0, 0), (1, 0)]
    assert [ln[2] for ln in lines] == ["100.00", f"{100 * float(run.rounds[1].metrics['density'][0]):.2f}"]
    parts = list((run.path / "parts").glob("instability-*.json"))
    assert len(parts) == 1
    stamp = parts[0].stat().st_mtime_ns
    assert cli.main(["instability", str(run.path), "--points", "3", "--train-examples", "100"]) == 0
    assert capsys.readouterr().out == first and parts[0].stat().st_mtime_ns == stamp  # read back, not recomputed
    assert cli.main(["instability", str(run.path), "--points", "1"]) == 2
    assert "--points=1 is not valid" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["instability", str(run.path), "--rounds", "x"])


def test_cli_dense_instability_of_a_preset(capsys):
    from ltjax import cli

    args = ["instability", "lenet_mnist_2018", "--ks", "0,20", "--points", "3", "--train-examples", "100",
            "--set", "dataset=synthetic_mnist", "--set", "widths=16", "--set", "iterations=40",
            "--set", "eval_every=20", "--set", "validation_size=64"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in out[1:-1]] == ["0", "20"] and "to iteration 40" in out[-1]
    assert cli.main(["instability", "lenet_mnist_2018", "--ks", "0,40", "--set", "dataset=synthetic_mnist",
                     "--set", "iterations=40", "--set", "eval_every=20", "--set", "validation_size=64"]) == 2
    assert "0 <= k < stop=40" in capsys.readouterr().err
