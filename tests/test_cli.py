"""Tests for the ``ltjax`` command (in process, through ``ltjax.cli.main``) and for
``Config``'s parsing of ``--set`` values."""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path

import pytest

from ltjax import cli, presets
from ltjax.config import Config, ConfigError


def _main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _user_error(capsys, *argv):
    code, out, err = _main(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("ltjax: error: "), err
    assert "Traceback" not in err and "Traceback" not in out
    return err


@pytest.fixture
def no_training(monkeypatch):
    """Fail loudly if a command that should be rejected reaches the round loop."""
    from ltjax import lottery

    def boom(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(lottery, "run", boom)


# -- presets ----------------------------------------------------------------------------------

def test_presets_lists_all(capsys):
    code, out, err = _main(capsys, "presets")
    assert code == 0 and err == ""
    assert set(presets.PRESETS) >= {"lenet_mnist_2018", "lenet_mnist_iclr2019", "lenet_mnist_openlth",
                                    "lenet_mnist_lth_snip", "conv2_cifar10_lth_snip", "conv2_fashion_mnist_lth_snip"}
    for name in presets.PRESETS:
        assert name in out
    assert "fields" not in out


def test_presets_fields(capsys):
    code, out, _ = _main(capsys, "presets", "--fields")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and "default" in line}
    for name in ("pruning.prune_rate", "pruning.rewind_iteration", "pruning.layer_rates", "model.widths",
                 "training.iterations", "study.seeds", "pruning.strategy", "data.name", "controls.networks"):
        assert name in lines, name
    assert "fraction of surviving weights pruned per round" in lines["pruning.prune_rate"]
    assert "default 0.2" in lines["pruning.prune_rate"] and "(= dataset)" in lines["data.name"]
    # every field once, in one section
    shown = [line.split("(= ")[1].split(")")[0] if "(= " in line else key.split(".")[1] for key, line in lines.items()]
    assert sorted(shown) == sorted(f.name for f in fields(Config))
    assert "score=NAME sets scores=(NAME,)" in out


# -- user errors ------------------------------------------------------------------------------

def test_unknown_preset(capsys, tmp_path, no_training):
    err = _user_error(capsys, "run", "nope", "--out", tmp_path / "runs")
    assert "'nope'" in err and "did you mean" not in err
    for name in presets.PRESETS:
        assert name in err
    typo = _user_error(capsys, "run", "lenet_mnist_icrl2019", "--out", tmp_path / "runs")
    assert "'lenet_mnist_icrl2019' (did you mean 'lenet_mnist_iclr2019'?)" in typo


def test_unknown_key(capsys, tmp_path, no_training):
    err = _user_error(capsys, "run", "lenet_mnist_2018", "--set", "nosuchkey=1", "--out", tmp_path / "runs")
    assert "nosuchkey" in err and "valid keys" in err
    for key in ("prune_rate", "widths", "rewind_iteration", "optimizer"):
        assert key in err


BAD = [
    (["--set", "prune_rate=1.5"], ["prune_rate", "(0, 1)"]),
    (["--set", "prune_rate=abc"], ["prune_rate", "'abc'", "float"]),
    (["--set", "optimizer=rmsprop"], ["optimizer", "rmsprop", "sgd", "momentum", "adam"]),
    (["--set", "init=foo"], ["init", "foo", "trunc_normal", "glorot_normal", "kaiming_normal"]),
    (["--set", "strategy=x"], ["strategy", "reset", "rewind", "continue"]),
    (["--set", "rewind_iteration=60000"], ["rewind_iteration", "60000", "iterations=50000"]),
    (["--iterations", "150"], ["iterations", "150", "multiple of eval_every=100"]),
    (["--set", "widths="], ["widths", "at least one width for model='mlp'"]),
    (["--set", "widths=300,abc"], ["widths", "'abc'", "int"]),
    (["--set", "layer_rates=out"], ["layer_rates", "layer:rate", "'out'"]),
    (["--set", "layer_rates=out:2"], ["layer_rates", "[0, 1]"]),
    (["--seeds", "0"], ["seeds", "≥ 1"]),
    (["--rounds", "0"], ["rounds", "≥ 1"]),
    (["--set", "noequals"], ["key=value", "noequals"]),
    (["--set", "dataset=cifar"], ["dataset", "mnist", "fashion_mnist", "xor"]),
]


@pytest.mark.parametrize("args,expect", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_values_rejected_before_training(capsys, tmp_path, no_training, args, expect):
    out_dir = tmp_path / "runs"
    err = _user_error(capsys, "run", "lenet_mnist_2018", *args, "--out", out_dir)
    for fragment in expect:
        assert fragment in err, (fragment, err)
    assert not out_dir.exists()


def test_show_non_run_directory(capsys, tmp_path):
    err = _user_error(capsys, "show", tmp_path)
    assert str(tmp_path) in err and "not an ltjax run directory" in err
    err = _user_error(capsys, "show", tmp_path / "missing")
    assert "missing" in err


def _progress_passed(capsys, tmp_path, monkeypatch, *flags):
    from ltjax import lottery

    seen = {}

    def fake_run(config, out, **kw):
        seen.update(kw)
        raise ValueError("stopped by test")

    monkeypatch.setattr(lottery, "run", fake_run)
    _user_error(capsys, "run", "lenet_mnist_2018", *flags, "--out", tmp_path)
    return seen["progress"]


def test_progress_env_forces_bar(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LTJAX_PROGRESS", "1")
    assert _progress_passed(capsys, tmp_path, monkeypatch) == "bar"


def test_no_progress_flag_wins_over_env(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LTJAX_PROGRESS", "1")
    assert _progress_passed(capsys, tmp_path, monkeypatch, "--no-progress") is False


def test_missing_data_is_a_user_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LTJAX_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "manual").mkdir()
    (tmp_path / "tfds").mkdir()
    err = _user_error(capsys, "run", "lenet_mnist_2018", "--set", "dataset=fashion_mnist",
                      "--manual-dir", tmp_path / "manual", "--data-dir", tmp_path / "tfds",
                      "--out", tmp_path / "runs")
    assert "'fashion_mnist'" in err and str(tmp_path / "manual") in err
    assert "train-images-idx3-ubyte.gz" in err and "--manual-dir" in err
    assert not any((tmp_path / "runs").glob("*/round_*"))


# -- a tiny real run --------------------------------------------------------------------------

RUN = ["run", "lenet_mnist_iclr2019", "--seeds", "2", "--rounds", "2", "--iterations", "200",
       "--set", "eval_every=100", "--no-progress"]


def _table_rows(text):
    rows = {}
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:3] == ["round", "density", "%"])
    for line in lines[head + 1:]:
        cells = line.split()
        if cells and cells[0].isdigit():
            rows[int(cells[0])] = cells
    return lines[head], rows


@pytest.mark.skipif(not ((Path.home() / ".cache" / "ltjax" / "mnist.npz").exists()
                         or (Path.home() / "tensorflow_datasets" / "mnist").is_dir()
                         or (Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist").is_dir()),
                    reason="MNIST not available")
def test_tiny_run_show_and_resume(capsys, tmp_path):
    out_dir = tmp_path / "runs"
    code, out, err = _main(capsys, *RUN, "--out", out_dir)
    assert code == 0, err
    head, rows = _table_rows(out)
    assert "density %" in head and "final test acc %" in head
    assert sorted(rows) == [0, 1]
    assert float(rows[0][1]) == pytest.approx(100.0)
    assert 75.0 < float(rows[1][1]) < 85.0  # 20% of hidden, 10% of output pruned

    (run_dir,) = out_dir.iterdir()
    assert run_dir.name.startswith("lenet_mnist_iclr2019-")
    assert sorted(p.name for p in run_dir.glob("round_*")) == ["round_000", "round_001"]

    code, shown, err = _main(capsys, "show", run_dir)
    assert code == 0, err
    assert shown.strip() in out
    assert _table_rows(shown) == (head, rows)

    mtimes = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    t = time.perf_counter()
    code, again, err = _main(capsys, *RUN, "--out", out_dir)
    assert code == 0, err
    assert time.perf_counter() - t < 5
    assert "all 2 rounds already complete" in again
    assert _table_rows(again) == (head, rows)
    # Only the LOCK (taken and released by the rerun) may change.
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.name not in ("config.json", "LOCK")} == \
        {p: m for p, m in mtimes.items() if p.name not in ("config.json", "LOCK")}

    # more rounds: the same run directory (rounds is not hashed), resumed after round 1
    more = [a if a != "2" or RUN[i - 1] != "--rounds" else "3" for i, a in enumerate(RUN)]
    code, third, err = _main(capsys, *more, "--out", out_dir)
    assert code == 0, err
    assert [p.name for p in out_dir.iterdir()] == [run_dir.name]
    assert "resuming at round 2" in third
    head3, rows3 = _table_rows(third)
    assert sorted(rows3) == [0, 1, 2] and rows3[0] == rows[0] and rows3[1] == rows[1]
    assert 60.0 < float(rows3[2][1]) < 70.0
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items() if "round_00" in str(p))


# -- Config parsing ---------------------------------------------------------------------------

def test_with_overrides_parsing():
    c = Config().with_overrides(["widths=600,200", "layer_rates=out:0.1,fc*:0.3", "iterations=5e4"])
    assert c.widths == (600, 200)
    assert c.layer_rates == (("out", 0.1), ("fc*", 0.3))
    assert c.iterations == 50000 and type(c.iterations) is int
    assert Config().with_overrides(["lr_drops="]).lr_drops == ()
    with pytest.raises(ConfigError, match="iterations"):
        Config().with_overrides(["iterations=5.5"])


def test_hash_ignores_rounds_not_lr():
    c = presets.get("lenet_mnist_2018")
    assert c.replace(rounds=3).hash() == c.hash()
    assert c.with_overrides(["rounds=5"]).hash() == c.hash()
    assert c.replace(lr=0.1).hash() != c.hash()
    assert c.replace(seeds=2).hash() != c.hash()


def test_replace_validates_what_it_sets():
    c = presets.get("lenet_mnist_iclr2019")
    with pytest.raises(ConfigError, match=r"prune_rate=-0\.2 is not valid: must be a fraction in \(0, 1\)"):
        c.replace(prune_rate=-0.2)
    with pytest.raises(ConfigError, match="rewind_iteration=5000 is not valid"):
        c.replace(strategy="rewind", rewind_iteration=5000, iterations=1000, eval_every=500)
    with pytest.raises(ConfigError, match="'prune_rat' \\(did you mean 'prune_rate'\\?\\)"):
        c.replace(prune_rat=0.2)
    # fields that depend on each other change together in one call
    r = c.replace(strategy="rewind", rewind_iteration=500, iterations=1000, eval_every=500)
    assert (r.iterations, r.rewind_iteration) == (1000, 500) and c.iterations != 1000


# Run directories are named by these hashes: a change of the configuration's form (sections, one
# field for the scores) must not rename a run that already exists (recorded before the change).
PINNED_HASHES = {
    "conv2_cifar10_lth_snip": "1ef779310c4b", "conv2_fashion_mnist_early": "1321f8513fae",
    "conv2_fashion_mnist_lth_snip": "4116395d062f", "lenet_mnist_2018": "3962f8357d53",
    "lenet_mnist_early": "a9057ca427c2", "lenet_mnist_iclr2019": "29e5ea091432", "lenet_mnist_lth_snip": "d1348a125df2",
    "lenet_mnist_openlth": "494338a3fac9", "resnet18_tiny_imagenet_ltr": "b0d103f6b655",
    "resnet20_cifar10_early": "af2b04109447", "resnet20_cifar10_ltr": "b1ca11ca6740", "vgg16_cifar10_ltr": "aa1abb295082",
    "lenet_mnist_prune_at_init": "add6723d8415",  # = experiments/prune_at_init.py's SynFlow study on its results page
}


def test_run_directory_names_survive_the_config_redesign():
    assert {n: presets.get(n).hash() for n in PINNED_HASHES} == PINNED_HASHES
    assert presets.get("lenet_mnist_openlth").replace(scores=("magnitude", "l2")).hash() == "3e57aa229bf5"
    assert presets.get("lenet_mnist_iclr2019").replace(score="l1").hash() == "15878a4aa1cd"
    assert presets.get("lenet_mnist_iclr2019").replace(score="snip", mode="at_init").hash() == "a1ef4151b0e2"
    # a config.json written before score and scores were one field reads back as the same run
    old = {**presets.get("lenet_mnist_iclr2019").to_dict(), "score": "l1", "scores": []}
    assert Config.from_dict(old).scores == ("l1",) and Config.from_dict(old).hash() == "15878a4aa1cd"
    several = {**presets.get("lenet_mnist_openlth").to_dict(), "score": "magnitude", "scores": ["magnitude", "l2"]}
    assert Config.from_dict(several).hash() == "3e57aa229bf5"


def test_sections_are_other_spellings_of_the_same_fields():
    c = presets.get("lenet_mnist_iclr2019")
    a = c.with_overrides(["training.lr=0.3", "model.widths=64", "pruning.scores=l1,l2", "data.name=fashion_mnist",
                          "controls.networks=reinit:2", "study.seeds=3"])
    b = c.with_overrides(["lr=0.3", "widths=64", "scores=l1,l2", "dataset=fashion_mnist", "controls=reinit:2", "seeds=3"])
    assert a == b and a.hash() == b.hash() and a.section("training")["lr"] == 0.3
    assert c.replace(**{"training.lr": 0.3, "model.widths": (64,)}) == c.replace(lr=0.3, widths=(64,))
    nested = a.nested()
    assert list(nested) == ["data", "model", "training", "pruning", "controls", "study"]
    assert nested["data"]["name"] == "fashion_mnist" and nested["controls"]["networks"] == ("reinit:2",)
    assert Config.from_dict(json.loads(json.dumps(nested))) == a  # the sectioned form of config.json reads back
    assert c.with_overrides(["score=snip"]).scores == ("snip",) == Config(score="snip").scores
    with pytest.raises(ConfigError, match=r"unknown key 'lrr' in section 'training' \(did you mean 'lr'\?\)"):
        c.with_overrides(["training.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"unknown config section 'trainng'.*did you mean 'training'"):
        c.replace(**{"trainng.lr": 0.1})
    with pytest.raises(ConfigError, match=r"'training.lr' and 'lr' both set the field 'lr'"):
        Config.from_dict({"lr": 0.1, "training": {"lr": 0.2}})
    with pytest.raises(ConfigError, match=r"training.lr='x' is not a valid float"):
        c.with_overrides(["training.lr=x"])


def test_widths_are_required_by_what_the_models_factory_takes():
    from ltjax import models

    assert Config(model="resnet20", widths=(), dataset="cifar10").widths == ()  # fixed architecture: widths ()
    with pytest.raises(ConfigError, match="at least one width for model='mlp'"):
        Config(widths=()).validate()
    models.register("fixed_test_net", lambda widths=(), **kw: models.mlp((8,), **kw), replace=True)
    models.register("wide_test_net", lambda widths=(16,), **kw: models.mlp(widths, **kw), replace=True)
    try:
        assert Config(model="fixed_test_net", widths=()).validate().model == "fixed_test_net"
        with pytest.raises(ConfigError, match="at least one width for model='wide_test_net'"):
            Config(model="wide_test_net", widths=()).validate()
    finally:
        models.MODELS.pop("fixed_test_net"), models.MODELS.pop("wide_test_net")


def test_config_roundtrip_through_dict():
    for name in presets.PRESETS:
        c = presets.get(name)
        assert Config.from_dict(c.to_dict()) == c
        back = Config.from_dict(json.loads(json.dumps(c.to_dict())))  # as stored in config.json
        assert back == c and back.hash() == c.hash()
    with pytest.raises(ConfigError, match="valid keys"):
        Config.from_dict({"bogus": 1})


# -- the persistent compilation cache -----------------------------------------------------------

def test_run_keeps_compiled_programs_and_computes_the_same(tmp_path):
    """`ltjax run` stores its compiled programs in $LTJAX_CACHE_DIR/jax (unless
    LTJAX_COMPILE_CACHE=0) and a run that loads them computes bitwise what one that compiles does."""
    import os
    import subprocess
    import sys

    import numpy as np

    from ltjax.store import load_run

    argv = [sys.executable, "-m", "ltjax.cli", "run", "lenet_mnist_iclr2019", "--seeds", "1", "--rounds", "1",
            "--iterations", "100", "--set", "eval_every=50", "--set", "dataset=synthetic_mnist",
            "--set", "widths=32", "--set", "validation_size=100", "--no-progress"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}

    def run(tag, **env):
        r = subprocess.run([*argv, "--out", str(tmp_path / tag)], env={**base, **env}, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        (d,) = (tmp_path / tag).iterdir()
        return load_run(d), r

    cache = tmp_path / "cache"
    first, _ = run("first", LTJAX_CACHE_DIR=str(cache))
    entries = sorted(p.name for p in (cache / "jax").iterdir())
    assert len(entries) >= 5  # init, the training program, pruning, metrics, ...
    second, _ = run("second", LTJAX_CACHE_DIR=str(cache))
    assert sorted(p.name for p in (cache / "jax").iterdir()) == entries  # all loaded, none compiled anew
    off, _ = run("off", LTJAX_CACHE_DIR=str(tmp_path / "cache_off"), LTJAX_COMPILE_CACHE="0")
    assert not (tmp_path / "cache_off" / "jax").exists()
    for other in (second, off):
        for a, b in zip(first.rounds, other.rounds):
            for x, y in zip(jax_leaves(a.mask) + jax_leaves(a.params), jax_leaves(b.mask) + jax_leaves(b.params)):
                np.testing.assert_array_equal(x, y)


def test_compile_cache_switch_is_checked(monkeypatch, capsys, tmp_path):
    from ltjax import compile_cache

    monkeypatch.setenv("LTJAX_COMPILE_CACHE", "maybe")
    with pytest.raises(ValueError, match="LTJAX_COMPILE_CACHE='maybe' is not valid: use 1"):
        compile_cache.enable()
    monkeypatch.setenv("LTJAX_COMPILE_CACHE", "0")
    assert compile_cache.enable() is None


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_round_breakdown_accounts_for_compile_and_checkpoints():
    """bench.round_breakdown's parts come from JAX's compile events and the store's writers."""
    from ltjax import bench, data

    try:
        data.load_arrays("mnist")
    except data.DataUnavailableError as e:
        pytest.skip(f"MNIST not available: {e}")
    b = bench.round_breakdown("lenet_mnist_openlth", iterations=469)
    assert b["iterations"] == 469 and b["compile_s"] > 0 and b["checkpoint_s"] > 0 and b["data_s"] > 0
    parts = b["data_s"] + b["compile_s"] + b["checkpoint_s"] + b["training_s"] + b["evaluation_s"]
    assert abs(parts - b["total_s"]) < 0.5 * b["total_s"]  # the evaluation share is a difference of two runs
    assert b["compile_s"] < b["total_s"] and b["training_s"] > 0


def test_bench_suite_writes_json_and_a_table(tmp_path, capsys):
    """`ltjax bench --suite` at CI size: every ticket count measured, ratios consistent, files written."""
    assert cli.main(["bench", "--suite", "--tickets", "2", "--models", "lenet300_100", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "bench.json").read_text())
    rows = res["models"]["lenet300_100"]["rows"]
    assert [r["tickets"] for r in rows] == [1, 2]  # the one-ticket baseline is always measured
    assert rows[0]["speedup"] == 1.0 and all(r["steps_per_s"] > 0 for r in rows)
    assert abs(rows[1]["speedup"] - 2 * rows[1]["steps_per_s"] / rows[0]["steps_per_s"]) < 1e-9
    assert rows[1]["memory_bytes"] > rows[0]["memory_bytes"] > 0
    table = (tmp_path / "bench.md").read_text()
    assert "| 2 |" in table and "ticket-steps/s" in table and "lenet300_100, batch 60" in table
    assert cli.main(["bench", "--suite", "--models", "alexnet", "--out", str(tmp_path)]) == 2
    assert "unknown suite model 'alexnet'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bench", "--suite", "--budget", "-1"])
    assert "must be a positive number of seconds" in capsys.readouterr().err


def test_bench_suite_budget_skips_larger_ticket_counts_and_keeps_what_it_measured(tmp_path):
    """Once a model's budget is spent no larger T starts; the files written say which were skipped."""
    from ltjax import bench_suite

    res = bench_suite.suite(tickets=(2, 4), names=("lenet300_100",), budget_s=1e-9, out=tmp_path, torch=False,
                            log=lambda s: None)
    m = res["models"]["lenet300_100"]
    assert [r["tickets"] for r in m["rows"]] == [1] and m["skipped"] == [2, 4]
    assert json.loads((tmp_path / "bench.json").read_text())["models"]["lenet300_100"]["skipped"] == [2, 4]
    table = (tmp_path / "bench.md").read_text()
    assert "Not run (time budget spent): T = 2, 4." in table and "float32 precision:" in table


def test_bench_suite_pytorch_networks_are_ltjax_networks():
    """The PyTorch loop trains the same architecture: its parameters and BN running statistics
    have the sizes of ltjax's kernels, biases, BN scales and batch statistics (ResNet-20: 19
    convolutions without bias, 19 BN layers)."""
    pytest.importorskip("torch")
    import jax
    import numpy as np

    from ltjax import bench_suite

    for name, (factory, _, shape) in bench_suite.MODELS.items():
        params = jax.eval_shape(factory().init, jax.random.PRNGKey(0))
        ours = sorted(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
        net = bench_suite.torch_network(name, shape)
        stats = [b for n, b in net.named_buffers() if not n.endswith("num_batches_tracked")]
        theirs = sorted(p.numel() for p in [*net.parameters(), *stats])
        assert theirs == ours, name
