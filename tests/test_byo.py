"""Bring your own: a Flax module, an optax optimizer factory, a loss, a schedule and arrays in
place of the names, with their identity recorded so a run never continues on another object."""

from __future__ import annotations

import json
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ltjax import data as D
from ltjax import identity, lottery, models, store, train
from ltjax.config import Config, ConfigError
from ltjax.store import load_run


class Net(nn.Module):
    hidden: int = 32
    rate: float = 0.3

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(self.hidden, name="fc1")(x.reshape((x.shape[0], -1))))
        return nn.Dense(10, name="out")(nn.Dropout(self.rate, deterministic=not train)(x))


def smooth_ce(logits, labels):
    return optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(labels, 10), 0.1))


def adamw(lr):
    return optax.adamw(lr, weight_decay=1e-4)


ARRAYS = D.synthetic_arrays("mnist")


def _config(**kw) -> Config:
    base = dict(name="byo", dataset=ARRAYS, validation_size=200, model=Net(), optimizer=adamw, loss=smooth_ce,
                lr=2e-3, schedule="cosine", batch_size=32, iterations=40, eval_every=20, rounds=2, seeds=2,
                strategy="rewind", rewind_iteration=20, prune_rate=0.5, exclude=("out",))
    return Config(**{**base, **kw}).validate()


def _quiet(_):
    pass


@pytest.fixture(scope="module")
def byo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("byo")
    return out, lottery.run(_config(), out, progress=False, log=_quiet)


def test_own_module_optimizer_loss_and_arrays_find_a_rewound_ticket(byo_run):
    out, run = byo_run
    last = run.rounds[-1]
    for layer in ("fc1", "out"):
        m, w = np.asarray(last.mask[layer]["kernel"]), np.asarray(last.params[layer]["kernel"])
        assert (w[~m] == 0).all()
    kept = np.asarray(last.mask["fc1"]["kernel"]).reshape(2, -1).mean(1)
    np.testing.assert_allclose(kept, 0.5, atol=1 / 784)  # prune_rate 0.5 of fc1, out excluded
    assert np.asarray(last.mask["out"]["kernel"]).all()
    acc = np.asarray(run.rounds[0].metrics["final_test_acc"])
    assert (acc > 0.5).all(), acc  # 10 balanced classes: chance is 0.1
    recorded = json.loads((run.path / "config.json").read_text())
    assert recorded["model"]["object"] == "model" and recorded["model"]["type"].endswith("Net")
    assert recorded["optimizer"]["type"].endswith("adamw") and recorded["loss"]["type"].endswith("smooth_ce")
    assert recorded["dataset"]["shapes"]["x_train"] == [1024, 28, 28, 1]
    assert (run.path / "model.json").exists()


def test_a_finished_run_loads_without_the_users_code_and_resumes_with_it(byo_run):
    out, run = byo_run
    loaded = load_run(run.path)
    assert isinstance(loaded.config.model, identity.ObjectRef) and loaded.config.model.kind == "model"
    assert "Net" in repr(loaded.config.model)
    assert loaded.config.hash() == _config().hash()
    again = lottery.run(_config(), out, progress=False, log=_quiet)  # nothing left to train
    assert again.path == run.path
    np.testing.assert_array_equal(again.rounds[-1].mask["fc1"]["kernel"], run.rounds[-1].mask["fc1"]["kernel"])
    with pytest.raises(ConfigError, match="model=<your model .*Net.*the record of your own data, model"):
        lottery.run(loaded.config, out, progress=False, log=_quiet)


def test_another_object_is_another_run_and_a_hidden_change_is_refused(byo_run, tmp_path):
    out, run = byo_run
    for changed in (dict(model=Net(hidden=16)), dict(loss=lambda lg, y: smooth_ce(lg, y) * 2),
                    dict(optimizer=lambda lr: optax.adam(lr)),
                    dict(dataset={**ARRAYS, "y_train": ARRAYS["y_train"][::-1].copy()})):
        assert _config(**changed).hash() != _config().hash(), changed

    scale = {"v": 1.0}

    class Scaled(nn.Module):  # an init scale the repr does not show
        @nn.compact
        def __call__(self, x):
            x = x.reshape((x.shape[0], -1))
            return nn.Dense(10, name="out", kernel_init=nn.initializers.normal(scale["v"]))(x)

    cfg = _config(model=Scaled(), rounds=1, seeds=1, iterations=20, rewind_iteration=0, strategy="reset",
                  exclude=())
    first = lottery.run(cfg, tmp_path, progress=False, log=_quiet)
    scale["v"] = 3.0
    with pytest.raises(ValueError, match="computes something else"):
        lottery.run(cfg, tmp_path, progress=False, log=_quiet)
    assert (first.path / "round_000").exists()  # nothing already saved is lost


