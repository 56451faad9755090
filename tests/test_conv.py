"""Conv-2 / Conv-4 / Conv-6 (Frankle & Carbin, ICLR 2019, Figure 2) and the CIFAR-10 entry.

Parameter counts are worked out by hand below and must match exactly; the rest checks
layer names, shapes, prunability, vmapping, the Glorot fans of conv kernels, a short masked
training run, and that CIFAR-10 fails fast and clearly on an offline machine.
"""

from __future__ import annotations

import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import data as D
from ltjax import masks as M
from ltjax import models
from ltjax.data import tfds_source
from ltjax.models import initializers
from ltjax.train import DeviceData, TrainSpec, make_trainer

KEY = jax.random.PRNGKey(0)


def _kernel_counts(params) -> dict[str, int]:
    """Weights (kernel entries only) per layer, in tree order."""
    mask = M.make_mask(params, models.kernels_are_prunable)
    return {name: int(np.prod(m.shape)) for name, m in M.leaves_with_names(mask)}


def _shapes(model):
    """Parameter shapes without materializing (or initializing) any weights."""
    return jax.eval_shape(model.init, KEY)


# -- parameter counts, by hand ------------------------------------------------------------------
# A 3×3 conv from c_in to c_out channels has 3·3·c_in·c_out kernel weights. Every module of two
# convs ends in a 2×2 max pool of stride 2, which halves the side: 32 → 16 → 8 → 4.
# FC layers: fc1 (flattened conv output → 256), fc2 (256 → 256), out (256 → 10).

CONV2_CIFAR = {
    "conv1": 3 * 3 * 3 * 64,            # 1,728
    "conv2": 3 * 3 * 64 * 64,           # 36,864
    "fc1": (16 * 16 * 64) * 256,        # 16,384 · 256 = 4,194,304
    "fc2": 256 * 256,                   # 65,536
    "out": 256 * 10,                    # 2,560
}
CONV4_CIFAR = {
    "conv1": 3 * 3 * 3 * 64,            # 1,728
    "conv2": 3 * 3 * 64 * 64,           # 36,864
    "conv3": 3 * 3 * 64 * 128,          # 73,728
    "conv4": 3 * 3 * 128 * 128,         # 147,456
    "fc1": (8 * 8 * 128) * 256,         # 8,192 · 256 = 2,097,152
    "fc2": 256 * 256,                   # 65,536
    "out": 256 * 10,                    # 2,560
}
CONV6_CIFAR = {
    "conv1": 3 * 3 * 3 * 64,            # 1,728
    "conv2": 3 * 3 * 64 * 64,           # 36,864
    "conv3": 3 * 3 * 64 * 128,          # 73,728
    "conv4": 3 * 3 * 128 * 128,         # 147,456
    "conv5": 3 * 3 * 128 * 256,         # 294,912
    "conv6": 3 * 3 * 256 * 256,         # 589,824
    "fc1": (4 * 4 * 256) * 256,         # 4,096 · 256 = 1,048,576
    "fc2": 256 * 256,                   # 65,536
    "out": 256 * 10,                    # 2,560
}
# (conv weights, FC weights incl. out, total):
#   Conv-2: 38,592    + 4,262,400 = 4,300,992  (paper: 38K conv, 4.3M total)
#   Conv-4: 259,776   + 2,165,248 = 2,425,024  (paper: 260K conv, 2.4M total)
#   Conv-6: 1,144,512 + 1,116,672 = 2,261,184  (paper: 1.1M conv; its "1.7M" total does not
#           follow from its own layer sizes, 4·4·256·256 alone being 1,048,576)
EXPECTED = {
    "conv2": (CONV2_CIFAR, 38_592, 4_262_400, 4_300_992),
    "conv4": (CONV4_CIFAR, 259_776, 2_165_248, 2_425_024),
    "conv6": (CONV6_CIFAR, 1_144_512, 1_116_672, 2_261_184),
}


@pytest.mark.parametrize("name", ["conv2", "conv4", "conv6"])
def test_parameter_counts_cifar10(name):
    per_layer, conv, fc, total = EXPECTED[name]
    model = models.build(name)  # defaults: 32×32×3 input, FC (256, 256), 10 outputs
    counts = _kernel_counts(_shapes(model))
    assert counts == per_layer
    assert sum(v for k, v in counts.items() if k.startswith("conv")) == conv
    assert sum(v for k, v in counts.items() if not k.startswith("conv")) == fc
    assert sum(counts.values()) == conv + fc == total
    # layer order: conv1 … convN, fc1, fc2, out
    assert list(counts) == list(per_layer)


