"""The LTH-vs-SNIP study on real MNIST at small size: SNIP and iterative-SNIP networks
trained beside the tickets, exact sizes, the report's early stopping, and LTH_flip."""

import jax
import numpy as np
import pytest

from ltjax import lottery, presets, snip
from ltjax import masks as M
from ltjax.data import load
from ltjax.lottery import build_model, make_loss, ticket_keys
from ltjax.data.order import batch_indices
from ltjax.pruning import prune_count

pytestmark = pytest.mark.slow

BASE = presets.get("lenet_mnist_iclr2019").replace(iterations=400, eval_every=200, seeds=2)


def _quiet(_):
    pass


@pytest.fixture(scope="module")
def snip_run(tmp_path_factory):
    cfg = BASE.replace(rounds=3, controls=("snip", "isnip"), early_stop="patience", patience=1, patience_every=200)
    return lottery.run(cfg, tmp_path_factory.mktemp("runs"), progress=False, log=_quiet)


def _total(remaining: dict) -> np.ndarray:
    return sum(np.asarray(v) for v in remaining.values())


def test_snip_networks_have_exactly_the_tickets_size(snip_run):
    for rd in snip_run.rounds[1:]:
        ticket = _total(rd.metrics["remaining"])
        for name in ("snip", "isnip"):
            c = rd.metrics["controls"][name]
            np.testing.assert_array_equal(_total(c["remaining"])[0], ticket)
            v = c["vs_ticket"]["total"]
            np.testing.assert_array_equal(np.asarray(v["kept_b"])[0], ticket)
            np.testing.assert_array_equal(np.asarray(v["overlap"]) + np.asarray(v["only_a"]), np.asarray(v["kept_a"]))
            np.testing.assert_array_equal(v["only_a"], v["only_b"])  # equal sizes: one-sided differences agree
            assert np.all(np.asarray(v["overlap"]) < ticket)  # SNIP picks other weights than magnitude


def test_isnip_with_one_step_trains_exactly_like_snip(snip_run):
    c = snip_run.rounds[1].metrics["controls"]
    for k in ("final_test_acc", "early_stop_iteration", "test_acc_at_es"):
        np.testing.assert_array_equal(c["snip"][k], c["isnip"][k])
    c2 = snip_run.rounds[2].metrics["controls"]
    assert not np.array_equal(c2["snip"]["vs_ticket"]["total"]["overlap"], c2["isnip"]["vs_ticket"]["total"]["overlap"])


def test_snip_mask_is_snip_of_theta0_on_the_tickets_first_batch(snip_run):
    cfg = snip_run.config
    ds = load(cfg.dataset, validation_size=cfg.validation_size, split_seed=cfg.split_seed)
    model = build_model(cfg, ds)
    _, data_keys = ticket_keys(cfg)
    theta0 = jax.tree.map(lambda a: a[1], snip_run.theta0)  # ticket 1
    idx = np.asarray(batch_indices(data_keys[1], len(ds.x_train), cfg.batch_size, 0))
    keep = int(_total(snip_run.rounds[2].metrics["remaining"])[1])
    m = snip.snip(make_loss(model, ds.mean, ds.std), theta0, M.make_mask(theta0, model.is_prunable),
                  ds.x_train[idx], ds.y_train[idx], keep)
    ticket_mask = jax.tree.map(lambda a: a[1], snip_run.rounds[2].mask)
    got = snip_run.rounds[2].metrics["controls"]["snip"]["vs_ticket"]
    ref = M.compare(ticket_mask, m)
    # The run computed the saliencies of both tickets vmapped, this is ticket 1 alone: they may
    # round differently, so a near-tie may swap (global pruning: only the total kept is exact).
    # Each swap moves a layer's overlap by at most 1; allow a few per layer.
    assert int(np.asarray(got["total"]["kept_b"])[0][1]) == int(ref["total"]["kept_b"])
    for layer in ("fc1", "fc2", "out", "total"):
        for k in ("overlap", "only_a", "kept_b"):
            a, b = int(np.asarray(got[layer][k])[0][1]), int(ref[layer][k])
            assert abs(a - b) <= max(2, 1e-3 * int(ref[layer]["kept_a"])), (layer, k, a, b)