def test_the_optimizer_factory_gets_the_schedule_offset_to_the_tickets_first_iteration():
    seen = []

    def factory(lr):
        seen.append(lr)
        return optax.sgd(lr)

    sched = optax.cosine_decay_schedule(1.0, 100)
    spec = train.TrainSpec(optimizer=factory, schedule=sched)
    train.make_optimizer(spec, start_step=30)
    assert float(seen[0](0)) == float(sched(30)) and float(seen[0](5)) == float(sched(35))
    with pytest.raises(TypeError, match="must return an optax.GradientTransformation"):
        train.make_optimizer(train.TrainSpec(optimizer=lambda lr: "sgd"))


def test_bad_objects_are_refused_with_what_would_be_right():
    cases = {
        "optimizer=": dict(optimizer=optax.adam(1e-3)),  # a transformation, not a factory
        "weight_decay=": dict(weight_decay=1e-4),  # a named optimizer's setting beside your own
        "lr_drops=": dict(schedule="cosine", lr_drops=(10,)),
        "warmup_iterations=": dict(schedule=lambda t: 0.1, warmup_iterations=5),
        "loss=": dict(loss=3),
        "model=": dict(model=object()),
        "dataset=": dict(dataset={"x_train": ARRAYS["x_train"]}),
    }
    for what, kw in cases.items():
        with pytest.raises(ConfigError, match=what):
            _config(**kw)


def test_a_loss_that_returns_the_mean_is_refused():
    logits, y = jnp.zeros((4, 10)), jnp.arange(4)
    with pytest.raises(ValueError, match="one value per example"):
        train.loss_and_correct(logits, y, lambda lg, yy: smooth_ce(lg, yy).mean())
    per_example, ok = train.loss_and_correct(logits, y, smooth_ce)
    np.testing.assert_allclose(per_example, np.log(10), rtol=1e-6)