def test_conv2_is_the_reports_network():
    # "LTH vs SNIP" report, Table 1: Conv-2 has ~4.3M weights, ~38K of them convolutional.
    counts = _kernel_counts(_shapes(models.build("conv2")))
    assert counts["conv1"] + counts["conv2"] == 38_592
    assert round(sum(counts.values()) / 1e6, 1) == 4.3


def test_layer_names_and_biases():
    params = _shapes(models.build("conv4"))
    assert list(params) == ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2", "out"]
    for layer in params.values():
        assert set(layer) == {"kernel", "bias"}
    assert params["conv3"]["kernel"].shape == (3, 3, 64, 128)
    assert params["conv3"]["bias"].shape == (128,)
    assert params["fc1"]["kernel"].shape == (8 * 8 * 128, 256)


def test_conv2_on_fashion_mnist_shape():
    model = models.build("conv2", input_shape=(28, 28, 1))
    counts = _kernel_counts(_shapes(model))
    assert counts == {
        "conv1": 3 * 3 * 1 * 64,        # 576
        "conv2": 3 * 3 * 64 * 64,       # 36,864
        "fc1": (14 * 14 * 64) * 256,    # 12,544 · 256 = 3,211,264
        "fc2": 256 * 256,
        "out": 256 * 10,
    }
    logits = jax.eval_shape(model.apply, _shapes(model), jax.ShapeDtypeStruct((5, 28, 28, 1), jnp.float32))
    assert logits.shape == (5, 10)


def test_factories_match_mlp_signature():
    m = models.build("conv2", widths=(32,), input_shape=(8, 8, 3), num_outputs=4,
                     init="kaiming_normal", init_std=0.1)
    assert m.input_shape == (8, 8, 3) and m.num_outputs == 4
    assert list(_shapes(m)) == ["conv1", "conv2", "fc1", "out"]
    assert sorted(models.MODELS) == ["conv2", "conv4", "conv6", "mlp", "resnet18", "resnet20", "resnet50", "resnet56",
                                     "vgg16"]
    with pytest.raises(ValueError, match="conv2, conv4, conv6, mlp, resnet18"):
        models.build("conv8")
    import inspect

    for name, f in models.MODELS.items():  # every factory takes what build_model passes
        assert {"widths", "input_shape", "num_outputs", "init", "init_std"} <= set(inspect.signature(f).parameters), name
        assert f.__name__ == name and f.__doc__


# -- forward pass, masks, vmap, init ------------------------------------------------------------

SMALL = models.build("conv2", widths=(16,), input_shape=(8, 8, 3))
SMALL_INIT = jax.jit(SMALL.init)  # compiled once for all tests below


@pytest.mark.parametrize("name", ["conv2", "conv4", "conv6"])
def test_output_shape(name):
    model = models.build(name)
    x = jax.ShapeDtypeStruct((3, 32, 32, 3), jnp.float32)
    out = jax.eval_shape(model.apply, _shapes(model), x)
    assert out.shape == (3, 10) and out.dtype == jnp.float32


def test_biases_start_at_zero():
    params = SMALL_INIT(KEY)
    for layer in params.values():
        assert not np.any(np.asarray(layer["bias"]))


def test_only_kernels_prunable():
    params = SMALL_INIT(KEY)
    mask = M.make_mask(params, SMALL.is_prunable)
    for name, layer in mask.items():
        assert layer["bias"] is None, name
        assert layer["kernel"].shape == params[name]["kernel"].shape
        assert layer["kernel"].dtype == jnp.bool_ and bool(jnp.all(layer["kernel"]))
    assert M.layer_names(mask) == ["conv1", "conv2", "fc1", "out"]


def test_init_deterministic_per_key():
    a, b, c = SMALL_INIT(KEY), SMALL_INIT(KEY), SMALL_INIT(jax.random.PRNGKey(1))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a["conv1"]["kernel"], c["conv1"]["kernel"])


def test_vmap_over_two_parameter_sets():
    sets = [SMALL_INIT(k) for k in jax.random.split(KEY, 2)]
    params = jax.tree.map(lambda *a: jnp.stack(a), *sets)  # a stack of 2 parameter sets
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 8, 8, 3))
    out = jax.jit(jax.vmap(SMALL.apply, in_axes=(0, None)))(params, x)
    assert out.shape == (2, 4, 10)
    apply = jax.jit(SMALL.apply)
    for i in range(2):
        np.testing.assert_allclose(out[i], apply(sets[i], x), rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[0], out[1])


