"""Tests for ltjax.data: XOR, the validation split, MNIST loading and caching, normalization,
the keyed index shuffle, and the errors raised when data cannot be found."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import data as D
from ltjax.data import order
from ltjax.data import tfds_source

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="no offline dataset folder")
MNIST_CACHED = (D.cache_dir() / "mnist.npz").exists() or (Path.home() / "tensorflow_datasets" / "mnist").is_dir()
needs_mnist = pytest.mark.skipif(not MNIST_CACHED, reason="MNIST is neither cached nor prepared")


# -- XOR --------------------------------------------------------------------------------------

def test_xor_points_and_labels_exact():
    x, y = D.xor()
    assert x.dtype == np.float32 and x.shape == (4, 2)
    assert y.dtype == np.int32 and y.shape == (4,)
    np.testing.assert_array_equal(x, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(y, [0, 1, 1, 0])


def test_load_xor_has_no_validation_and_tests_on_train():
    ds = D.load("xor")
    assert ds.num_classes == 2
    assert ds.x_val.shape == (0, 2) and ds.y_val.shape == (0,)
    np.testing.assert_array_equal(ds.x_test, ds.x_train)
    np.testing.assert_array_equal(ds.y_test, [0, 1, 1, 0])


# -- validation split -------------------------------------------------------------------------

def _ids(n=100):
    x = np.arange(n, dtype=np.int64) * 3 + 7  # unique ids
    return x, (x % 11).astype(np.int32)


@pytest.mark.parametrize("size", [0, 1, 10, 99])
def test_split_sizes_disjoint_and_complete(size):
    x, y = _ids()
    x_tr, y_tr, x_val, y_val = D.split_validation(x, y, size, seed=0)
    assert len(x_val) == len(y_val) == size
    assert len(x_tr) == len(y_tr) == 100 - size
    assert not set(x_tr) & set(x_val)
    assert sorted([*x_tr, *x_val]) == sorted(x)
    # labels travel with their examples, and both parts keep the original order
    np.testing.assert_array_equal(y_tr, x_tr % 11)
    np.testing.assert_array_equal(y_val, x_val % 11)
    assert np.all(np.diff(x_tr) > 0) and np.all(np.diff(x_val) > 0)


def test_split_is_seeded():
    x, y = _ids()
    a = D.split_validation(x, y, 20, seed=3)
    b = D.split_validation(x, y, 20, seed=3)
    c = D.split_validation(x, y, 20, seed=4)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert set(a[2]) != set(c[2])


@pytest.mark.parametrize("size", [-1, 100, 1000])
def test_split_size_out_of_range(size):
    x, y = _ids()
    with pytest.raises(ValueError) as e:
        D.split_validation(x, y, size, seed=0)
    msg = str(e.value)
    assert "validation_size" in msg and "[0, 99]" in msg and str(size) in msg


def _pixel_stats(*xs):
    """Mean and std of x/255 over all pixels of uint8 arrays, via a histogram (no float copy)."""
    counts = sum(np.bincount(x.ravel(), minlength=256) for x in xs).astype(np.float64)
    v = np.arange(256) / 255
    mean = (counts * v).sum() / counts.sum()
    return mean, np.sqrt((counts * v**2).sum() / counts.sum() - mean**2)


# -- MNIST --------------------------------------------------------------------------------------

@needs_mnist
def test_load_mnist_shapes_dtypes_and_constants():
    ds = D.load("mnist", validation_size=5000, split_seed=0)
    assert ds.name == "mnist" and ds.num_classes == 10
    assert ds.x_train.shape == (55000, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_val.shape == (5000, 28, 28, 1) and ds.x_val.dtype == np.uint8
    assert ds.x_test.shape == (10000, 28, 28, 1) and ds.x_test.dtype == np.uint8
    for y, n in ((ds.y_train, 55000), (ds.y_val, 5000), (ds.y_test, 10000)):
        assert y.shape == (n,) and y.dtype == np.int32
        assert y.min() == 0 and y.max() == 9
    assert ds.mean == (0.1307,) and ds.std == (0.3081,)
    # the constants are MNIST's actual pixel statistics
    m, s = _pixel_stats(ds.x_train, ds.x_val)
    assert abs(m - 0.1307) < 1e-3 and abs(s - 0.3081) < 1e-3
    # the split is the seeded one of split_validation
    raw = D.load_arrays("mnist")
    _, _, _, y_val = D.split_validation(raw["x_train"], raw["y_train"], 5000, 0)
    np.testing.assert_array_equal(ds.y_val, y_val)


@needs_mnist
def test_second_mnist_load_comes_from_cache_fast():
    D.load_arrays("mnist")  # make sure the cache exists
    assert (D.cache_dir() / "mnist.npz").exists()
    t = time.perf_counter()
    a = D.load_arrays("mnist")
    assert time.perf_counter() - t < 1.0
    assert set(a) == {"x_train", "y_train", "x_test", "y_test"}
    assert a["x_train"].shape == (60000, 28, 28, 1)


@needs_mnist
def test_cached_load_does_not_import_tensorflow():
    D.load_arrays("mnist")
    code = ("import sys; from ltjax.data import load_arrays; load_arrays('mnist'); "
            "print(sorted(m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "LTJAX_CACHE_DIR": str(D.cache_dir())})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- normalize --------------------------------------------------------------------------------

def test_normalize_uint8_endpoints():
    mean, std = (0.1307,), (0.3081,)
    x = jnp.array([[[[0]], [[255]]]], jnp.uint8)  # (1, 2, 1, 1)
    out = D.normalize(x, mean, std)
    assert out.dtype == jnp.float32 and out.shape == x.shape
    np.testing.assert_allclose(np.asarray(out).ravel(), [(0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081],
                               rtol=1e-5)


def test_normalize_per_channel():
    x = jnp.array([[[[0, 255, 51]]]], jnp.uint8)  # (1, 1, 1, 3)
    out = np.asarray(D.normalize(x, (0.5, 0.25, 0.2), (0.5, 0.25, 0.1)))
    np.testing.assert_allclose(out.ravel(), [-1.0, 3.0, 0.0], atol=1e-5)


def test_normalize_float_passes_through():
    x = jnp.array([[0.25, -3.0], [1.0, 255.0]], jnp.float32)
    out = D.normalize(x, (0.1307,), (0.3081,))
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x))


# -- index shuffle ----------------------------------------------------------------------------

SIZES = [1, 2, 3, 5, 64, 1000, 4097, 55000]


def _perm(key, n):
    return np.asarray(order.index_shuffle(key, n, jnp.arange(n, dtype=jnp.int32)))


@pytest.mark.parametrize("n", SIZES)
def test_index_shuffle_is_bijection(n):
    for seed in (0, 1):
        p = _perm(jax.random.PRNGKey(seed), n)
        assert p.dtype == np.int32 and p.shape == (n,)
        np.testing.assert_array_equal(np.sort(p), np.arange(n))


@pytest.mark.parametrize("n", [64, 1000, 4097, 55000])
def test_index_shuffle_depends_on_key_and_is_deterministic(n):
    a = _perm(jax.random.PRNGKey(0), n)
    b = _perm(jax.random.PRNGKey(1), n)
    np.testing.assert_array_equal(a, _perm(jax.random.PRNGKey(0), n))
    assert not np.array_equal(a, b)
    assert not np.array_equal(a, np.arange(n))  # it actually shuffles
    # a shuffle, not a shift: few fixed points
    assert np.mean(a == np.arange(n)) < 0.2


def test_index_shuffle_partial_positions_agree_with_full():
    key, n = jax.random.PRNGKey(5), 1000
    full = _perm(key, n)
    pos = jnp.array([0, 17, 999, 500], jnp.int32)
    np.testing.assert_array_equal(np.asarray(order.index_shuffle(key, n, pos)), full[np.asarray(pos)])


def test_index_shuffle_under_jit_and_vmap():
    n = 1000
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    f = lambda k: order.index_shuffle(k, n, jnp.arange(n, dtype=jnp.int32))  # noqa: E731
    jitted = np.asarray(jax.jit(f)(keys[0]))
    np.testing.assert_array_equal(jitted, _perm(keys[0], n))
    batched = np.asarray(jax.jit(jax.vmap(f))(keys))
    assert batched.shape == (4, n)
    for i in range(4):
        np.testing.assert_array_equal(batched[i], _perm(keys[i], n))
        np.testing.assert_array_equal(np.sort(batched[i]), np.arange(n))
    assert len({row.tobytes() for row in batched}) == 4


def _epoch(key, n, b, e):
    spe = n // b
    f = jax.jit(lambda s: order.batch_indices(key, n, b, s))
    return [np.asarray(f(jnp.int32(e * spe + t))) for t in range(spe)]


def test_batch_indices_cover_epoch_once_and_reshuffle():
    key = jax.random.PRNGKey(3)
    e0 = _epoch(key, 1000, 100, 0)
    e1 = _epoch(key, 1000, 100, 1)
    assert len(e0) == 10 and all(b.shape == (100,) for b in e0)
    for e in (e0, e1):
        np.testing.assert_array_equal(np.sort(np.concatenate(e)), np.arange(1000))
    assert not np.array_equal(np.concatenate(e0), np.concatenate(e1))
    # a pure function of (key, step)
    np.testing.assert_array_equal(np.asarray(order.batch_indices(key, 1000, 100, jnp.int32(7))), e0[7])


def test_batch_indices_drop_remainder():
    batches = _epoch(jax.random.PRNGKey(0), 1030, 100, 0)
    assert len(batches) == 10
    idx = np.concatenate(batches)
    assert len(np.unique(idx)) == 1000
    assert idx.min() >= 0 and idx.max() < 1030


# -- missing data -----------------------------------------------------------------------------

@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A fresh cache dir and a fresh TFDS data_dir (never ~/tensorflow_datasets)."""
    monkeypatch.setenv("LTJAX_CACHE_DIR", str(tmp_path / "cache"))
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    return data_dir