def test_wrap_checks_the_module_against_the_data():
    m = models.wrap(Net(), input_shape=(28, 28, 1), num_outputs=10)
    assert m.train_flag and m.rngs == ("dropout",) and not m.stateful
    with pytest.raises(ValueError, match=r"returns shape \(1, 10\).*\(batch, 3\)"):
        models.wrap(Net(), input_shape=(28, 28, 1), num_outputs=3)

    class BN(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.BatchNorm(use_running_average=not train)(nn.Dense(8)(x))
            return nn.Dense(2)(x)

    bn = models.wrap(BN(), input_shape=(4,), num_outputs=2)
    params = bn.init(jax.random.PRNGKey(0))
    weights, state = bn.split(params)
    assert models.STATE in state and models.STATE not in weights
    _, new = bn.forward_train(weights, state, jnp.ones((5, 4)))
    assert not np.allclose(new[models.STATE]["BatchNorm_0"]["mean"], 0)


def test_dropout_draws_a_key_per_ticket_and_iteration():
    model = models.wrap(Net(rate=0.5), input_shape=(28, 28, 1), num_outputs=10)
    weights = model.init(jax.random.PRNGKey(0))
    x = jnp.ones((2, 28, 28, 1))
    a, _ = model.forward_train(weights, {}, x, jax.random.PRNGKey(1))
    b, _ = model.forward_train(weights, {}, x, jax.random.PRNGKey(2))
    c, _ = model.forward_train(weights, {}, x, jax.random.PRNGKey(1))
    assert not np.array_equal(a, b) and np.array_equal(a, c)
    np.testing.assert_array_equal(model.apply(weights, x), model.apply(weights, x))  # evaluation: no dropout


def test_from_arrays_splits_scales_and_checks():
    ds = D.from_arrays(ARRAYS, validation_size=100, split_seed=1)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (924, 100, 256) and ds.num_classes == 10
    flat = ARRAYS["x_train"].astype(np.float64) / 255
    np.testing.assert_allclose(ds.mean, [flat.mean()], rtol=1e-9)
    np.testing.assert_allclose(ds.std, [flat.std()], rtol=1e-9)
    same = D.from_arrays(tuple(ARRAYS[k] for k in ("x_train", "y_train", "x_test", "y_test")),
                         validation_size=100, split_seed=1)
    np.testing.assert_array_equal(same.x_val, ds.x_val)
    own_val = {**ARRAYS, "x_val": ARRAYS["x_test"][:10], "y_val": ARRAYS["y_test"][:10]}
    with pytest.raises(ValueError, match="validation_size must be 10"):
        D.from_arrays(own_val, validation_size=100)
    with pytest.raises(ValueError, match="integer class labels"):
        D.from_arrays({**ARRAYS, "y_train": ARRAYS["y_train"].astype(np.float32)})
    with pytest.raises(ValueError, match="x_test has 256 examples but y_test has 255"):
        D.from_arrays({**ARRAYS, "y_test": ARRAYS["y_test"][:-1]})


STUDY_FILE = '''
import flax.linen as nn
import optax
from ltjax import data as D
from ltjax.config import Config


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(16, name="fc1")(x.reshape((x.shape[0], -1))))
        return nn.Dense(10, name="out")(x)


def adamw(lr):
    return optax.adamw(lr, weight_decay=1e-4)


STUDY = Config(name="cli_study", dataset=D.synthetic_arrays("mnist"), validation_size=200, model=Net(),
               optimizer=adamw, lr=2e-3, batch_size=32, iterations=20, eval_every=10, rounds=2, prune_rate=0.5)
'''


def test_the_command_line_runs_a_study_file_with_your_own_objects(tmp_path, capsys):
    from ltjax import cli, presets

    (tmp_path / "my_study.py").write_text(STUDY_FILE)
    spec = f"{tmp_path / 'my_study.py'}:STUDY"
    code = cli.main(["run", spec, "--out", str(tmp_path / "runs"), "--no-progress", "--set", "training.lr=1e-3"])
    out, err = capsys.readouterr()
    assert code == 0, err
    (d,) = list((tmp_path / "runs").iterdir())
    run = load_run(d)
    assert len(run.rounds) == 2 and run.config.lr == 1e-3 and run.config.model.description["type"].endswith("Net")
    assert run.config.optimizer.description["type"].endswith("adamw") and "density %" in out
    # the same Config from Python is the same run (nothing retrained), and a module path names it too
    assert presets.get(spec).replace(lr=1e-3).hash() == run.config.hash()
    for bad, expect in ((f"{tmp_path / 'nope.py'}:STUDY", "there is no file"),
                        (f"{tmp_path / 'my_study.py'}:STUDDY", "defines no 'STUDDY' (did you mean 'STUDY'?)"),
                        (f"{tmp_path / 'my_study.py'}:adamw", "not an ltjax Config"),
                        ("no_such_module_xyz:STUDY", "cannot import 'no_such_module_xyz'")):
        assert cli.main(["run", bad, "--out", str(tmp_path / "runs")]) == 2
        assert expect in capsys.readouterr().err, bad


def test_a_registered_preset_holds_your_objects(tmp_path):
    from ltjax import presets

    presets.register("my_byo_test", _config(rounds=1, seeds=1), "a test preset")
    try:
        assert presets.get("my_byo_test").model == Net() and presets.describe("my_byo_test") == "a test preset"
        with pytest.raises(ValueError, match="already registered"):
            presets.register("my_byo_test", _config())
        with pytest.raises(TypeError, match="needs an ltjax Config"):
            presets.register("other_byo_test", {"lr": 0.1})
    finally:
        presets.PRESETS.pop("my_byo_test")


# A registered model: its identity is recorded too, and reading its run needs no registration.

ACT = {"fn": nn.relu}  # an activation the repr does not show


class TinyNet(nn.Module):
    hidden: int = 16
    rate: float = 0.0

    @nn.compact
    def __call__(self, x):
        x = ACT["fn"](nn.Dense(self.hidden, name="fc1")(x.reshape((x.shape[0], -1))))
        return nn.Dense(10, name="out")(nn.Dropout(self.rate, deterministic=True)(x))


def _tiny(**attrs):
    def factory(widths=(), *, input_shape, num_outputs=10, init="glorot_normal", init_std=0.1):
        return models.Model(TinyNet(**attrs), tuple(input_shape), num_outputs)

    return factory


TINY = dict(name="tiny", dataset=ARRAYS, validation_size=200, model="tiny_cnn", batch_size=32, iterations=20,
            eval_every=20, rounds=1, seeds=1, lr=0.1)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished run of a registered model; the model is unregistered again afterwards."""
    out = tmp_path_factory.mktemp("tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(models.MODELS, "tiny_cnn", _tiny())
        return out, lottery.run(Config(**TINY), out, progress=False, log=_quiet)


def test_a_registered_model_whose_code_changed_is_refused_naming_both(tiny_run, monkeypatch):
    out, run = tiny_run
    recorded = json.loads((run.path / "model.json").read_text())
    assert recorded["model"] == "tiny_cnn" and recorded["params"]["fc1/kernel"] == "float32[784,16]"
    assert "TinyNet" in recorded["repr"] and recorded["program"] and "fingerprint" not in recorded
    changes = [(_tiny(hidden=8), re.escape("fc1/kernel: recorded float32[784,16], now float32[784,8]")),
               (_tiny(rate=0.5), "the model TinyNet.*rate = 0.0.*; the model given now is TinyNet.*rate = 0.5")]
    for factory, message in changes:
        monkeypatch.setitem(models.MODELS, "tiny_cnn", factory)
        with pytest.raises(ValueError, match=message):
            lottery.run(Config(**TINY), out, progress=False, log=_quiet)
    monkeypatch.setitem(models.MODELS, "tiny_cnn", _tiny())
    monkeypatch.setitem(ACT, "fn", nn.tanh)
    with pytest.raises(ValueError, match="computes something else.*though its parameters and repr are the same"):
        lottery.run(Config(**TINY), out, progress=False, log=_quiet)
    assert json.loads((run.path / "model.json").read_text()) == recorded  # nothing was changed


def test_a_run_without_a_model_record_gets_one_instead_of_a_refusal(tiny_run, monkeypatch):
    out, run = tiny_run
    recorded = (run.path / "model.json").read_text()
    (run.path / "model.json").unlink()  # as a run from before the record
    monkeypatch.setitem(models.MODELS, "tiny_cnn", _tiny())
    seen = []
    again = lottery.run(Config(**TINY), out, progress=False, log=seen.append)
    assert again.path == run.path and "already complete" in seen[0]
    assert (run.path / "model.json").read_text() == recorded


def test_reading_a_run_of_a_registered_model_needs_no_model_code(tiny_run, capsys):
    from ltjax import cli

    out, run = tiny_run
    assert "tiny_cnn" not in models.MODELS
    loaded = load_run(run.path)
    assert loaded.config.model == "tiny_cnn" and loaded.config.hash() == run.config.hash()
    assert np.asarray(loaded.rounds[0].mask["fc1"]["kernel"]).all()
    assert cli.main(["show", str(run.path)]) == 0
    assert "density %" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="model='tiny_cnn' is not valid"):  # training it needs the model
        lottery.run(loaded.config, out, progress=False, log=_quiet)


def test_a_flip_run_does_not_reuse_rounds_trained_with_another_model(tmp_path, monkeypatch):
    monkeypatch.setitem(models.MODELS, "tiny_cnn", _tiny())
    flip = Config(**{**TINY, "rounds": 3, "flip_round": 2})
    model = identity.model_identity(_tiny()(input_shape=(28, 28, 1)))
    store.init_run(flip.replace(flip_round=0), tmp_path, model=identity.model_identity(_tiny(hidden=8)(
        input_shape=(28, 28, 1))))
    d, seen = store.init_run(flip, tmp_path, model=model), []
    lottery._adopt_parent_rounds(flip, tmp_path, d, model, seen.append)
    assert "not reusing the rounds" in seen[0] and "fc1/kernel: recorded float32[784,8], now float32[784,16]" in seen[0]