def _reference_forward(params, x, modules):
    """The architecture written out with lax: per module (3×3 SAME conv → ReLU) × 2, 2×2 max
    pool of stride 2; flatten; ReLU FC layers; linear output."""
    n = 0
    for _ in range(modules):
        for _ in range(2):
            n += 1
            k, b = params[f"conv{n}"]["kernel"], params[f"conv{n}"]["bias"]
            x = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            x = jax.nn.relu(x + b)
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    x = x.reshape(x.shape[0], -1)
    fcs = sorted((k for k in params if k.startswith("fc")), key=lambda k: int(k[2:]))
    for name in fcs:
        x = jax.nn.relu(x @ params[name]["kernel"] + params[name]["bias"])
    return x @ params["out"]["kernel"] + params["out"]["bias"]


@pytest.mark.parametrize("name,modules", [("conv2", 1), ("conv4", 2), ("conv6", 3)])
def test_forward_matches_reference(name, modules):
    model = models.build(name, widths=(8, 8), input_shape=(8, 8, 2), num_outputs=3)
    # random weights and nonzero biases (so their placement, before each ReLU, is checked too)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape), jnp.float32), _shapes(model))
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 2)), jnp.float32)
    want = jax.jit(_reference_forward, static_argnums=2)(params, x, modules)
    np.testing.assert_allclose(jax.jit(model.apply)(params, x), want, rtol=1e-4, atol=1e-5)


# -- initializers see the conv receptive field ----------------------------------------------------

@pytest.mark.parametrize("init,gain,fan", [("glorot_normal", 2.0, "avg"), ("kaiming_normal", 2.0, "in")])
def test_conv_kernel_init_uses_receptive_field_fans(init, gain, fan):
    if init == "glorot_normal":
        params = SMALL_INIT(KEY)  # SMALL uses the default, glorot_normal
    else:
        params = jax.jit(models.build("conv2", widths=(16,), input_shape=(8, 8, 3), init=init).init)(KEY)
    for name, c_in, c_out, tol in (("conv1", 3, 64, 0.08), ("conv2", 64, 64, 0.03)):
        w = np.asarray(params[name]["kernel"])
        fan_in, fan_out = 3 * 3 * c_in, 3 * 3 * c_out  # as PyTorch's xavier_normal_/kaiming_normal_
        want = np.sqrt(gain / (fan_in + fan_out)) if fan == "avg" else np.sqrt(gain / fan_in)
        assert abs(w.std() / want - 1) < tol, (name, w.std(), want)
        assert abs(w.mean()) < 4 * want / np.sqrt(w.size)
    # not truncated: a 36,864-entry N(0, σ²) sample has ~100 entries beyond 3σ
    w = np.asarray(params["conv2"]["kernel"])
    assert np.abs(w).max() > 3 * w.std()


def test_glorot_fans_match_direct_initializer_call():
    w = initializers.get("glorot_normal")(KEY, (3, 3, 64, 128))
    want = np.sqrt(2.0 / (3 * 3 * 64 + 3 * 3 * 128))
    assert abs(float(jnp.std(w)) / want - 1) < 0.02


# -- a short masked training run ------------------------------------------------------------------

