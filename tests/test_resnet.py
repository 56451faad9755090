"""CIFAR ResNets with batch norm: exact weight counts, PyTorch's stride-2 padding, running
statistics that train, vmap, rewind and stay unprunable."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ltjax import lottery, masks as M, models, presets
from ltjax.data import Dataset
from ltjax.models.resnet import CifarResNet, Conv
from ltjax.train import TrainSpec, device_data, make_trainer


def _sizes(m):
    """Weights per prunable layer, from the parameters' shapes (nothing is drawn or compiled)."""
    return M.size(M.make_mask(jax.eval_shape(m.init, jax.random.PRNGKey(0)), m.is_prunable))


def test_resnet20_weight_count_by_hand():
    sizes = _sizes(models.resnet20())
    stem = 3 * 3 * 3 * 16
    seg1 = 6 * (3 * 3 * 16 * 16)
    seg2 = 3 * 3 * 16 * 32 + 5 * (3 * 3 * 32 * 32) + 16 * 32  # + the 1x1 shortcut
    seg3 = 3 * 3 * 32 * 64 + 5 * (3 * 3 * 64 * 64) + 32 * 64
    out = 64 * 10
    assert sum(sizes.values()) == stem + seg1 + seg2 + seg3 + out == 270_896
    assert len(sizes) == 1 + 18 + 2 + 1  # stem, 18 block convs, 2 shortcuts, output
    assert len(_sizes(models.resnet56())) == 1 + 54 + 2 + 1


@pytest.mark.parametrize("size", [3, 1])
def test_strided_conv_matches_pytorch_padding(size):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
    conv = Conv(4, size, 2)
    p = conv.init(jax.random.PRNGKey(0), x)
    pad = (size - 1) // 2
    ref = lax.conv_general_dilated(x, p["params"]["kernel"], (2, 2), ((pad, pad), (pad, pad)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))  # torch Conv2d(stride=2, padding=pad)
    np.testing.assert_allclose(conv.apply(p, x), ref, rtol=1e-5, atol=1e-5)


def _tiny():
    return models.Model(CifarResNet(depth=8, width=4), (16, 16, 3), 10, stateful=True)


def _tiny_study(n: int, data_seed: int, key_seed: int):
    """Random 16x16 images (the first 16 also the test set) and two dense tickets of ``_tiny``."""
    m = _tiny()
    rng = np.random.default_rng(data_seed)
    x = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int32)
    ds = Dataset("t", x, y, x[:0], y[:0], x[:16], y[:16], (0.5,) * 3, (0.25,) * 3, 10)
    keys = jax.random.split(jax.random.PRNGKey(key_seed), 2)
    params = models.run_init(jax.vmap(m.init), keys)
    return m, ds, keys, params, jax.vmap(lambda p: M.make_mask(p, m.is_prunable))(params)