def test_manual_dir_lacking_files(isolated, tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "train-images-idx3-ubyte.gz").write_bytes(b"")  # one of four present
    with pytest.raises(D.DataUnavailableError) as e:
        D.load_arrays("mnist", data_dir=str(isolated), manual_dir=str(manual))
    msg = str(e.value)
    assert "'mnist'" in msg
    assert str(manual) in msg
    lacks = msg.split("lacks", 1)[1].split("(looked", 1)[0]
    for f in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert f in lacks
    assert "train-images-idx3-ubyte.gz" not in lacks
    assert "--manual-dir" in msg and "LTJAX_MANUAL_DIR" in msg
    assert not (tmp_path / "cache" / "mnist.npz").exists()


def test_no_manual_dir_offline_fails_fast(isolated, monkeypatch):
    monkeypatch.delenv("LTJAX_MANUAL_DIR", raising=False)
    host = D.DATASETS["mnist"].host
    if tfds_source._reachable(host, timeout=2.0):  # never download in tests
        monkeypatch.setattr(tfds_source, "_reachable", lambda h, timeout=5.0: False)
    import tensorflow_datasets  # noqa: F401  (import time is not what is measured)

    t = time.perf_counter()
    with pytest.raises(D.DataUnavailableError) as e:
        D.load_arrays("mnist", data_dir=str(isolated))
    assert time.perf_counter() - t < 10
    msg = str(e.value)
    assert "'mnist'" in msg and host in msg
    assert "--manual-dir" in msg and "LTJAX_MANUAL_DIR" in msg
    assert not any(isolated.glob("mnist/*/*.tfrecord*"))