def test_patience_early_stop_is_recorded(snip_run):
    for rd in snip_run.rounds:
        m = rd.metrics
        assert m["early_stop_rule"] == "patience"
        assert np.all(np.asarray(m["early_stop_iteration"]) % 200 == 0)
        assert np.all(np.asarray(m["stop_iteration"]) >= np.asarray(m["early_stop_iteration"]))
        assert np.all(np.asarray(m["train_acc_at_es"]) > 0.5)


def test_lth_flip_is_disjoint_and_reuses_the_parents_rounds(tmp_path):
    parent = lottery.run(BASE.replace(rounds=2), tmp_path, progress=False, log=_quiet)
    lines = []
    flip = lottery.run(BASE.replace(rounds=4, flip_round=2), tmp_path, progress=False, log=lines.append)
    assert any("reused theta0, round_000, round_001" in line for line in lines), lines
    for r in (0, 1):
        for a, b in zip(jax.tree.leaves(parent.rounds[r].mask), jax.tree.leaves(flip.rounds[r].mask)):
            np.testing.assert_array_equal(a, b)
    m = parent.rounds[1].mask
    flipped = flip.rounds[2].mask
    for a, b in zip(jax.tree.leaves(m), jax.tree.leaves(flipped)):
        np.testing.assert_array_equal(b, ~a)  # round 2 is the complement
    for r in (2, 3):
        np.testing.assert_array_equal(flip.rounds[r].metrics["shared_with_flipped"], [0, 0])
        for a, b in zip(jax.tree.leaves(m), jax.tree.leaves(flip.rounds[r].mask)):
            assert not np.any(a & b)  # m and s share no weight
    # round 3 prunes the flipped ticket by the usual rates
    c2, c3 = flip.rounds[2].metrics["remaining"], flip.rounds[3].metrics["remaining"]
    for layer, rate in (("fc1", 0.2), ("fc2", 0.2), ("out", 0.1)):
        n = np.asarray(c2[layer])
        np.testing.assert_array_equal(np.asarray(c3[layer]), n - np.asarray(prune_count(n, rate)))


def test_conv2_cifar10_preset_runs_on_synthetic_cifar_shaped_data(tmp_path, monkeypatch):
    """CIFAR-10 cannot be downloaded here: the preset's whole path (Conv-2, per-layer rates,
    SNIP beside the ticket, patience stopping) on random arrays of CIFAR-10's shapes."""
    from ltjax import data as D

    rng = np.random.default_rng(0)
    fake = {"x_train": rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8),
            "y_train": rng.integers(0, 10, 200).astype(np.int32),
            "x_test": rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8),
            "y_test": rng.integers(0, 10, 50).astype(np.int32)}
    monkeypatch.setattr(D, "load_arrays", lambda name, **kw: fake)
    cfg = presets.get("conv2_cifar10_lth_snip").replace(
        widths=(16,), batch_size=8, iterations=20, eval_every=20, patience_every=20, patience=1,
        validation_size=50, rounds=2, seeds=1, controls=())
    run = lottery.run(cfg, tmp_path, progress=False, log=_quiet)
    m = run.rounds[1].metrics
    # conv layers lose 10%, fc1 20%, out 10% (round-half-up counts)
    sizes = {"conv1": 3 * 3 * 3 * 64, "conv2": 3 * 3 * 64 * 64, "fc1": 16 * 16 * 64 * 16, "out": 16 * 10}
    for layer, rate in (("conv1", 0.1), ("conv2", 0.1), ("fc1", 0.2), ("out", 0.1)):
        n = sizes[layer]
        assert int(np.asarray(m["remaining"][layer])[0]) == n - int(prune_count(n, rate)), layer
    assert run.theta0["conv1"]["kernel"].shape == (1, 3, 3, 3, 64)
    # SNIP on the conv net at θ0 (the driver's snip control, minus the training)
    model = build_model(cfg, load(cfg.dataset, validation_size=50))
    theta0 = jax.tree.map(lambda a: a[0], run.theta0)
    dense = M.make_mask(theta0, model.is_prunable)
    keep = int(_total(m["remaining"])[0])
    sm = snip.snip(make_loss(model, (0.5,) * 3, (0.25,) * 3), theta0, dense, fake["x_train"][:8],
                   fake["y_train"][:8], keep)
    assert sum(int(v) for v in M.count(sm).values()) == keep