def _random_data(n=64, seed=0) -> DeviceData:
    """Random uint8 RGB 'images' and labels; no validation or test set (evaluating pads each to
    1000 examples, which would dominate this test's time: the trainer skips empty sets)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int32)
    x0, y0, w0 = x[:0], y[:0], np.zeros(0, np.float32)
    return jax.device_put(DeviceData(x, y, x0, y0, w0, x0, y0, w0))


def test_masked_training_smoke():
    info = D.DATASETS["cifar10"]
    T = 2
    keys = jax.random.split(KEY, T)
    params = jax.tree.map(lambda *a: jnp.stack(a), *[SMALL_INIT(k) for k in keys])
    rng = np.random.default_rng(0)
    mask = jax.tree.map(lambda m: None if m is None else rng.random(m.shape) < 0.5,
                        M.make_mask(params, SMALL.is_prunable), is_leaf=lambda x: x is None)
    spec = TrainSpec(optimizer="momentum", lr=0.01, batch_size=16, eval_every=4)
    train = make_trainer(SMALL, spec, info.mean, info.std)
    out, curves = train(params, mask, keys, _random_data(), 0, 8)
    for name in ("conv1", "conv2", "fc1", "out"):
        m, p = np.asarray(mask[name]["kernel"]), np.asarray(out[name]["kernel"])
        p0 = np.asarray(params[name]["kernel"])
        assert np.all(p[~m] == 0.0), name  # pruned weights exactly zero
        assert np.any(p[m] != p0[m]), name  # survivors trained
    assert np.all(np.isfinite(np.asarray(curves.train_loss)))
    assert curves.train_loss.shape == (T, 2)


# -- CIFAR-10 registration --------------------------------------------------------------------------

def test_cifar10_registered():
    info = D.DATASETS["cifar10"]
    assert info.mean == (0.4914, 0.4822, 0.4465) and info.std == (0.2023, 0.1994, 0.2010)
    assert info.num_classes == 10
    assert info.files == ("cifar-10-binary.tar.gz",) and set(info.checksums) == set(info.files)
    assert info.host == "www.cs.toronto.edu"
    # the per-channel normalization broadcasts over RGB images
    x = jnp.full((1, 2, 2, 3), 255, jnp.uint8)
    np.testing.assert_allclose(D.normalize(x, info.mean, info.std)[0, 0, 0],
                               (1 - np.array(info.mean)) / np.array(info.std), rtol=1e-5)


def test_cifar10_checksum_matches_tfds_registry():
    import os

    import tensorflow_datasets as tfds

    url_infos = getattr(tfds.builder_cls("cifar10"), "url_infos", None)
    if not url_infos:
        pytest.skip("this TFDS version exposes no url_infos")
    registered = {os.path.basename(url): (int(i.size), i.checksum) for url, i in url_infos.items()}
    info = D.DATASETS["cifar10"]
    assert {f: (c.size, c.sha256) for f, c in info.checksums.items()} == registered
    assert all(url.startswith(info.source) for url in url_infos)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """A fresh cache and TFDS data_dir, and every host unreachable (no network in tests)."""
    monkeypatch.setenv("LTJAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tfds_source, "_reachable", lambda host, timeout=5.0: False)
    import tensorflow_datasets  # noqa: F401  (import time is not what is measured)

    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    return data_dir


def _offline_error(call) -> str:
    t = time.perf_counter()
    with pytest.raises(D.DataUnavailableError) as e:
        call()
    assert time.perf_counter() - t < 10
    return str(e.value)


def test_cifar10_offline_without_manual_dir_fails_fast(offline, tmp_path, monkeypatch):
    monkeypatch.delenv("LTJAX_MANUAL_DIR", raising=False)
    msg = _offline_error(lambda: D.load("cifar10", data_dir=str(offline)))
    assert "'cifar10'" in msg and "www.cs.toronto.edu" in msg
    assert "cifar-10-binary.tar.gz" in msg and "https://www.cs.toronto.edu/~kriz/" in msg
    assert "--manual-dir" in msg and "LTJAX_MANUAL_DIR" in msg
    assert not (tmp_path / "cache" / "cifar10.npz").exists()
    assert not any(offline.glob("cifar10/*/*.tfrecord*"))


def test_cifar10_shared_manual_dir_without_it_falls_through_to_download(offline, tmp_path, monkeypatch):
    """A LTJAX_MANUAL_DIR holding only other datasets is no reason to refuse TFDS's own download."""
    shared = tmp_path / "shared"
    (shared / "mnist").mkdir(parents=True)
    monkeypatch.setenv("LTJAX_MANUAL_DIR", str(shared))
    probed = []

    def unreachable(host, timeout=5.0):
        probed.append(host)
        return False

    monkeypatch.setattr(tfds_source, "_reachable", unreachable)
    msg = _offline_error(lambda: D.load_arrays("cifar10", data_dir=str(offline)))
    assert probed == ["www.cs.toronto.edu"]
    assert "'cifar10'" in msg and "holds none of its files" in msg and "www.cs.toronto.edu" in msg


def test_cifar10_bad_manual_file_named(offline, tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "cifar-10-binary.tar.gz").write_bytes(b"<html>not found</html>")
    msg = _offline_error(lambda: D.load_arrays("cifar10", data_dir=str(offline), manual_dir=str(manual)))
    sums = D.DATASETS["cifar10"].checksums["cifar-10-binary.tar.gz"]
    assert "'cifar10'" in msg and "cifar-10-binary.tar.gz" in msg
    assert sums.sha256 in msg and str(sums.size) in msg and "HTML" in msg