def test_batch_stats_are_state_not_weights():
    m = _tiny()
    p = models.run_init(m.init, jax.random.PRNGKey(0))
    mask = M.make_mask(p, m.is_prunable)
    assert all(v is None for v in jax.tree.leaves(mask["batch_stats"], is_leaf=lambda v: v is None))
    assert mask["bn"]["scale"] is None and mask["conv"]["kernel"] is not None
    x = jnp.asarray(np.random.default_rng(0).normal(2.0, 1.0, size=(8, 16, 16, 3)), jnp.float32)
    logits, new = jax.jit(m.apply_train)(p, x)  # one program each (op by op compiles a program per layer)
    # running mean moves 10% of the way to the batch mean (PyTorch momentum 0.1); weights unchanged
    conv_out = lax.conv_general_dilated(x, p["conv"]["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(new["batch_stats"]["bn"]["mean"], 0.1 * conv_out.mean(axis=(0, 1, 2)), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_array_equal(new["conv"]["kernel"], p["conv"]["kernel"])
    assert not np.allclose(jax.jit(m.apply)(p, x), logits)  # eval uses running statistics, train the batch's


def test_trainer_updates_running_stats_and_keeps_pruned_weights_zero():
    m, ds, keys, params, mask = _tiny_study(96, data_seed=0, key_seed=0)
    rng = np.random.default_rng(1)  # a random half of each layer (drawn on the host: nothing to compile)
    mask = jax.tree.map(lambda a: None if a is None else a & jnp.asarray(rng.random(a.shape) > 0.5),
                        mask, is_leaf=lambda v: v is None)
    spec = TrainSpec(optimizer="momentum", lr=0.05, weight_decay=1e-4, batch_size=16, eval_every=6, augment="cifar")
    out, curves = make_trainer(m, spec, ds.mean, ds.std)(params, mask, keys, device_data(ds), 0, 12)
    assert np.all(np.isfinite(np.asarray(curves.train_loss)))
    for mk, p in zip(jax.tree.leaves(mask, is_leaf=lambda v: v is None), jax.tree.leaves(out, is_leaf=lambda v: v is None)):
        if mk is not None:
            assert np.all(np.asarray(p)[~np.asarray(mk)] == 0)
    bs0, bs1 = params["batch_stats"]["bn"]["var"], out["batch_stats"]["bn"]["var"]
    assert not np.allclose(bs0, bs1)  # the running statistics trained
    assert not np.allclose(bs1[0], bs1[1])  # per ticket


def test_resnet20_preset_rewinds_weights_and_statistics(tmp_path, monkeypatch):
    from ltjax import data as D

    rng = np.random.default_rng(0)
    fake = {"x_train": rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
            "y_train": rng.integers(0, 10, 64).astype(np.int32),
            "x_test": rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
            "y_test": rng.integers(0, 10, 16).astype(np.int32)}
    monkeypatch.setattr(D, "load_arrays", lambda name, **kw: fake)
    cfg = presets.get("resnet20_cifar10_ltr").replace(
        # every training call is 2 iterations (theta_k, the rest of round 0, round 1): one program
        batch_size=16, iterations=4, eval_every=2, rewind_iteration=2, lr_drops=(3,), rounds=2, seeds=1)
    run = lottery.run(cfg, tmp_path, progress=False, log=lambda _: None)
    theta_k = run.theta_k
    assert "batch_stats" in theta_k and not np.allclose(theta_k["batch_stats"]["bn"]["var"],
                                                        run.theta0["batch_stats"]["bn"]["var"])
    d = run.rounds[1].metrics["density"]
    assert abs(float(d[0]) - 0.8) < 1e-3  # global 20%


def test_vgg16_weight_count_and_forward():
    m = models.vgg16()
    # shapes only, traced (no 14.7M weights drawn, no program compiled): tracing the forward
    # passes checks every layer's input and output shapes as running them would
    p = jax.eval_shape(m.init, jax.random.PRNGKey(0))
    sizes = M.size(M.make_mask(p, m.is_prunable))
    chans = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    conv = sum(9 * a * b for a, b in zip(chans, chans[1:]))
    assert sum(sizes.values()) == conv + 512 * 10 == 14_715_584  # ~14.7M, as OpenLTH reports
    assert list(sizes)[:2] == ["conv1", "conv10"] and "out" in sizes and len(sizes) == 14
    x = jnp.zeros((2, 32, 32, 3))
    assert jax.eval_shape(m.apply, p, x).shape == (2, 10) and jax.eval_shape(m.apply_train, p, x)[0].shape == (2, 10)
    assert "bn13" in p["batch_stats"]


def _kernel_count(m):
    return sum(_sizes(m).values())


def test_imagenet_resnets_match_torchvision_counts():
    """torchvision's totals minus batch-norm parameters (2 per channel) and the fc bias:
    ResNet-18 11,689,512 − 2·4,800 − 1,000; ResNet-50 25,557,032 − 2·26,560 − 1,000."""
    from ltjax.models.resnet import ImageNetResNet

    r18 = models.Model(ImageNetResNet(depth=18, num_outputs=1000), (224, 224, 3), 1000, stateful=True)
    assert _kernel_count(r18) == 11_689_512 - 2 * 4_800 - 1_000 == 11_678_912
    assert _kernel_count(models.resnet50(num_outputs=1000)) == 25_557_032 - 2 * 26_560 - 1_000 == 25_502_912
    # the TinyImageNet form: a 3x3 stem instead of 7x7 (9·3·64 instead of 49·3·64 weights)
    small = models.resnet18(num_outputs=1000)
    assert _kernel_count(small) == 11_678_912 - 49 * 3 * 64 + 9 * 3 * 64
    p = jax.eval_shape(small.init, jax.random.PRNGKey(0))
    assert jax.eval_shape(small.apply, p, jnp.zeros((1, 32, 32, 3))).shape == (1, 1000)


def test_batch_norm_state_under_vmap_equals_per_ticket_runs():
    """Running statistics are per-ticket state: two tickets trained in one vmapped program end
    with the same weights and statistics as each trained alone. (The shapes and spec of the
    test above, whose two-ticket program it reuses from the compilation cache.)"""
    m, ds, keys, params, mask = _tiny_study(96, data_seed=1, key_seed=3)
    spec = TrainSpec(optimizer="momentum", lr=0.05, weight_decay=1e-4, batch_size=16, eval_every=6, augment="cifar")
    train = make_trainer(m, spec, ds.mean, ds.std)
    both, _ = train(params, mask, keys, device_data(ds), 0, 12)
    for i in range(2):
        one = lambda t: jax.tree.map(lambda a: a[i:i + 1], t)  # noqa: E731
        alone, _ = train(one(params), one(mask), keys[i:i + 1], device_data(ds), 0, 12)
        for a, b in zip(jax.tree.leaves(alone["batch_stats"]), jax.tree.leaves(one(both)["batch_stats"])):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(alone["conv"]["kernel"], one(both)["conv"]["kernel"], rtol=1e-4, atol=1e-5)
