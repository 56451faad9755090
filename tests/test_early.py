"""Early tickets: the building blocks on hand-made cases, and the study drivers on a tiny run."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import early, early_study, models, store
from ltjax import masks as M
from ltjax.config import Config, ConfigError

# ---------------------------------------------------------------------------- building blocks


def test_cubic_schedule_endpoints_monotone_and_a_hand_value():
    s = lambda t: float(early.cubic_sparsity(t, 0.1, 0.8, t0=100, n=4, dt=25))  # noqa: E731
    assert s(0) == pytest.approx(0.1) and s(100) == pytest.approx(0.1)  # s_i until t0
    assert s(200) == pytest.approx(0.8) and s(10_000) == pytest.approx(0.8)  # s_f from t0 + nΔt
    assert s(150) == pytest.approx(0.8 + (0.1 - 0.8) * 0.5 ** 3)  # halfway: (1 - 1/2)^3
    vals = [s(t) for t in range(90, 211)]
    assert all(b >= a for a, b in zip(vals, vals[1:]))
    assert vals[20] - vals[10] > vals[110] - vals[100]  # prunes fast early, slowly late


def _two_layer(a, b, out=(True, True)):
    return {"fc1": {"kernel": jnp.array(a, bool), "bias": None}, "fc2": {"kernel": jnp.array(b, bool), "bias": None},
            "out": {"kernel": jnp.array(out, bool), "bias": None}}


def test_hamming_on_hand_made_masks():
    a = _two_layer([1, 1, 0, 0], [1, 0], out=(1, 1))
    b = _two_layer([1, 0, 1, 0], [1, 0], out=(0, 0))
    assert float(early.hamming(a, b, exclude=("out",))) == pytest.approx(2 / 6)  # 2 of 6 pooled weights differ
    assert float(early.hamming(a, b)) == pytest.approx(4 / 8)
    assert float(early.hamming(a, a)) == 0.0
    bits = [early.pooled_bits(m, ("out",)) for m in (a, b, _two_layer([0, 0, 1, 1], [0, 1]))]
    H = early.hamming_matrix(bits)
    assert H.shape == (3, 3) and np.allclose(np.diag(H), 0) and np.allclose(H, H.T)
    assert H[0, 2] == pytest.approx(1.0) and H[0, 1] == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="different sizes"):
        early.hamming(bits[0], bits[0][:3])


def test_early_bird_rule_on_a_synthetic_sequence():
    d = [[], [0.5], [0.3, 0.6], [0.05, 0.2, 0.4], [0.04, 0.08, 0.3, 0.5], [0.02, 0.05, 0.09, 0.1],
         [0.01, 0.02, 0.03, 0.04]]
    assert early.early_bird(d, window=5, threshold=0.1) == 5  # all 4 previous within 0.1 (≤, inclusive)
    assert early.early_bird(d, window=5, threshold=0.09) == 6
    assert early.early_bird(d, window=2, threshold=0.05) == 3  # only the previous mask counts
    assert early.early_bird(d, window=5, threshold=0.001) is None
    with pytest.raises(ValueError, match="window"):
        early.early_bird(d, window=1)
    # distances_to_previous on flat masks: most recent first, at most window-1 of them
    masks = [np.array([1, 1, 1, 1], bool), np.array([1, 1, 1, 0], bool), np.array([1, 1, 0, 0], bool)]
    dd = early.distances_to_previous(masks, window=3)
    assert dd == [[], [0.25], [0.25, 0.5]]


def test_magnitude_mask_layer_rates_and_std_by_hand():
    params = {"fc1": {"kernel": jnp.array([0.1, -0.5, 0.3, 0.05]), "bias": jnp.zeros(1)},
              "fc2": {"kernel": jnp.array([-0.2, 0.4]), "bias": jnp.zeros(1)},
              "out": {"kernel": jnp.array([0.01, 9.0]), "bias": jnp.zeros(1)}}
    dense = M.make_mask(params, lambda p, x: M.path_str(p).endswith("kernel"))
    m = early.magnitude_mask(params, dense, 0.5, exclude=("out",))  # prune 3 of the 6 pooled weights
    assert np.asarray(m["fc1"]["kernel"]).tolist() == [False, True, True, False]  # 0.05, 0.1 go
    assert np.asarray(m["fc2"]["kernel"]).tolist() == [False, True]  # 0.2 goes
    assert np.asarray(m["out"]["kernel"]).all()  # excluded
    r = early.layer_rates(params, dense, 0.5, exclude=("out",))
    assert set(r) == {"fc1", "fc2"} and float(r["fc1"]) == 0.5 and float(r["fc2"]) == 0.5
    sd = early.layer_std(params, dense)
    assert float(sd["fc1"]) == pytest.approx(np.std([0.1, -0.5, 0.3, 0.05]), rel=1e-6)
    assert early.first_and_last(["fc2", "out", "fc1"]) == ("fc1", "out")
    assert early.first_and_last(["s1b1/conv1", "conv", "out"]) == ("conv", "out")


def test_channel_masks_from_batch_norm_scales():
    m = models.resnet20(input_shape=(8, 8, 3))
    p = m.init(jax.random.PRNGKey(0))
    scales = {M.layer_name(k): v for k, v in jax.tree_util.tree_flatten_with_path(p)[0]
              if M.path_str(k).endswith("scale") and "batch_stats" not in M.path_str(k)}
    rng = np.random.default_rng(0)
    p2 = jax.tree_util.tree_map_with_path(
        lambda k, v: jnp.asarray(rng.normal(size=v.shape), v.dtype) if M.path_str(k).endswith("scale") else v, p)
    cm = early.channel_mask(p2, 0.3)
    assert set(cm) == set(scales)
    n = sum(int(v.size) for v in scales.values())
    kept = sum(int(np.sum(v)) for v in cm.values())
    assert kept == n - round(0.3 * n)
    # the kept channels are exactly those with the largest |γ|
    flat = np.concatenate([np.abs(np.asarray(
        [v for k, v in jax.tree_util.tree_flatten_with_path(p2)[0] if M.layer_name(k) == name
         and M.path_str(k).endswith("scale") and "batch_stats" not in M.path_str(k)][0])) for name in cm])
    keep = np.concatenate([np.asarray(cm[name]) for name in cm])
    assert flat[keep].min() >= flat[~keep].max()
    lenet = models.mlp((8,), input_shape=(4,)).init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="no batch-norm scales"):
        early.channel_mask(lenet, 0.3)


def test_random_labels_change_only_labels_deterministically():
    y = np.arange(1000, dtype=np.int32) % 10
    a, b, c = early.random_labels(y, 10, 0), early.random_labels(y, 10, 0), early.random_labels(y, 10, 1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.dtype == y.dtype and a.shape == y.shape and set(np.unique(a)) == set(range(10))
    assert 0.05 < np.mean(a == y) < 0.16  # independent of the true labels (chance is 0.1)


# ---------------------------------------------------------------------------- the drivers

CFG = Config(name="early_tiny", dataset="synthetic_mnist", model="mlp", widths=(32, 16), init="kaiming_normal",
             optimizer="momentum", lr=0.01, momentum=0.9, weight_decay=1e-4, batch_size=64, validation_size=0,
             iterations=5 * 16, lr_drops=(48,), eval_every=16, seeds=2)


def _quiet(_):
    pass


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return early_study.baseline(CFG, tmp_path_factory.mktemp("early"), progress=False, log=_quiet)


def test_baseline_records_every_epoch(study):
    assert study.epochs == 5 and study.steps_per_epoch == 16 and study.exclude == ("fc1", "out")
    st = study.stats()
    assert st["bits"].shape == (6, 2, 32 * 16)  # only fc2 is pooled
    # each recorded mask prunes exactly 80% of the pool
    assert np.all(st["bits"].sum(-1) == 32 * 16 - round(0.8 * 32 * 16))
    # the recorded mask is the magnitude mask of that epoch's weights
    p3 = jax.tree.map(lambda a: a[1], study.params(3))
    dense = M.make_mask(p3, lambda p, x: M.path_str(p).endswith("kernel"))
    m = early.magnitude_mask(p3, dense, 0.8, ("fc1", "out"))
    assert np.array_equal(np.asarray(early.pooled_bits(m, ("fc1", "out"))), st["bits"][3, 1])
    assert set(st["layer_std"]) == {"fc1", "fc2", "out"} and set(st["layer_rate"]) == {"fc2"}
    assert np.allclose(st["layer_rate"]["fc2"], round(0.8 * 512) / 512)  # one pooled layer: all of the rate
    assert np.isnan(st["test_acc"][0]).all() and st["test_acc"][-1].mean() > 0.5  # learns the synthetic task


def test_killed_baseline_resumes_and_ends_like_an_uninterrupted_one(study, tmp_path):
    # the epochs are ltjax.midround's segments: the same partial/ resume point as a round of lottery.run
    code = ("import sys; from ltjax import early_study; from tests.test_early import CFG; "
            "early_study.baseline(CFG, sys.argv[1], progress=False, log=lambda _: None)")
    d = tmp_path / study.path.name

    def killed_at(fault):
        env = {**os.environ, "LTJAX_FAULT": fault}
        p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, cwd=os.getcwd(), capture_output=True)
        assert p.returncode == -9, p.stderr.decode()[-2000:]
        return sorted(e.name for e in d.glob("epoch_*"))

    # killed while committing epoch 3's record: the resume point is epoch 2's, so epoch 3 trains again
    assert killed_at("epoch_003.written") == ["epoch_000", "epoch_001", "epoch_002", "epoch_003.tmp"]
    assert (d / "partial").exists() and int(store.load_once(d / "partial")["done"]) == 2 * 16
    # killed once epoch 4's resume point is saved (in the background, while epoch 5 trains)
    assert killed_at("round0.at64") == [f"epoch_{e:03d}" for e in range(5)]
    assert int(store.load_once(d / "partial")["done"]) == 4 * 16
    again = early_study.baseline(CFG, tmp_path, progress=False, log=_quiet)
    assert not (d / "partial").exists()  # removed once the baseline is done
    for e in range(6):
        for a, b in zip(jax.tree.leaves(again.params(e)), jax.tree.leaves(study.params(e))):
            np.testing.assert_array_equal(a, b)
    st, want = again.stats(), study.stats()
    for k in ("bits", "test_acc", "val_acc"):
        np.testing.assert_array_equal(st[k], want[k])
    with pytest.raises(ConfigError, match="pruning settings"):
        early_study.baseline(CFG, tmp_path, rate=0.5, progress=False, log=_quiet)


def test_grid_takes_the_mask_from_s_and_the_weights_from_v(study):
    g = early_study.grid(study, prune_epochs=[1, 4], rewind_epochs=[0, 2], log=_quiet)
    assert np.shape(g["final_test_acc"]) == (2, 2) and np.shape(g["per_seed"]) == (2, 2, 2)
    total, kept = 784 * 32 + 32 * 16 + 16 * 10, 784 * 32 + (512 - round(0.8 * 512)) + 16 * 10
    assert all(abs(d - kept / total) < 1e-6 for d in g["density"])  # fc1 and out unpruned
    # recompute cell (s=4, v=2) by hand: epoch-4 mask on epoch-2 weights, full schedule from 0
    from ltjax import data as D, lottery
    from ltjax.train import device_data, make_trainer

    ds = D.load(CFG.dataset, validation_size=0, split_seed=CFG.split_seed)
    model = lottery.build_model(CFG, ds)
    mask = early_study.ticket_masks(study, model, study.params(4))
    _, keys = lottery.ticket_keys(CFG)
    _, curves = make_trainer(model, CFG.train_spec(), ds.mean, ds.std)(study.params(2), mask, keys,
                                                                      device_data(ds), 0, CFG.iterations)
    np.testing.assert_allclose(np.asarray(curves.test_acc[:, -1]), g["per_seed"][1][1], atol=1e-6)
    again = early_study.grid(study, prune_epochs=[1, 4], rewind_epochs=[0, 2], log=_quiet)  # from the JSON
    assert again["per_seed"] == g["per_seed"]
    with pytest.raises(ConfigError, match=r"epochs \[9\] are not in the baseline"):
        early_study.grid(study, prune_epochs=[9], rewind_epochs=[0], log=_quiet)


def test_ppr_memorization_and_early_bird_run(study):
    r = early_study.ppr(study, epochs=[1, 3, 5], lrs=(0.1, 0.01), log=_quiet)
    assert np.shape(r["test_acc"]) == (2, 3) and all(0 <= a <= 1 for row in r["test_acc"] for a in row)
    masks = {f"s={s}": early_study.ticket_masks(study, _model(), study.params(s)) for s in (1, 5)}
    mem = early_study.memorization(study, masks, sizes=[64, 256], iterations=64, log=_quiet)
    assert np.shape(mem["train_acc"]) == (2, 2)
    assert all(a > b for a, b in mem["train_acc"])  # fewer random labels are easier to memorize
    eb = early_study.early_bird(study, window=3, threshold=0.5, log=_quiet)
    assert len(eb["epoch"]) == 2 and all(e is not None and e >= 2 for e in eb["epoch"])
    assert all(0 <= a <= 1 for a in eb["final_test_acc"])
    never = early_study.early_bird(study, window=7, retrain=False, log=_quiet)  # needs 7 masks: has 6
    assert never["epoch"] == [None, None] and never["final_test_acc"] == [None, None]
    with pytest.raises(ConfigError, match="channel=True"):
        early_study.early_bird(study, channel=True, log=_quiet)


def _model():
    from ltjax import data as D, lottery

    return lottery.build_model(CFG, D.load(CFG.dataset, validation_size=0))


def test_gradual_pruning_inside_the_loop_reaches_the_rate_and_only_shrinks(study):
    from ltjax import data as D, lottery
    from ltjax.train import device_data, make_trainer

    ds = D.load(CFG.dataset, validation_size=0)
    model = lottery.build_model(CFG, ds)
    theta0 = jax.tree.map(lambda a: a[:1], study.params(0))
    dense = jax.vmap(lambda p: M.make_mask(p, model.is_prunable))(theta0)
    one = jax.tree.map(lambda a: a[0], dense)
    update = early.gradual_mask_update(one, 0.0, 0.8, t0=16, n=4, dt=8, exclude=("fc1", "out"))
    train = make_trainer(model, CFG.train_spec()._replace(eval_every=8), ds.mean, ds.std, mask_update=update)
    _, keys = lottery.ticket_keys(CFG.replace(seeds=1))
    params, mask, opt, prev = theta0, dense, None, None
    pool = early.pool_size(one, ("fc1", "out"))
    kept = []
    for start in range(0, 56, 8):  # segments of 8: one mask update at most per segment
        o = train.stateful(params, mask, keys, device_data(ds), start, 8, opt_state=opt, origin=0)
        params, mask, opt = o.params, o.mask, o.opt_state
        bits = np.asarray(early.pooled_bits(jax.tree.map(lambda a: a[0], mask), ("fc1", "out")))
        if prev is not None:
            assert not np.any(bits & ~prev)  # masks only shrink
        prev = bits
        kept.append(int(bits.sum()))
        for (_, m), (_, w) in zip(M.leaves_with_names(mask), M.leaves_with_names(
                jax.tree.map(lambda m_, p: None if m_ is None else p, mask, params, is_leaf=lambda x: x is None))):
            assert np.all(np.asarray(w)[~np.asarray(m)] == 0)
    # segment [start, start + 8) holds the update at t = start for t = 16, 24, 32, 40, 48 (s_i = 0 at 16)
    keep = lambda t: pool - round(float(early.cubic_sparsity(t, 0.0, 0.8, 16, 4, 8)) * pool)  # noqa: E731
    assert kept == [pool, pool, pool, keep(24), keep(32), keep(40), keep(48)]
    assert keep(48) == pool - round(0.8 * pool) and keep(24) == pool - round((0.8 - 0.8 * 0.75 ** 3) * pool)
    # the driver: the final mask is the study's rate exactly, and the retrained ticket is recorded
    g = early_study.gradual(study, windows=[(1, 3)], steps=4, log=_quiet)
    bits = np.unpackbits(np.asarray(g["bits"][0], np.uint8), axis=-1, count=pool)
    assert np.all(bits.sum(-1) == pool - round(0.8 * pool)) and len(g["per_seed"][0]) == 2
    back = early_study.mask_from_bits(study, model, np.asarray(g["bits"][0], np.uint8))
    assert np.array_equal(np.asarray(jax.vmap(lambda m: early.pooled_bits(m, study.exclude))(back)), bits)
    assert np.asarray(back["fc1"]["kernel"]).all() and np.asarray(back["out"]["kernel"]).all()
    # another initial sparsity is another result, not the cached one of s_i = 0 (was: returned stale)
    g5 = early_study.gradual(study, windows=[(1, 3)], steps=4, s_i=0.5, log=_quiet)
    assert store.part_path(study.path, "gradual", {"window": [1, 3], "steps": 4, "s_i": 0.5}).exists()
    assert g5["bits"] != g["bits"] or g5["per_seed"] != g["per_seed"]
    assert early_study.gradual(study, windows=[(1, 3)], steps=4, log=_quiet) == g  # s_i = 0 still cached


def test_a_grid_preempted_after_a_row_continues_with_the_rest_and_ends_equal(study, tmp_path):
    # the grid's rows are rounds of ltjax.loop: SIGTERM stops it once the row in training is kept
    import shutil

    from ltjax.midround import Preempted

    copy = study._replace(path=tmp_path / study.path.name)
    shutil.copytree(study.path, copy.path, ignore=shutil.ignore_patterns("parts"))
    args = dict(prune_epochs=[3, 5], rewind_epochs=[1])
    term = lambda line: os.kill(os.getpid(), 15) if "s=  3" in line else None  # noqa: E731  (SIGTERM in row 1's log)
    with pytest.raises(Preempted, match="after grid row 3 was saved"):
        early_study.grid(copy, **args, log=term)
    assert len(list((copy.path / "parts").glob("grid-*.json"))) == 1
    lines = []
    resumed = early_study.grid(copy, **args, log=lines.append)
    assert len(lines) == 1 and "s=  5" in lines[0]  # only the missing row trained
    assert resumed["per_seed"] == early_study.grid(study, **args, log=_quiet)["per_seed"]


def test_a_grid_row_killed_mid_training_resumes_at_its_last_segment_and_ends_equal(tmp_path):
    # with checkpoint_every, an experiment's round trains in segments through ltjax.midround, as IMP rounds do
    import shutil

    cfg = CFG.replace(checkpoint_every=32)  # a row of 80 iterations: segments of 32, 32, 16
    study = early_study.baseline(cfg, tmp_path / "a", progress=False, log=_quiet)
    ref = study._replace(path=tmp_path / "b" / study.path.name)
    shutil.copytree(study.path, ref.path)
    args = dict(prune_epochs=[2], rewind_epochs=[0, 1])
    want = early_study.grid(ref, **args, log=_quiet)  # uninterrupted, the same segments
    code = ("import sys; from ltjax import early_study; from tests.test_early import CFG; "
            "s = early_study.open_study(CFG.replace(checkpoint_every=32), sys.argv[1]); "
            "early_study.grid(s, prune_epochs=[2], rewind_epochs=[0, 1], log=lambda _: None)")
    env = {**os.environ, "LTJAX_FAULT": "round0.at64"}  # killed once iteration 64's state is saved
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a")], env=env, cwd=os.getcwd(), capture_output=True)
    assert p.returncode == -9, p.stderr.decode()[-2000:]
    partial = early_study._partial_dir(study, "grid", {"s": 2, "rewind_epochs": [0, 1]})
    assert int(store.load_once(partial / "partial")["done"]) == 64
    lines = []
    got = early_study.grid(study, **args, log=lines.append)
    assert any("resuming at iteration 64" in line for line in lines), lines
    assert got["per_seed"] == want["per_seed"] and not partial.exists()
