"""The round loop's registered parts: restarts, mask policies (iterative, one-shot, at
initialization, random at initialization), controls; and what a new part takes to add."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import lottery, pruning, rounds, scores
from ltjax import masks as M
from ltjax.config import Config, ConfigError

ARRAYS_CFG = dict(name="parts", dataset="synthetic_mnist", validation_size=200, model="mlp", widths=(32,),
                  optimizer="adam", lr=1e-3, batch_size=32, iterations=40, eval_every=20, rounds=3, seeds=2,
                  prune_rate=0.5, layer_rates=(("out", 0.25),))


def _quiet(_):
    pass


def _run(tmp_path, **kw):
    return lottery.run(Config(**{**ARRAYS_CFG, **kw}).validate(), tmp_path, progress=False, log=_quiet)


def _kept(mask) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in jax.vmap(M.count)(jax.tree.map(jnp.asarray, mask)).items()}


def test_random_at_init_is_a_study_of_random_masks_at_one_shot_counts(tmp_path):
    rnd = _run(tmp_path, mode="random_at_init")
    shot = _run(tmp_path, mode="oneshot")
    other_lr = _run(tmp_path, mode="random_at_init", lr=3e-3)  # other trained weights, same masks
    for r in (1, 2):
        a, b = rnd.rounds[r].mask, shot.rounds[r].mask
        ka_, kb_ = _kept(a), _kept(b)
        assert sorted(ka_) == sorted(kb_)
        for layer in ka_:  # exact per-layer counts of one-shot pruning
            np.testing.assert_array_equal(ka_[layer], kb_[layer])
        for layer in ("fc1", "out"):
            ka, kb = np.asarray(a[layer]["kernel"]), np.asarray(b[layer]["kernel"])
            overlap = (ka & kb).sum() / kb.sum()
            density = kb.mean()
            assert abs(overlap - density) < 0.1, (r, layer, overlap, density)  # chance overlap: random
            np.testing.assert_array_equal(ka, np.asarray(other_lr.rounds[r].mask[layer]["kernel"]))
        assert not np.array_equal(a["fc1"]["kernel"][0], a["fc1"]["kernel"][1])  # keyed per ticket
    # every round is its own draw from the dense mask (not nested in the previous round's)
    m1, m2 = np.asarray(rnd.rounds[1].mask["fc1"]["kernel"]), np.asarray(rnd.rounds[2].mask["fc1"]["kernel"])
    assert (m2 & ~m1).any()


def test_at_init_prunes_theta0_by_the_score_before_training(tmp_path):
    run = _run(tmp_path, mode="at_init", rounds=2)
    theta0 = jax.tree.map(jnp.asarray, run.theta0)
    dense = jax.vmap(lambda p: M.make_mask(p, lambda path, a: path[-1].key == "kernel"))(theta0)
    cfg = run.config
    rates = rounds.round_rates(cfg, M.layer_names(jax.tree.map(lambda a: a[0], dense)), 1)
    want = jax.vmap(lambda p, m: pruning.prune(scores.magnitude(p, m), m, rates))(theta0, dense)
    for layer in ("fc1", "out"):
        np.testing.assert_array_equal(run.rounds[1].mask[layer]["kernel"], want[layer]["kernel"])


def test_a_new_restart_is_one_registration_and_the_loop_uses_it(tmp_path):
    # learning-rate rewinding (Renda et al. 2020): the previous round's trained weights, the
    # schedule and data order from iteration k
    rounds.register_restart("lr_rewind_demo", rounds.Restart(lambda ctx, r: ctx.state(r - 1)[1], lambda k: k))
    try:
        run = _run(tmp_path, strategy="lr_rewind_demo", rewind_iteration=20, rounds=2)
    finally:
        del rounds.RESTARTS["lr_rewind_demo"]
    steps = np.asarray(run.rounds[1].metrics["curves"]["step"])
    np.testing.assert_array_equal(steps, [40])  # one evaluation: round 1 trains iterations 20..40
    np.testing.assert_array_equal(np.asarray(run.rounds[0].metrics["curves"]["step"]), [20, 40])
    assert not (run.path / "theta_k").exists()  # it does not rewind weights, so no θk is saved


def test_a_new_control_is_one_function_and_one_registration(tmp_path):
    def negated(ctx, keys, start, mask, source, copy):  # the ticket's start with every sign flipped
        return jax.tree.map(jnp.negative, start), mask

    rounds.register_control("negated_demo", negated)
    try:
        run = _run(tmp_path, controls=("negated_demo",), rounds=2, seeds=1)
    finally:
        del rounds.CONTROLS["negated_demo"]
    c = run.rounds[1].metrics["controls"]["negated_demo"]
    np.testing.assert_array_equal(c["vs_ticket"]["total"]["difference"], 0)  # the ticket's own mask
    assert np.isfinite(c["final_test_acc"]).all()


def test_registering_checks_names_and_kinds():
    with pytest.raises(ValueError, match="already registered"):
        rounds.register_restart("reset", rounds.RESTARTS["reset"])
    with pytest.raises(TypeError, match="Restart"):
        rounds.register_restart("bad_restart", lambda ctx, r: None)
    with pytest.raises(ValueError, match="already registered"):
        rounds.register_control("reinit", lambda *a: None)
    with pytest.raises(ConfigError, match="mode='nope'.*at_init.*random_at_init"):
        Config(mode="nope").validate()
    with pytest.raises(ConfigError, match="controls=.*snip"):
        Config(strategy="rewind", rewind_iteration=100, iterations=200, controls=("snip",)).validate()
    Config(mode="at_init", densities=(0.5, 0.25), rounds=3).validate()  # densities: any from-dense policy


def test_snip_is_a_score_and_at_init_with_it_is_a_snip_study(tmp_path):
    from ltjax import data as D
    from ltjax import snip
    from ltjax.data.order import batch_indices

    run = _run(tmp_path, mode="at_init", score="snip", scope="global", layer_rates=(), rounds=2)
    cfg = run.config
    ds = D.load(cfg.dataset, validation_size=cfg.validation_size, split_seed=cfg.split_seed)
    model = lottery.build_model(cfg, ds)
    loss_fn = lottery.make_loss(model, ds.mean, ds.std)
    _, data_keys = lottery.ticket_keys(cfg)
    theta0 = jax.tree.map(jnp.asarray, run.theta0)
    dense = jax.vmap(lambda p: M.make_mask(p, model.is_prunable))(theta0)
    mask = run.rounds[1].mask
    for t in range(cfg.seeds):
        idx = batch_indices(data_keys[t], len(ds.x_train), cfg.batch_size, jnp.int32(0))
        one = lambda tree: jax.tree.map(lambda a: None if a is None else a[t], tree,  # noqa: E731
                                        is_leaf=lambda x: x is None)
        keep = int(sum(np.asarray(v).sum() for v in jax.tree.leaves(one(mask))))
        want = snip.snip(loss_fn, one(theta0), one(dense), jnp.asarray(ds.x_train[idx]), jnp.asarray(ds.y_train[idx]),
                         keep)
        for layer in ("fc1", "out"):
            np.testing.assert_array_equal(np.asarray(mask[layer]["kernel"][t]), np.asarray(want[layer]["kernel"]))
    with pytest.raises(ValueError, match="'snip' needs a minibatch"):
        rounds.next_mask(cfg, theta0, dense, 1)


# Learning-rate rewinding and fine-tuning (Renda et al. 2020): k = 2 of T = 4 iterations, a
# 10x drop at iteration 3, so the learning rate at k (0.1) and the final one (0.01) differ;
# one evaluation per iteration, so round 1's two retraining steps can be checked by hand.
RENDA_CFG = dict(optimizer="sgd", lr=0.1, lr_drops=(3,), lr_drop_factor=0.1, iterations=4, eval_every=1,
                 rewind_iteration=2, rounds=2, widths=(16,))


@pytest.mark.parametrize("strategy, lrs", [("lr_rewind", (0.1, 0.01)), ("finetune", (0.01, 0.01))])
def test_lr_rewind_and_finetune_retrain_the_trained_weights_at_their_learning_rates(tmp_path, strategy, lrs):
    from ltjax import data as D
    from ltjax.data.order import batch_indices

    run = _run(tmp_path, strategy=strategy, **RENDA_CFG)
    cfg = run.config
    prev, mask = run.rounds[0].params, run.rounds[1].mask
    start, step = lottery.round_start(cfg, 1, run.theta0, run.theta_k, prev, mask)
    assert step == 2 and not (run.path / "theta_k").exists()
    np.testing.assert_array_equal(np.asarray(run.rounds[1].metrics["curves"]["step"]), [3, 4])  # rewind's budget
    for p, s, m in zip(jax.tree.leaves(prev), jax.tree.leaves(start), jax.tree.leaves(mask, is_leaf=lambda x: x is None)):
        want = np.asarray(p) if m is None else np.where(np.asarray(m), p, 0.0)  # exactly, pruned weights 0
        np.testing.assert_array_equal(np.asarray(s), want)
    # two SGD steps by hand on the batches of iterations 2 and 3, at the strategy's learning rates
    ds = D.load("synthetic_mnist", validation_size=cfg.validation_size, split_seed=cfg.split_seed)
    loss = lottery.make_loss(lottery.build_model(cfg, ds), ds.mean, ds.std)
    key = lottery.ticket_keys(cfg)[1][0]
    p = jax.tree.map(lambda a: jnp.asarray(a)[0], start)
    m0 = jax.tree.map(lambda a: None if a is None else jnp.asarray(a)[0], mask, is_leaf=lambda x: x is None)
    for t, lr in zip((2, 3), lrs):
        idx = batch_indices(key, len(ds.x_train), cfg.batch_size, jnp.int32(t))
        g = M.apply_mask(jax.grad(loss)(p, ds.x_train[idx], ds.y_train[idx]), m0)
        p = jax.tree.map(lambda a, b: a - lr * b, p, g)
    for a, b, m in zip(jax.tree.leaves(p), jax.tree.leaves(run.rounds[1].params),
                       jax.tree.leaves(m0, is_leaf=lambda x: x is None)):
        np.testing.assert_allclose(np.asarray(b)[0], a, rtol=1e-5, atol=1e-6)
        if m is not None:
            assert (np.asarray(b)[0][~np.asarray(m)] == 0).all()


def test_lr_rewind_and_finetune_resume_after_a_crash_with_the_same_masks(tmp_path, monkeypatch):
    from ltjax import store

    for strategy in ("lr_rewind", "finetune"):
        kw = dict(RENDA_CFG, strategy=strategy, rounds=3)
        whole = _run(tmp_path / f"{strategy}_whole", **kw)

        def crash(name):
            if name == "round2.start":  # rounds 0 and 1 committed: round 2 reads round 1 from disk
                raise KeyboardInterrupt(name)

        monkeypatch.setattr(store, "fault_point", crash)
        with pytest.raises(KeyboardInterrupt):
            _run(tmp_path / f"{strategy}_resumed", **kw)
        monkeypatch.undo()
        resumed = _run(tmp_path / f"{strategy}_resumed", **kw)
        for a, b in zip(whole.rounds, resumed.rounds, strict=True):
            for x, y in zip(jax.tree.leaves((a.mask, a.params)), jax.tree.leaves((b.mask, b.params))):
                np.testing.assert_array_equal(x, y)


def test_finetune_refuses_controls_that_train_on_the_schedule():
    with pytest.raises(ConfigError, match="controls=.*strategy=finetune"):
        Config(strategy="finetune", controls=("reset",)).validate()
    Config(strategy="finetune", controls=("reinit", "shuffle")).validate()
    Config(strategy="lr_rewind", controls=("reset",)).validate()  # k = 0: θ0's schedule from iteration 0