def _fake_source(monkeypatch):
    calls = []

    def fake(name, data_dir, manual_dir):
        calls.append(name)
        return {"x_train": np.full((3, 2, 2, 1), 7, np.uint8), "y_train": np.arange(3, dtype=np.int32),
                "x_test": np.zeros((1, 2, 2, 1), np.uint8), "y_test": np.zeros(1, np.int32)}

    monkeypatch.setattr(tfds_source, "_tfds_arrays", fake)
    return calls


def test_cache_written_then_reused(isolated, tmp_path, monkeypatch):
    calls = _fake_source(monkeypatch)
    a = D.load_arrays("mnist")
    b = D.load_arrays("mnist")
    assert calls == ["mnist"]  # the second load came from the cache
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert a[k].dtype == b[k].dtype
    # no temp files left (the preparation lock file stays, empty)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".mnist.lock", "mnist.npz"]


def test_cached_load_names_the_inputs_it_does_not_read(isolated, tmp_path, monkeypatch, capsys):
    _fake_source(monkeypatch)
    D.load_arrays("mnist")
    assert "note" not in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    D.load_arrays("mnist", manual_dir=str(tmp_path / "empty"), data_dir=str(isolated))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ltjax: note: 'mnist' comes from the decoded cache ")
    assert f"manual_dir {tmp_path / 'empty'} and data_dir {isolated} are not read" in err
    assert "LTJAX_CACHE_DIR" in err
    D.load_arrays("mnist", data_dir=str(isolated))
    assert f"data_dir {isolated} is not read" in capsys.readouterr().err


def test_a_manual_dir_that_is_not_a_folder_is_an_error(isolated, tmp_path, monkeypatch):
    _fake_source(monkeypatch)
    D.load_arrays("mnist")  # cached: still, the folder the user named must exist
    for bad in (tmp_path / "missing", tmp_path / "cache" / "mnist.npz"):
        with pytest.raises(D.DataUnavailableError, match=f"manual directory {re.escape(str(bad))} is not a "
                                                          f"directory.*train-images-idx3-ubyte.gz"):
            D.load_arrays("mnist", manual_dir=str(bad))


