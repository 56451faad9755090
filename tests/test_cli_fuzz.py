"""Property-based tests of the ``ltjax`` command line and of ``Config`` parsing (hypothesis).

Random ``--set key=value`` lists, presets, ``--seeds/--rounds/--iterations`` values and
argument shapes go through ``ltjax.cli.main`` in process. Every call must end in a run
(exit 0), a clear error (exit 2, ``ltjax: error: ...`` naming what is wrong) or an argparse
usage error (``SystemExit(2)``): never a traceback.

Training is replaced by a no-op (``lottery._execute``), so an accepted configuration still
loads the data, builds the model, passes preflight, creates its run directory, takes the
lock and verifies the directory, but trains nothing. ``fashion_mnist`` is served from the
MNIST arrays (same shapes) so that no example prepares a dataset with TFDS.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields

import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings, strategies as st  # noqa: E402

from ltjax import cli, lottery, presets, store  # noqa: E402
from ltjax import data as D  # noqa: E402
from ltjax.config import ALIASES, SECTIONS, Config, ConfigError, _show, field_of  # noqa: E402

FIELDS = [f.name for f in fields(Config)]
# every other spelling of a field: section.key (the nested config) and the flat aliases (score)
SPELLINGS = [f"{s}.{k}" for s, keys in SECTIONS.items() for k in keys] + list(ALIASES)
PRESETS = sorted(presets.PRESETS)
# An error names a field with its value ("lr=nan is not valid"), a preflight pattern
# ("exclude names 'zz'") or the data's bound ("validation_size must be in [0, 59999]"), in the
# spelling the user gave (model_args or model.args).
NAMES_A_FIELD = re.compile(r"\b(%s)(=| names | must )" % "|".join(map(re.escape, FIELDS + SPELLINGS)))

# Sized for about 30 CPU-s in all (an accepted run costs ~20 ms without training): the examples
# are drawn afresh on every run, so the suite covers more of the space run after run.
_SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]


def fuzz(n: int):
    return settings(max_examples=n, deadline=None, suppress_health_check=_SUPPRESS)


# -- strategies -------------------------------------------------------------------------------

NUMBERS = [
    "0", "-0", "1", "-1", "2", "4", "7", "100", "469", "500", "5e4", "2.0", "0.5", "1.5", "-0.5", "0.999999",
    "1e-320", "1e308", "1e309", "-1e309", "nan", "NaN", "inf", "-inf", "+5", "1_000", "0x10", "١٢",
    "true", "false", "None", "null", "", " ", str(2**31 - 1), str(2**31), str(2**32 - 1), str(2**32),
    str(2**63), str(10**30), "9" * 400, "9" * 5000,
]
PLAUSIBLE = {
    "name": ["custom", "my run", "ré-sumé", "a/b", "../../escape", "..", ".", "x" * 300, "é" * 130, "tab\there",
             "nul\x00byte", "\udcff", "-dash", "a\\b"],
    "dataset": ["mnist", "fashion_mnist", "xor", "cifar10", "MNIST"],
    "model": ["mlp", "cnn"],
    "init": ["trunc_normal", "glorot_normal", "kaiming_normal", "he"],
    "optimizer": ["sgd", "momentum", "adam", "rmsprop"],
    "strategy": ["reset", "rewind", "continue", "Reset"],
    "mode": ["iterative", "oneshot", "one-shot"],
    "scope": ["layerwise", "global", "local"],
    "score": ["magnitude", "random", "snip"],
    "widths": ["300,100", "64", "8,8,8", "100000000", "0", "300,,100", "300;100", "-5", "3.5"],
    "layer_rates": ["out:0.1", "out:0.1,fc*:0.3", "", "fc1:1", "out:0", "zz:0.1", "out", ":0.2", "out:0.1,out:0.2",
                    "out:nan", "fc[:0.1", "out:0.1:0.2", "*:0.5"],
    "exclude": ["out", "fc1", "fc*", "", "*", "zz", "fc1,fc2,out", "fc["],
    "densities": ["0.5,0.2", "1", "0.5,0.6", "", "0.5,0.5", "0", "0.8,0.64,0.512"],
    "lr_drops": ["", "100", "100,200", "100,100", "0", "49999"],
    "iterations": ["100", "200", "18760", "50000", "150"],
    "eval_every": ["100", "469", "1", "7"],
    "rewind_iteration": ["0", "100", "469", "60000"],
    "validation_size": ["0", "5000", "59990", "59999", "60000"],
    "batch_size": ["1", "60", "128", "54999", "55000", "60000"],
    "rounds": ["1", "2", "22", "1000", "1001"],
    "seeds": ["1", "2", "8", str(2**32)],
    "sweep": ["lr", "weight_decay", "init_std", "momentum", ""],
    "sweep_values": ["0.1,0.01", "0.1", "0,0.01", "0.1,0.1", "-1,1", ""],
}
UNKNOWN_KEYS = ["nosuchkey", "Prune_rate", "prune-rate", "lr ", " seeds", "epochs", "rate", "é", "a=b", "trainng.lr",
                "training.lrr", "training.", ".lr", "model.name.x", "pruning.score", "data.dataset"]

texts = st.text(max_size=12)  # unicode, control characters, NUL, commas, colons, '='
floats = st.floats(allow_nan=True, allow_infinity=True).map(repr)
ints = st.one_of(st.integers(-1000, 100_000), st.integers()).map(str)
lists = st.lists(st.one_of(ints, floats, st.sampled_from(NUMBERS)), max_size=4).map(",".join)
pairs = st.lists(
    st.tuples(st.sampled_from(["out", "fc1", "fc2", "fc*", "", "zz", "*", "é"]),
              st.one_of(st.sampled_from(["0", "0.1", "1", "1.5", "-0.1", "nan", "", "x"]), floats)),
    max_size=3,
).map(lambda ps: ",".join(f"{n}:{r}" for n, r in ps))


def value_for(key: str):
    generic = [st.sampled_from(NUMBERS), ints, floats, texts, lists, pairs]
    plausible = PLAUSIBLE.get(key) or PLAUSIBLE.get(_field(key))
    if plausible:  # twice: valid values should be common enough to reach the run
        return st.one_of(st.sampled_from(plausible), st.sampled_from(plausible), *generic)
    return st.one_of(*generic)


def _field(key: str):
    try:
        return field_of(key)
    except ConfigError:
        return None


keys = st.one_of(st.sampled_from(FIELDS), st.sampled_from(FIELDS), st.sampled_from(SPELLINGS),
                 st.sampled_from(UNKNOWN_KEYS), texts)


@st.composite
def assignment(draw):
    """One ``--set`` argument: ``key=value``, sometimes with spaces around or no '=' at all."""
    key = draw(keys)
    if draw(st.integers(0, 19)) == 0:
        a = draw(texts)  # anything, usually missing the '='
    else:
        a = f"{key}={draw(value_for(key.strip()))}"
    return a.partition("=")[0].strip(), a  # the key as the CLI reads it (a key can't contain '=')


flag_values = st.one_of(
    st.none(), st.none(),
    st.integers(-3, 1200).map(str),
    st.sampled_from(["0", "-1", "100", "150", "200", "18760", "50000", str(2**31), str(10**30), "abc", "1.5", "",
                     "5e4", " 3"]),
)


@st.composite
def run_argv(draw, out: str):
    """``ltjax run PRESET [--seeds N] [--rounds N] [--iterations N] [--set k=v]... --out OUT``."""
    preset = draw(st.one_of(st.sampled_from(PRESETS), st.sampled_from(PRESETS), st.sampled_from(PRESETS),
                            st.sampled_from(["nope", "", "LENET_MNIST_2018", "lenet"]), texts))
    argv, sets = ["run", preset], []
    for flag in ("--seeds", "--rounds", "--iterations"):
        v = draw(flag_values)
        if v is not None:
            argv += [f"{flag}={v}"] if draw(st.booleans()) else [flag, v]
    for key, a in draw(st.lists(assignment(), max_size=3)):
        sets.append(key)
        argv += [f"--set={a}"] if draw(st.booleans()) else ["--set", a]
    return argv + ["--out", out, "--no-progress"], preset, sets


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_arrays():
    try:
        return D.load_arrays("mnist")
    except D.DataUnavailableError as e:
        pytest.skip(f"MNIST not available: {e}")


@pytest.fixture
def no_training(monkeypatch, mnist_arrays):
    """``lottery.run`` does everything up to training; returns the configs that reached it."""
    executed = []
    monkeypatch.setattr(lottery, "_execute", lambda config, *a, **k: executed.append(config))
    monkeypatch.setattr(D, "load_arrays", lambda name, **kw: mnist_arrays)
    real_load = D.load  # ImageNet cannot be had here: its synthetic stand-in of the same shapes
    monkeypatch.setattr(D, "load", lambda name, **kw: real_load(
        D.SYNTHETIC_PREFIX + name if isinstance(name, str) and name in D.STREAMED else name, **kw))
    return executed


# -- the property -----------------------------------------------------------------------------

def _outcome(capsys, argv):
    """("run" | "error" | "usage", stdout, stderr); anything else fails the test."""
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse: bad int for a flag, missing preset, unknown command
        out, err = capsys.readouterr()
        assert e.code == 2, (argv, e.code, err)
        assert err.startswith("usage: ltjax") and "error: " in err, err
        return "usage", out, err
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if code == 0:
        return "run", out, err
    assert code == 2, (argv, code, out, err)
    assert err.startswith("ltjax: error: ") and err.count("ltjax: error: ") == 1, err
    return "error", out, err


def _check_error_names_problem(err: str, preset: str, sets: list[str]):
    if "unknown preset" in err or err.startswith(f"ltjax: error: preset {preset!r}"):  # a name, or file:NAME
        assert repr(preset) in err
    elif "unknown config key" in err:
        # a long key is quoted shortened in the middle, as every user input in an error is
        assert any(_show(k.partition("=")[0].strip()) in err for k in sets if _field(k) is None), (sets, err)
        assert "valid keys: " in err
    elif "unknown config section" in err:
        assert any(_show(k.partition(".")[0]) in err for k in sets if _field(k) is None), (sets, err)
        assert "sections: data, model, training, pruning, controls, study" in err
    elif "in section" in err:
        assert any(_show(k.partition(".")[2]) in err for k in sets if _field(k) is None), (sets, err)
        assert "its keys: " in err
    elif "--set expects key=value" in err:
        pass
    else:
        assert NAMES_A_FIELD.search(err), err


def _check_run(out_dir, executed, out):
    config = executed[-1]
    d = store.run_dir(config, out_dir)
    assert f"{d}: no completed rounds yet" in out
    saved = Config.from_dict(json.loads((d / "config.json").read_text()))  # what a resume reads back
    assert saved.hash() == config.hash() and saved.name == config.name
    assert d.parent == out_dir  # the name can't move the run directory elsewhere


@fuzz(500)
@given(data=st.data())
def test_cli_run_never_tracebacks(capsys, tmp_path, no_training, data):
    out_dir = tmp_path / "runs"
    argv, preset, sets = data.draw(run_argv(str(out_dir)))
    before = len(no_training)
    kind, out, err = _outcome(capsys, argv)
    event(kind)
    if kind == "run":
        assert len(no_training) == before + 1
        _check_run(out_dir, no_training, out)
    else:
        assert len(no_training) == before
    if kind == "error":
        _check_error_names_problem(err, preset, sets)


@fuzz(400)
@given(preset=st.sampled_from(PRESETS), key=st.sampled_from(FIELDS + SPELLINGS), data=st.data())
def test_one_bad_value_is_named(capsys, tmp_path, no_training, preset, key, data):
    """A single ``--set key=value`` on a preset either runs or is rejected naming that key."""
    value = data.draw(value_for(key))
    out_dir = tmp_path / "runs"
    kind, out, err = _outcome(capsys, ["run", preset, f"--set={key}={value}", "--out", str(out_dir), "--no-progress"])
    event(kind)
    assert kind != "usage"
    if kind == "run":
        _check_run(out_dir, no_training, out)
        return
    # xor has 4 training examples: the presets' batch size is what preflight rejects
    also = {"dataset": ["batch_size"]}.get(field_of(key), [])
    assert any(re.search(rf"\b{re.escape(k)}\b", err) for k in [key, field_of(key), *also]), (key, value, err)


other_argv = st.one_of(
    st.just([]), st.just(["run"]), st.just(["nope"]), st.just(["presets", "--fields"]), st.just(["presets", "-x"]),
    st.lists(texts, max_size=3), st.just(["bench", "--steps", "0"]), st.just(["bench", "--steps", "150"]),
    st.just(["bench", "--steps=-100"]), st.just(["run", "lenet_mnist_2018", "--seeds"]),
    st.tuples(st.just("show"), texts).map(list),
)


@fuzz(200)
@given(argv=other_argv)
def test_other_commands_never_traceback(capsys, tmp_path, no_training, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)  # `show` of a relative random path looks only there
    kind, out, err = _outcome(capsys, argv)
    if argv and argv[0] == "bench":
        assert kind == "usage" and "multiple of 100" in err
    if argv and argv[0] == "show" and kind == "error":
        assert "not an ltjax run directory" in err or "embedded null" in err


# -- Config.from_dict (what a resume reads from config.json) ----------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), texts),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=2)),
    max_leaves=6,
)


@fuzz(300)
@given(preset=st.sampled_from(PRESETS), changes=st.dictionaries(keys, json_values, max_size=3))
def test_from_dict_gives_config_or_config_error(preset, changes):
    d = {**presets.get(preset).to_dict(), **changes}
    try:
        c = Config.from_dict(d)
    except ConfigError as e:
        msg = str(e)
        named = ("unknown config key", "unknown config section", "in section", "both set the field")
        assert any(n in msg for n in named) or NAMES_A_FIELD.search(msg), msg
        return
    back = Config.from_dict(json.loads(json.dumps(c.to_dict())))
    assert Config.from_dict(c.nested()) == c  # the sectioned form reads back the same
    assert back == c and back.hash() == c.hash()


@fuzz(300)
@given(data=st.data())
def test_accepted_overrides_survive_config_json(data):
    sets = data.draw(st.lists(assignment(), max_size=4))
    try:
        c = presets.get(data.draw(st.sampled_from(PRESETS))).with_overrides([a for _, a in sets])
    except ConfigError:
        return
    back = Config.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c and back.hash() == c.hash()


# -- regressions: bugs the fuzzing or the audit around it found --------------------------------

def _error(capsys, *argv):
    kind, out, err = _outcome(capsys, [str(a) for a in argv])
    assert kind == "error", (out, err)
    return err


def test_out_that_is_a_file_is_a_clear_error(capsys, tmp_path, no_training):
    # was: NotADirectoryError traceback from mkdir
    (tmp_path / "f").write_text("x")
    err = _error(capsys, "run", "lenet_mnist_2018", "--out", tmp_path / "f")
    assert "Not a directory" in err and str(tmp_path / "f") in err
    assert not no_training


@pytest.mark.parametrize("name", ["../../escape", "a/b", "", "nul\x00byte", "\udcff", "x" * 300])
def test_bad_run_names_rejected(capsys, tmp_path, no_training, name):
    # was: '../x' put the run directory outside --out; 'x'*300 an OSError (file name too long)
    # traceback; NUL a bare "embedded null byte"
    err = _error(capsys, "run", "lenet_mnist_2018", "--set", f"name={name}", "--out", tmp_path / "runs")
    assert err.startswith("ltjax: error: name=") and "run directory" in err
    assert not (tmp_path / "runs").exists() and not any(tmp_path.parent.glob("escape-*"))


@pytest.mark.parametrize("args,expect", [
    (["--set", "seed=4294967296"], ["seed=4294967296", "32-bit"]),  # was: same keys as seed 0; 2**63: OverflowError
    (["--set", "seeds=3", "--set", "seed=4294967295"], ["seeds=3", "seed=4294967295"]),
    (["--rounds", "1001"], ["rounds=1001", "≤ 1000", "round_999"]),  # was: round_1000 never counted as done
    (["--rounds", str(10**30)], ["rounds=" + str(10**30)]),  # was: run hung building the to-do list
    (["--iterations", str(2**32)], ["iterations=4294967296", "2147483647"]),  # was: int32 overflow in training
    (["--set", "widths=300," + str(10**30)], ["widths=", "2147483647"]),
    (["--set", "iterations=1e309"], ["iterations='1e309'", "int"]),
    (["--set", "lr=nan"], ["lr='nan'", "finite"]),
    (["--set", "mode=oneshot", "--set", "densities=0.5,0.6"], ["densities=(0.5, 0.6)", "strictly decreasing"]),
    (["--set", "layer_rates=out:0.1,out:0.2"], ["layer_rates=", "once"]),  # was: the first silently ignored
    (["--set", "layer_rates=:0.1"], ["layer_rates=':0.1'", "layer:rate"]),
    (["--set", "lr_drops=100,100"], ["lr_drops=(100, 100)", "distinct"]),
    (["--set", "split_seed=-1"], ["split_seed=-1", "≥ 0"]),  # was: numpy's "expected non-negative integer"
    (["--set", "rewind_iteration=50000"], ["rewind_iteration=50000", "beyond training", "iterations=50000"]),
    (["--set", "prune_rat=0.1"], ["'prune_rat'", "did you mean 'prune_rate'", "valid keys"]),
    (["--set", "iterations=" + "9" * 5000], ["iterations=", "characters)", "not a valid int"]),
])
def test_regressions_rejected_before_anything_is_written(capsys, tmp_path, no_training, args, expect):
    err = _error(capsys, "run", "lenet_mnist_2018", *args, "--out", tmp_path / "runs")
    for fragment in expect:
        assert fragment in err, (fragment, err)
    assert len(err) < 1000  # long values are shortened in the message
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("steps", ["0", "-100", "150"])
def test_bench_steps_checked_before_timing(capsys, steps):
    # was: 0 → ZeroDivisionError; 150 → ValueError only after minutes of benchmarking
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", f"--steps={steps}"])
    assert e.value.code == 2 and "multiple of 100" in capsys.readouterr().err


@pytest.mark.parametrize("d,expect", [
    ({"name": 5}, "name=5"),  # was: accepted as "5"
    ({"lr": True}, "lr=True"),  # was: accepted as 1.0
    ({"iterations": True}, "iterations=True"),
    ({"layer_rates": [5]}, "layer_rates=[5]"),  # was: TypeError traceback (len of an int)
    ({"layer_rates": [[1, 0.1]]}, "layer_rates="),
    ({"exclude": [None]}, "exclude="),
    ({"lr": 10**400}, "lr="),  # was: OverflowError message without the field's rule
    ({"widths": 300}, "widths=300"),
])
def test_from_dict_wrong_types(d, expect):
    with pytest.raises(ConfigError, match=re.escape(expect)):
        Config.from_dict({**Config().to_dict(), **d})
    with pytest.raises(ConfigError, match="mapping"):
        Config.from_dict([["lr", 0.1]])


def test_python_values_normalized_so_resume_finds_the_run():
    # was: Config(lr=1) hashed "lr": 1 but config.json read back as 1.0: a different hash, so
    # resuming a run started from Python failed with "holds a run of a different configuration"
    import numpy as np

    c = Config(lr=1, widths=[300, np.int64(100)], layer_rates=[["out", 0]], densities=[])
    assert c.lr == 1.0 and type(c.lr) is float and c.widths == (300, 100) and type(c.widths[1]) is int
    assert c.layer_rates == (("out", 0.0),)
    back = Config.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c and back.hash() == c.hash() == Config(lr=1.0, layer_rates=(("out", 0.0),)).hash()