@pytest.mark.parametrize("impl", ["xla", "patches"])
def test_conv_impls_and_their_gradients_equal_the_lax_convolution(impl):
    """conv_same (its custom kernel gradient is fast inside loops on XLA:CPU) and conv_patches
    (one matmul over patches, batched under vmap) compute lax.conv_general_dilated's function and
    its gradients, to float32 summation order, for 3×3 and 5×5 kernels and odd image sizes."""
    from jax import lax

    from ltjax.models.conv import CONV_IMPLS

    conv_same = CONV_IMPLS[impl]
    rng = np.random.default_rng(0)
    for shape_x, shape_k in (((2, 7, 5, 3), (3, 3, 3, 4)), ((1, 6, 6, 1), (3, 3, 1, 2)), ((2, 5, 5, 2), (5, 5, 2, 3))):
        x = jnp.asarray(rng.normal(size=shape_x), jnp.float32)
        k = jnp.asarray(rng.normal(size=shape_k), jnp.float32)
        g = jnp.asarray(rng.normal(size=shape_x[:3] + shape_k[-1:]), jnp.float32)
        ref = lambda a, b: lax.conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))  # noqa: E731
        y, vjp = jax.vjp(conv_same, x, k)
        y_ref, vjp_ref = jax.vjp(ref, x, k)
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
        for a, b in zip(vjp(g), vjp_ref(g)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("unroll", [16, 1])
def test_vmapped_conv_same_runs_tickets_one_by_one_and_keeps_every_gradient(unroll, monkeypatch):
    """Under vmap with a kernel per ticket, conv_same's convolutions (forward and both gradients)
    are one convolution per ticket (unroll=16: 3 ops side by side; unroll=1: a loop over the 3),
    never a grouped convolution (XLA:CPU and XLA:GPU run those several times slower), unless
    traced inside grouped_convolutions() (the sharded-ticket path); with one shared kernel the
    tickets fold into the images' batch axis. Every form, and the gradient of a gradient (GraSP),
    equals lax.conv_general_dilated's to float32 summation order."""
    from jax import lax

    from ltjax.models import conv as conv_module
    from ltjax.models.conv import conv_same, grouped_convolutions

    monkeypatch.setattr(conv_module, "UNROLL_TICKETS", unroll)

    def ref(a, b):
        return lax.conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def loss(conv):
        return lambda k, x: jnp.sum(jnp.tanh(conv(x, k)) ** 2)

    def second(conv):  # a Hessian-gradient product, as GraSP's
        return lambda k, x: jax.grad(lambda kk: jnp.vdot(jax.grad(loss(conv))(kk, x), jax.lax.stop_gradient(kk)))(k)

    rng = np.random.default_rng(1)
    K = jnp.asarray(rng.normal(size=(3, 3, 3, 2, 4)), jnp.float32)
    X = jnp.asarray(rng.normal(size=(3, 2, 6, 5, 2)), jnp.float32)
    for axes in ((0, 0), (0, None), (None, 0)):
        args = (K if axes[0] == 0 else K[0], X if axes[1] == 0 else X[0])
        for fn in (lambda c: jax.grad(loss(c), (0, 1)), second):
            got, want = jax.vmap(fn(conv_same), axes)(*args), jax.vmap(fn(ref), axes)(*args)
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))

    def groups(conv_grad):
        text = str(jax.make_jaxpr(jax.vmap(conv_grad))(K, X))
        return {int(g) for g in re.findall(r"feature_group_count=(\d+)", text)}

    assert groups(jax.grad(loss(conv_same), (0, 1))) == {1}  # per ticket: no grouped convolution
    loops = str(jax.make_jaxpr(jax.vmap(jax.grad(loss(conv_same), (0, 1))))(K, X)).count("scan[")
    assert (loops > 0) == (unroll < 3), loops
    with grouped_convolutions():
        assert max(groups(jax.grad(loss(conv_same), (0, 1)))) == 3  # JAX's own rule: a group per ticket
    assert groups(jax.grad(loss(conv_same), (0, 1))) == {1}  # and the context undone