def test_concurrent_loaders_prepare_once(isolated, tmp_path, monkeypatch):
    """Loaders starting together (two experiments, parallel test workers) prepare the dataset
    once: the others wait on the lock and read the cache the first one wrote."""
    import threading
    import time

    calls = []

    def slow(name, data_dir, manual_dir):
        calls.append(name)
        time.sleep(0.5)
        return {"x_train": np.ones((2, 2, 2, 1), np.uint8), "y_train": np.arange(2, dtype=np.int32),
                "x_test": np.zeros((1, 2, 2, 1), np.uint8), "y_test": np.zeros(1, np.int32)}

    monkeypatch.setattr(tfds_source, "_tfds_arrays", slow)
    out = [None] * 3
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, D.load_arrays("mnist"))) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["mnist"]
    for o in out:
        np.testing.assert_array_equal(o["x_train"], out[0]["x_train"])


@pytest.mark.parametrize("content", [
    b"not a zip file",
    b"",
    "truncated",
], ids=["garbage", "empty", "truncated"])
def test_unreadable_cache_is_rebuilt(isolated, tmp_path, monkeypatch, content):
    calls = _fake_source(monkeypatch)
    path = tmp_path / "cache" / "mnist.npz"
    path.parent.mkdir()
    if content == "truncated":
        np.savez(path, x_train=np.zeros((500, 28, 28, 1), np.uint8), y_train=np.zeros(500, np.int32),
                 x_test=np.zeros((5, 28, 28, 1), np.uint8), y_test=np.zeros(5, np.int32))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    a = D.load_arrays("mnist")
    assert calls == ["mnist"]
    assert a["x_train"].shape == (3, 2, 2, 1)
    with np.load(path) as z:  # the cache was rewritten
        np.testing.assert_array_equal(z["y_train"], [0, 1, 2])


def test_cache_from_before_the_content_check_is_rebuilt(isolated, tmp_path, monkeypatch):
    """A readable cache without the format marker (written before the check; some held MNIST
    as Fashion-MNIST) is rebuilt from the source, not trusted."""
    calls = _fake_source(monkeypatch)
    path = tmp_path / "cache" / "mnist.npz"
    path.parent.mkdir()
    np.savez(path, x_train=np.zeros((5, 28, 28, 1), np.uint8), y_train=np.zeros(5, np.int32),
             x_test=np.zeros((1, 28, 28, 1), np.uint8), y_test=np.zeros(1, np.int32))
    a = D.load_arrays("mnist")
    assert calls == ["mnist"] and a["x_train"].shape == (3, 2, 2, 1)
    D.load_arrays("mnist")
    assert calls == ["mnist"]  # the rebuilt cache carries the marker and is reused


def test_content_problem_by_hand():
    # every pixel 33: mean 33/255 = 0.1294, within 0.01 of MNIST's 0.1307, far from Fashion-MNIST's
    ok = {"x_train": np.full((4, 28, 28, 1), 33, np.uint8), "y_train": np.array([0, 1, 9, 3], np.int32)}
    assert tfds_source.content_problem("mnist", ok) is None
    assert "mean pixel is 0.1294, expected 0.2860" in tfds_source.content_problem("fashion_mnist", ok)
    dark = {**ok, "x_train": np.full((4, 28, 28, 1), 30, np.uint8)}  # 0.1176: 0.013 below MNIST's
    assert "mean pixel is 0.1176, expected 0.1307" in tfds_source.content_problem("mnist", dark)
    assert "labels span 0..10, expected 0..9" in tfds_source.content_problem(
        "mnist", {**ok, "y_train": np.array([0, 10], np.int32)})
    assert "shape (32, 32, 3), expected (28, 28, 1)" in tfds_source.content_problem(
        "mnist", {**ok, "x_train": np.zeros((2, 32, 32, 3), np.uint8)})


def test_unknown_dataset_lists_valid():
    for call in (lambda: D.load_arrays("cifar100"), lambda: D.load("cifar100")):
        with pytest.raises(ValueError) as e:
            call()
        msg = str(e.value)
        assert "cifar100" in msg
        for name in ("mnist", "fashion_mnist", "xor"):
            assert name in msg


