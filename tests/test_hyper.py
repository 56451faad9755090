"""Per-ticket hyperparameters: learning rate, weight decay and initialization std as traced
per-ticket values, so a sweep over them is one vmapped program.

Each sweep is compared with separate runs *of the same shape* (three tickets vmapped, every
ticket at one value, the value a compile-time constant): the same arithmetic per ticket, so
bitwise equal. Only the value's origin differs (an operand instead of a constant)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ltjax import models
from ltjax.train import TrainSpec, device_data, make_trainer
from tests.test_train import DS, MODEL, _tickets

VALUES = (0.2, 0.05, 0.01)


def _same_ticket_thrice(params, mask, keys, i):
    pick = lambda a: jnp.stack([a[i]] * 3)  # noqa: E731
    return jax.tree.map(pick, params), jax.tree.map(pick, mask), pick(keys)


@pytest.mark.parametrize("optimizer,field,extra", [("momentum", "lr", {"lr_drops": (20,)}),
                                                   ("sgd", "weight_decay", {"lr": 0.1}),
                                                   ("adam", "lr", {"warmup_iterations": 10})])
def test_a_three_value_sweep_in_one_program_equals_three_separate_runs(optimizer, field, extra):
    params, mask, keys = _tickets(3)
    spec = TrainSpec(optimizer=optimizer, batch_size=32, eval_every=20, **extra)
    values = VALUES if optimizer != "adam" else tuple(v / 10 for v in VALUES)
    data = device_data(DS)
    sweep = make_trainer(MODEL, spec, DS.mean, DS.std)
    out, curves = sweep(params, mask, keys, data, 0, 40, hyper={field: jnp.asarray(values)})
    for i, v in enumerate(values):
        alone = make_trainer(MODEL, spec._replace(**{field: v}), DS.mean, DS.std)
        ref, ref_curves = alone(*_same_ticket_thrice(params, mask, keys, i), data, 0, 40)
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref)):
            np.testing.assert_array_equal(np.asarray(a)[i], np.asarray(b)[i], err_msg=f"{field}={v}")
        np.testing.assert_array_equal(curves.test_acc[i], ref_curves.test_acc[i])
    # the values really act: three different trainings
    assert len({np.asarray(out["fc1"]["kernel"][i]).tobytes() for i in range(3)}) == 3


def test_a_sweep_with_a_rewound_start_and_a_split_run_continues_each_tickets_schedule():
    params, mask, keys = _tickets(3)
    spec = TrainSpec(optimizer="momentum", batch_size=32, eval_every=20, lr_drops=(50,))
    data, hyper = device_data(DS), {"lr": jnp.asarray(VALUES)}
    tr = make_trainer(MODEL, spec, DS.mean, DS.std)
    whole = tr.stateful(params, mask, keys, data, 20, 60, hyper=hyper)
    first = tr.stateful(params, mask, keys, data, 20, 20, hyper=hyper)
    rest = tr.stateful(first.params, first.mask, keys, data, 40, 40, opt_state=first.opt_state, origin=20, hyper=hyper)
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(rest.params)):
        np.testing.assert_array_equal(a, b)


def test_hyper_values_are_checked():
    params, mask, keys = _tickets(3)
    data = device_data(DS)
    tr = make_trainer(MODEL, TrainSpec(batch_size=32, eval_every=20), DS.mean, DS.std)
    with pytest.raises(ValueError, match="unknown per-ticket hyperparameters \\['momentum'\\]"):
        tr(params, mask, keys, data, 0, 20, hyper={"momentum": jnp.ones(3)})
    with pytest.raises(ValueError, match="one value per ticket, shape \\(3,\\)"):
        tr(params, mask, keys, data, 0, 20, hyper={"lr": jnp.ones(2)})
    own = make_trainer(MODEL, TrainSpec(optimizer=lambda lr: optax.adamw(lr, weight_decay=0.1), batch_size=32,
                                        eval_every=20), DS.mean, DS.std)
    with pytest.raises(ValueError, match="weight_decay.*your own optimizer"):
        own(params, mask, keys, data, 0, 20, hyper={"weight_decay": jnp.ones(3)})
    cosine = make_trainer(MODEL, TrainSpec(schedule=optax.cosine_decay_schedule(0.1, 100), batch_size=32,
                                           eval_every=20), DS.mean, DS.std)
    with pytest.raises(ValueError, match="lr.*your own schedule"):
        cosine(params, mask, keys, data, 0, 20, hyper={"lr": jnp.ones(3)})


def test_an_init_std_sweep_in_one_program_equals_each_std_built_alone():
    stds = jnp.asarray([0.05, 0.1, 0.3])
    unit = models.mlp((32, 16), input_shape=(8, 8, 1), init="trunc_normal", init_std=1.0)
    keys = jax.random.split(jax.random.PRNGKey(4), 3)
    swept = models.run_init(jax.vmap(lambda k, s: models.init_with_std(unit, k, s)), keys, stds)
    for i, s in enumerate(np.asarray(stds).tolist()):
        alone = models.mlp((32, 16), input_shape=(8, 8, 1), init="trunc_normal", init_std=s)
        ref = models.run_init(jax.vmap(alone.init), keys)
        for a, b in zip(jax.tree.leaves(swept), jax.tree.leaves(ref)):
            np.testing.assert_array_equal(np.asarray(a)[i], np.asarray(b)[i])
    with pytest.raises(ValueError, match="trunc_normal.*init_std=1"):
        models.init_with_std(MODEL, keys[0], 0.1)


# -- a sweep as a study: Config.sweep through lottery.run -------------------------------------

def _study(tmp_path, name, **kw):
    from ltjax import lottery, presets

    cfg = presets.get("lenet_mnist_2018").replace(widths=(64,), iterations=200, eval_every=100, rounds=2, **kw)
    return lottery.run(cfg, tmp_path / name, progress=False, log=lambda s: None)


def _layer_counts(mask):
    return {k: np.asarray(v["kernel"]).reshape(len(v["kernel"]), -1).sum(1) for k, v in mask.items()}


def test_an_lr_sweep_study_is_one_program_that_agrees_with_a_run_per_value(tmp_path):
    """Three learning rates, one ticket each (seed 0: the same θ0 and data order), in one
    program, against three one-ticket runs. The programs differ in shape (3 tickets vmapped
    vs 1), which may round float32 matmuls differently on some CPUs, so weights and accuracies
    are compared to a tolerance (200 SGD steps amplify last-bit differences to ~1e-5 in the
    weights; accuracies within 0.3 points), masks to 0.1% of their positions (a near-tie at
    the pruning threshold may swap), and what is exact is exact: θ0, the counts kept per layer."""
    from ltjax import report

    values = (0.2, 0.05, 0.01)
    sweep = _study(tmp_path, "sweep", sweep="lr", sweep_values=values)
    assert sweep.theta0["fc1"]["kernel"].shape[0] == 3
    np.testing.assert_array_equal(sweep.rounds[1].metrics["ticket_lr"], values)
    table = report.round_table(sweep)
    assert all(f"lr={v:g} (1 tickets):" in table for v in values)
    finals = []
    for i, v in enumerate(values):
        alone = _study(tmp_path, f"lr{v}", lr=v)
        np.testing.assert_array_equal(sweep.theta0["fc1"]["kernel"][i], alone.theta0["fc1"]["kernel"][0])
        for r in (0, 1):
            a, b = sweep.rounds[r], alone.rounds[r]
            for layer, n in _layer_counts(a.mask).items():
                assert n[i] == _layer_counts(b.mask)[layer][0], (v, r, layer)
            differ = sum(int(np.sum(np.asarray(a.mask[k]["kernel"][i]) != np.asarray(b.mask[k]["kernel"][0])))
                         for k in a.mask)
            assert differ <= 1e-3 * sum(np.asarray(b.mask[k]["kernel"]).size for k in a.mask), (v, r, differ)
            np.testing.assert_allclose(a.params["fc1"]["kernel"][i], b.params["fc1"]["kernel"][0], atol=1e-4)
            assert abs(a.metrics["final_test_acc"][i] - b.metrics["final_test_acc"][0]) <= 3e-3
        finals.append(float(alone.rounds[0].metrics["final_test_acc"][0]))
    assert len(set(finals)) == 3  # three different trainings


def test_an_init_std_sweep_study_draws_each_tickets_theta0_at_its_std(tmp_path):
    stds = (0.05, 0.2)
    sweep = _study(tmp_path, "std", init_std=1.0, sweep="init_std", sweep_values=stds, seeds=2,
                   controls=("reinit",))
    for j, s in enumerate(stds):
        alone = _study(tmp_path, f"std{s}", init_std=s, seeds=2)  # the same draws, built at std s
        for a, b in zip(jax.tree.leaves(sweep.theta0), jax.tree.leaves(alone.theta0)):
            np.testing.assert_array_equal(np.asarray(a)[2 * j:2 * j + 2], np.asarray(b))
    # the reinit control redraws at the ticket's own std, not the model's unit std
    assert np.asarray(sweep.rounds[1].metrics["controls"]["reinit"]["final_test_acc"]).shape == (1, 4)
    k = np.asarray(sweep.theta0["fc1"]["kernel"])
    assert 0.03 < k[:2].std() < 0.06 and 0.14 < k[2:].std() < 0.2


def test_a_sweep_from_the_command_line(tmp_path, capsys):
    from ltjax import cli

    code = cli.main(["run", "lenet_mnist_2018", "--rounds", "1", "--iterations", "100", "--set", "eval_every=100",
                     "--set", "model.widths=16", "--set", "study.sweep=weight_decay",
                     "--set", "study.sweep_values=0,0.01", "--out", str(tmp_path), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "weight_decay=0 (1 tickets):" in out and "weight_decay=0.01 (1 tickets):" in out