def test_conv2_with_patch_convolutions_is_the_same_network_under_vmap():
    """Conv-2 with conv_impl="patches" has the same parameters and, for two vmapped tickets,
    the same logits and gradients as the default convolutions (to float32 summation order: the
    patch matmul sums the 3·3·C products in another order); an unknown impl is named."""
    m = models.conv2(widths=(16,))
    mp = m._replace(module=m.module.clone(conv_impl="patches"))
    params = jax.jit(jax.vmap(m.init))(jax.random.split(jax.random.PRNGKey(0), 2))
    assert jax.tree.structure(params) == jax.tree.structure(jax.eval_shape(jax.vmap(mp.init), jax.random.split(
        jax.random.PRNGKey(0), 2)))
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 32, 32, 3))

    def loss_and_grad(model):
        return jax.jit(jax.vmap(jax.value_and_grad(lambda p: jnp.sum(jnp.tanh(model.apply(p, x))))))(params)

    (v, g), (vp, gp) = loss_and_grad(m), loss_and_grad(mp)
    np.testing.assert_allclose(vp, v, rtol=1e-4, atol=1e-4)
    for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(g)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * float(jnp.abs(b).max()))
    with pytest.raises(ValueError, match="conv impl 'winograd' is not valid; choose one of: xla, patches"):
        m._replace(module=m.module.clone(conv_impl="winograd")).init(jax.random.PRNGKey(0))


def test_max_pool_2x2_is_flax_max_pool_bit_for_bit_ties_included():
    """ConvNet's and VGG's pooling: the same values and the same gradient as flax's max_pool
    (reduce_window, differentiated by select_and_scatter), bitwise, on small integers, where
    most windows hold ties (the cotangent goes to the first maximal entry in row-major order),
    on even and odd image sizes, eagerly and jitted."""
    import flax.linen as nn

    from ltjax.models.conv import max_pool_2x2

    def ref(x):
        return nn.max_pool(x, (2, 2), strides=(2, 2))

    rng = np.random.default_rng(0)
    for shape in [(2, 6, 6, 3), (1, 5, 7, 2), (3, 4, 4, 1)]:
        x = jnp.asarray(rng.integers(0, 3, shape).astype(np.float32))
        y, vjp = jax.vjp(max_pool_2x2, x)
        y_ref, vjp_ref = jax.vjp(ref, x)
        g = jnp.asarray(rng.normal(size=y_ref.shape).astype(np.float32))
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(vjp(g)[0], vjp_ref(g)[0])
        jitted = jax.jit(lambda x, g: jax.vjp(max_pool_2x2, x)[1](g)[0])(x, g)
        np.testing.assert_array_equal(jitted, vjp_ref(g)[0])


def test_resnet_strided_shortcut_is_the_1x1_stride2_convolution():
    """The optimization barrier before ResNet's strided 1×1 shortcut (an XLA:GPU compile abort
    otherwise) is the identity: the shortcut equals the 1×1 stride-2 convolution it stands for."""
    from jax import lax

    from ltjax.models.resnet import Conv

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
    conv = Conv(6, 1, 2)
    p = conv.init(jax.random.PRNGKey(1), x)
    ref = lax.conv_general_dilated(x, p["params"]["kernel"], (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                   precision="highest")
    np.testing.assert_allclose(conv.apply(p, x), ref, rtol=1e-5, atol=1e-6)
    assert conv.apply(p, x).shape == (2, 4, 4, 6)


def test_xla_step_flops_covers_the_hand_counted_matmuls():
    from ltjax import bench

    model = models.mlp((300, 100))
    params = model.init(jax.random.PRNGKey(0))
    hand = bench.step_flops(model, params, 60)
    xla = bench.xla_step_flops(model, 60)
    assert hand <= xla <= 1.2 * hand  # matmuls dominate; XLA adds the elementwise work


def test_registered_model_builds_by_name_and_bad_registrations_are_clear():
    import pytest

    from ltjax import models
    from ltjax.config import Config

    models.register("tiny_mlp_test", lambda widths=(4,), **kw: models.mlp((4,), **kw))
    try:
        m = models.build("tiny_mlp_test", input_shape=(2,), num_outputs=1)
        assert m.init(jax.random.PRNGKey(0))["fc1"]["kernel"].shape == (2, 4)
        Config(model="tiny_mlp_test").validate()
        with pytest.raises(ValueError, match="already registered"):
            models.register("tiny_mlp_test", models.mlp)
        with pytest.raises(ValueError, match="not valid"):
            models.register("tiny-mlp", models.mlp)
        with pytest.raises(TypeError, match="factory"):
            models.register("nothing", None)
    finally:
        models.MODELS.pop("tiny_mlp_test")