@needs_shared
def test_resolve_manual_dir(monkeypatch):
    assert D.resolve_manual_dir("mnist", str(SHARED)) == SHARED / "mnist"
    assert D.resolve_manual_dir("fashion_mnist", str(SHARED)) == SHARED / "fashion_mnist"
    # a folder that holds the files itself is used as is
    assert D.resolve_manual_dir("mnist", str(SHARED / "mnist")) == SHARED / "mnist"
    monkeypatch.setenv("LTJAX_MANUAL_DIR", str(SHARED))
    assert D.resolve_manual_dir("mnist", None) == SHARED / "mnist"
    # the argument wins over the environment
    assert D.resolve_manual_dir("mnist", "/elsewhere") == Path("/elsewhere")
    monkeypatch.delenv("LTJAX_MANUAL_DIR")
    assert D.resolve_manual_dir("mnist", None) is None


# -- Fashion-MNIST ----------------------------------------------------------------------------

@needs_shared
def test_mnist_then_fashion_mnist_in_one_tfds_data_dir(isolated):
    """Regression: TFDS extracts manual files under their own names, which MNIST and
    Fashion-MNIST share; preparing both in one data_dir gave Fashion-MNIST MNIST's images.

    The preparation runs in a fresh process, as a first `ltjax run` does, and prints none of
    TensorFlow's start-up noise (it logs when it is loaded, so only a fresh process shows it)."""
    home_tfds = Path.home() / "tensorflow_datasets"
    before = sorted(p.name for p in home_tfds.iterdir()) if home_tfds.is_dir() else []
    code = ("from ltjax import data as D; import sys\n"
            "for name in ('mnist', 'fashion_mnist'):\n"
            "    print(name, D.load_arrays(name, data_dir=sys.argv[1], manual_dir=sys.argv[2])['x_train'].shape)")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # LTJAX_CACHE_DIR: isolated's
    r = subprocess.run([sys.executable, "-c", code, str(isolated), str(SHARED)], env=env, capture_output=True,
                       text=True, timeout=500)
    assert r.returncode == 0, r.stderr
    shapes = [line for line in r.stdout.splitlines() if line.endswith("(60000, 28, 28, 1)")]
    assert shapes == ["mnist (60000, 28, 28, 1)", "fashion_mnist (60000, 28, 28, 1)"], r.stdout
    for noise in ("cuInit", "cuda drivers", "oneDNN", "E0000", "W0000", "I0000"):
        assert noise not in r.stderr, r.stderr
    mnist, fashion = D.load_arrays("mnist"), D.load_arrays("fashion_mnist")  # from the cache it wrote
    after = sorted(p.name for p in home_tfds.iterdir()) if home_tfds.is_dir() else []
    assert before == after  # nothing written to TFDS's default data_dir (it may hold a copy from before)
    assert any(isolated.glob("fashion_mnist/*")) and (isolated.parent / "cache" / "fashion_mnist.npz").exists()
    # Fashion-MNIST through D.load: shapes, dtypes, the split and its constants
    ds = D.load("fashion_mnist", validation_size=5000, split_seed=0)
    assert ds.x_train.shape == (55000, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_val.shape == (5000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.y_train.dtype == np.int32 and set(np.unique(ds.y_test)) == set(range(10))
    assert ds.mean == (0.2860,) and ds.std == (0.3530,) and ds.num_classes == 10
    m, sd = _pixel_stats(ds.x_train, ds.x_val)
    assert abs(m - 0.2860) < 1e-3 and abs(sd - 0.3530) < 1e-3
    assert not np.array_equal(ds.x_test[:100], mnist["x_test"][:100])
    assert abs(_pixel_stats(mnist["x_train"])[0] - 0.1307) < 1e-3
    assert abs(_pixel_stats(fashion["x_train"])[0] - 0.2860) < 1e-3
    assert not np.array_equal(fashion["y_train"], mnist["y_train"])
    for name, arrays in (("mnist", mnist), ("fashion_mnist", fashion)):
        assert tfds_source.content_problem(name, arrays) is None
    assert "expected 0.2860" in tfds_source.content_problem("fashion_mnist", mnist)


def test_preparing_without_tensorflow_says_what_to_install(isolated, monkeypatch):
    """TensorFlow is an extra: a dataset not yet decoded names the extra to install."""
    import builtins

    real = builtins.__import__

    def no_tf(name, *a, **k):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("No module named 'tensorflow'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tf)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    with pytest.raises(D.DataUnavailableError, match=r"needs TensorFlow.*pip install 'ltjax\[tfds\]'"):
        D.load_arrays("mnist", data_dir=str(isolated))
