"""End-to-end lottery runs on real MNIST at small size: accuracy, exact densities, reset and
rewind exactness, resume after SIGKILL, sharding over forced host devices."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ltjax import lottery, presets
from ltjax.config import ConfigError
from ltjax.data import load
from ltjax.lottery import build_model, round_start, ticket_keys
from ltjax.progress import Progress
from ltjax.pruning import prune_count
from ltjax.store import load_run
from ltjax.train import device_data, make_trainer
from tests.helpers import assert_masks_agree

pytestmark = pytest.mark.slow

SMALL = presets.get("lenet_mnist_iclr2019").replace(iterations=1500, eval_every=500, seeds=2, rounds=3)


def _quiet(_):
    pass


@pytest.fixture(scope="module")
def reset_run(tmp_path_factory):
    return lottery.run(SMALL, tmp_path_factory.mktemp("runs"), progress=False, log=_quiet)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _none(x):
    return x is None


def _expected_counts(n: int, rate: float, rounds: int) -> list[int]:
    out = [n]
    for _ in range(rounds - 1):
        out.append(out[-1] - int(prune_count(out[-1], rate)))
    return out


def test_dense_lenet_reaches_95_percent(reset_run):
    m = reset_run.rounds[0].metrics
    assert np.all(m["final_test_acc"] > 0.95), m["final_test_acc"]
    assert np.all(m["test_acc_at_es"] > 0.95)
    assert m["early_stop_on"] == "val"


def test_load_run_api(reset_run):
    run = load_run(reset_run.path)
    assert run.config == SMALL and len(run.rounds) == 3
    assert run.theta0["fc1"]["kernel"].shape == (2, 784, 300)
    assert isinstance(run.theta0["fc1"]["kernel"], np.ndarray)
    r1 = run.rounds[1]
    assert r1.mask["fc1"]["kernel"].dtype == bool and r1.mask["fc1"]["bias"] is None
    assert r1.params["out"]["kernel"].shape == (2, 100, 10)
    assert r1.metrics["density"].shape == (2,)
    assert r1.metrics["curves"]["val_loss"].shape == (2, 3)
    np.testing.assert_array_equal(r1.metrics["curves"]["step"], [500, 1000, 1500])
    # theta_k is theta0 for reset
    np.testing.assert_array_equal(run.theta_k["fc1"]["kernel"], run.theta0["fc1"]["kernel"])


def test_densities_are_exact_products_of_rates(reset_run):
    sizes = {"fc1": 784 * 300, "fc2": 300 * 100, "out": 100 * 10}
    rates = {"fc1": 0.2, "fc2": 0.2, "out": 0.1}
    for layer, n in sizes.items():
        expect = _expected_counts(n, rates[layer], 3)
        for r, rd in enumerate(reset_run.rounds):
            assert list(rd.metrics["remaining"][layer]) == [expect[r]] * 2
            assert abs(rd.metrics["layer_density"][layer][0] - (1 - rates[layer]) ** r) <= 1 / n
            assert rd.mask[layer]["kernel"].sum(axis=(1, 2)).tolist() == [expect[r]] * 2


def test_masks_shrink_and_pruned_weights_are_zero(reset_run):
    rounds = reset_run.rounds
    for prev, cur in zip(rounds, rounds[1:]):
        for a, b in zip(_leaves(prev.mask), _leaves(cur.mask)):
            assert not np.any(b & ~a)  # nothing revived
    for rd in rounds:
        for layer in ("fc1", "fc2", "out"):
            m, p = rd.mask[layer]["kernel"], rd.params[layer]["kernel"]
            assert np.all(p[~m] == 0.0)


def test_pruned_by_magnitude_of_previous_round(reset_run):
    prev, cur = reset_run.rounds[1], reset_run.rounds[2]
    w = np.abs(prev.params["fc2"]["kernel"][0])
    alive, kept = prev.mask["fc2"]["kernel"][0], cur.mask["fc2"]["kernel"][0]
    removed = alive & ~kept
    assert w[removed].max() <= w[kept].min()


def test_reset_is_exact_and_round_is_reproducible(reset_run):
    """Round 2 starts from θ0 ⊙ m bitwise, and retraining it reproduces the saved weights bitwise."""
    run = reset_run
    ds = load("mnist", validation_size=SMALL.validation_size, split_seed=SMALL.split_seed)
    mask = run.rounds[2].mask
    start, step = round_start(SMALL, 2, run.theta0, run.theta_k, run.rounds[1].params, mask)
    assert step == 0
    for layer in ("fc1", "fc2", "out"):
        np.testing.assert_array_equal(
            np.asarray(start[layer]["kernel"]),
            np.where(mask[layer]["kernel"], run.theta0[layer]["kernel"], 0.0),
        )
        np.testing.assert_array_equal(np.asarray(start[layer]["bias"]), run.theta0[layer]["bias"])
    model = build_model(SMALL, ds)
    train = make_trainer(model, SMALL.train_spec(), ds.mean, ds.std)
    _, data_keys = ticket_keys(SMALL)
    params, _ = train(start, mask, data_keys, device_data(ds), 0, SMALL.iterations)
    for a, b in zip(_leaves(params), _leaves(run.rounds[2].params)):
        np.testing.assert_array_equal(a, b)


def test_rewind_snapshots_theta_k_and_starts_there(tmp_path):
    cfg = SMALL.replace(strategy="rewind", rewind_iteration=200, iterations=600, eval_every=100, rounds=2)
    run = lottery.run(cfg, tmp_path, progress=False, log=_quiet)
    ds = load("mnist")
    model = build_model(cfg, ds)
    train = make_trainer(model, cfg.train_spec(), ds.mean, ds.std)
    _, data_keys = ticket_keys(cfg)
    dense = run.rounds[0].mask
    theta_k, _ = train(run.theta0, dense, data_keys, device_data(ds), 0, 200)
    for a, b in zip(_leaves(theta_k), _leaves(run.theta_k)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(run.rounds[0].metrics["curves"]["step"], np.arange(100, 601, 100))
    np.testing.assert_array_equal(run.rounds[1].metrics["curves"]["step"], np.arange(300, 601, 100))
    start, step = round_start(cfg, 1, run.theta0, run.theta_k, None, run.rounds[1].mask)
    assert step == 200
    m = run.rounds[1].mask["fc1"]["kernel"]
    np.testing.assert_array_equal(np.asarray(start["fc1"]["kernel"]), np.where(m, run.theta_k["fc1"]["kernel"], 0.0))


def test_ticket_chunks_give_the_same_run(tmp_path):
    """``ticket_chunk`` schedules the tickets differently but computes the same study (and the
    progress bar counts every chunk's iterations). One-by-one and vmapped programs agree to
    float rounding, so the weights are compared to a tolerance and the masks by
    :func:`tests.helpers.assert_masks_agree` (exact counts, positions up to near-ties)."""
    cfg = SMALL.replace(strategy="rewind", rewind_iteration=200, iterations=600, eval_every=100, rounds=2)
    a = lottery.run(cfg, tmp_path / "a", progress=False, log=_quiet)
    b = lottery.run(cfg, tmp_path / "b", progress=False, log=_quiet, ticket_chunk=1)
    assert a.path.name == b.path.name  # not part of the configuration's hash
    for ra, rb in zip(a.rounds, b.rounds):
        assert_masks_agree(ra.mask, rb.mask)
        for x, y, m in zip(_leaves(ra.params), _leaves(rb.params), jax.tree.leaves(ra.mask, is_leaf=_none)):
            if m is not None:  # pruned weights exactly 0 in both
                assert (x[~np.asarray(m)] == 0).all() and (y[~np.asarray(m)] == 0).all()
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="ticket_chunk=0 is not valid"):
        lottery.run(cfg, tmp_path / "c", progress=False, log=_quiet, ticket_chunk=0)
    assert not (tmp_path / "c").exists()
    bar = Progress(False)
    bar.start("r", 60, passes=2)
    for done in (20, 40, 60, 20, 40):
        bar(done)
    assert bar.offset + bar.last == 100


def test_continue_starts_from_trained_weights(reset_run):
    cfg = SMALL.replace(strategy="continue")
    prev = reset_run.rounds[1].params
    mask = reset_run.rounds[2].mask
    start, step = round_start(cfg, 2, reset_run.theta0, reset_run.theta0, prev, mask)
    m = mask["fc2"]["kernel"]
    np.testing.assert_array_equal(np.asarray(start["fc2"]["kernel"]), np.where(m, prev["fc2"]["kernel"], 0.0))


def test_oneshot_and_global_scopes(tmp_path):
    cfg = SMALL.replace(mode="oneshot", densities=(0.5, 0.2), iterations=200, eval_every=100, seeds=1)
    run = lottery.run(cfg, tmp_path, progress=False, log=_quiet)
    d = [rd.metrics["layer_density"] for rd in run.rounds]
    # hidden layers to the target; the output layer at half the pruned fraction (0.1 / 0.2)
    assert d[1]["fc1"][0] == pytest.approx(0.5, abs=1e-5) and d[2]["fc1"][0] == pytest.approx(0.2, abs=1e-5)
    assert d[1]["out"][0] == pytest.approx(0.75, abs=1e-3) and d[2]["out"][0] == pytest.approx(0.6, abs=1e-3)
    # one-shot: round 2 is pruned from round 0's weights, not round 1's
    w0 = np.abs(run.rounds[0].params["fc1"]["kernel"][0])
    kept = run.rounds[2].mask["fc1"]["kernel"][0]
    assert w0[~kept].max() <= w0[kept].min()

    g = cfg.replace(mode="iterative", densities=(), scope="global", exclude=("out",), layer_rates=(), rounds=2)
    grun = lottery.run(g, tmp_path, progress=False, log=_quiet)
    rem = grun.rounds[1].metrics["remaining"]
    assert rem["out"][0] == 1000
    assert rem["fc1"][0] + rem["fc2"][0] == 265_200 - int(prune_count(265_200, 0.2))


_SHARDED = """
import sys, jax, numpy as np
from ltjax import lottery, presets
from ltjax.devices import shard_tickets, ticket_mesh
assert jax.device_count() == 8 and ticket_mesh(16).devices.size == 8, jax.devices()
x = shard_tickets(np.zeros((16, 3)), ticket_mesh(16))
assert x.sharding.shard_shape(x.shape) == (2, 3)  # 2 tickets per device
assert ticket_mesh(6).devices.size == 6  # fewer tickets than devices: one each
y = shard_tickets(np.zeros((12, 3)), ticket_mesh(12))
assert y.sharding.shard_shape(y.shape) == (12, 3)  # 12 on 8 does not split: kept whole between programs
cfg = presets.get("lenet_mnist_openlth").replace(widths=(64,), iterations=100, eval_every=50, seeds=16, rounds=2)
lottery.run(cfg, sys.argv[1], progress=False, log=lambda s: None)
lottery.run(cfg.replace(seeds=12, rounds=1), sys.argv[2], progress=False, log=lambda s: None)
"""


def test_sixteen_tickets_on_eight_devices_match_single_device(tmp_path):
    """16 tickets sharded 2 per device over 8 forced host devices compute exactly what one
    device computes vmapping 2 tickets at a time (``ticket_chunk=2``: the same per-device
    program). Vmapping all 16 at once batches the matmuls differently (float32 reassociation),
    which 100 SGD steps amplify in the weights, so against it the accuracies are
    compared, to 0.2 points (a few of 10,000 test images).
    12 tickets, which 8 devices do not divide, are padded to 16 inside the program (2 per
    device, the last ticket's copies dropped) and equal one device's 2-ticket chunks too."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    subprocess.run([sys.executable, "-c", _SHARDED, str(tmp_path / "multi"), str(tmp_path / "twelve")],
                   check=True, env=env)
    cfg = presets.get("lenet_mnist_openlth").replace(widths=(64,), iterations=100, eval_every=50, seeds=16, rounds=2)
    pairs = lottery.run(cfg, tmp_path / "pairs", progress=False, log=_quiet, ticket_chunk=2)
    (multi_dir,) = list((tmp_path / "multi").iterdir())
    multi = load_run(multi_dir)
    for rp, rm in zip(pairs.rounds, multi.rounds):
        for x, y in zip(_leaves(rp.mask) + _leaves(rp.params), _leaves(rm.mask) + _leaves(rm.params)):
            np.testing.assert_array_equal(x, y)
    whole = lottery.run(cfg.replace(rounds=1), tmp_path / "whole", progress=False, log=_quiet)
    np.testing.assert_allclose(whole.rounds[0].metrics["final_test_acc"], multi.rounds[0].metrics["final_test_acc"],
                               atol=2e-3)
    twelve = cfg.replace(seeds=12, rounds=1)
    (padded_dir,) = list((tmp_path / "twelve").iterdir())
    padded = load_run(padded_dir).rounds[0]
    single = lottery.run(twelve, tmp_path / "single12", progress=False, log=_quiet, ticket_chunk=2).rounds[0]
    assert padded.mask["fc1"]["kernel"].shape[0] == 12
    for x, y in zip(_leaves(single.params), _leaves(padded.params)):
        np.testing.assert_array_equal(x, y)
    # same weights; the accuracy's final division may round differently (1 ulp) in the two programs
    np.testing.assert_allclose(single.metrics["final_test_acc"], padded.metrics["final_test_acc"], rtol=1e-6)


def test_reinit_and_shuffle_controls_train_beside_the_ticket(tmp_path):
    cfg = SMALL.replace(iterations=300, eval_every=150, seeds=2, rounds=2, controls=("reinit:2", "shuffle:1", "random"),
                        shuffle_layers=("fc*",))
    run = lottery.run(cfg, tmp_path, progress=False, log=_quiet)
    m = run.rounds[1].metrics
    c = m["controls"]
    assert np.asarray(c["reinit"]["final_test_acc"]).shape == (2, 2)  # (copies, tickets)
    assert np.asarray(c["shuffle"]["final_test_acc"]).shape == (1, 2)
    for name in ("reinit", "shuffle", "random"):
        for layer, n in m["remaining"].items():  # the same number of weights per layer as the ticket
            np.testing.assert_array_equal(np.asarray(c[name]["remaining"][layer])[0], n)
        assert np.all(np.asarray(c[name]["final_test_acc"]) > 0.5)
    vs = c["reinit"]["vs_ticket"]
    np.testing.assert_array_equal(vs["total"]["overlap"], vs["total"]["kept_a"])  # reinit keeps the ticket's mask
    sh = c["shuffle"]["vs_ticket"]
    assert np.all(np.asarray(sh["fc1"]["overlap"]) < np.asarray(sh["fc1"]["kept_a"]))  # shuffled positions
    np.testing.assert_array_equal(sh["out"]["overlap"], sh["out"]["kept_a"])  # out is not in shuffle_layers
    rnd = c["random"]["vs_ticket"]
    assert np.all(np.asarray(rnd["total"]["overlap"]) < np.asarray(rnd["total"]["kept_a"]))  # new positions


_TWO_AXES = """
import json, sys
import numpy as np
import jax
from ltjax import lottery, presets
from ltjax.devices import ticket_mesh, replicate, shard_tickets
from ltjax.train import make_trainer, device_data
from ltjax import data as D, masks as M
cfg = presets.get("lenet_mnist_openlth").replace(widths=(64,), iterations=100, eval_every=50, seeds=8, rounds=2,
                                                 batch_size=64)
for k in (1, 2, 4, 8):
    lottery.run(cfg, f"{sys.argv[1]}/k{k}", progress=False, log=lambda s: None, devices_per_ticket=k)
# the compiled program: all-reduces of the gradient over the data axis where there is one
ds = D.load(cfg.dataset, validation_size=cfg.validation_size, split_seed=cfg.split_seed)
model = lottery.build_model(cfg, ds)
hlo = {}
for k in (1, 4):
    mesh = ticket_mesh(8, data=k)
    train = make_trainer(model, cfg.train_spec(), ds.mean, ds.std, mesh=mesh)
    keys = shard_tickets(jax.random.split(jax.random.PRNGKey(0), 8), mesh)
    params = shard_tickets(jax.vmap(model.init)(keys), mesh)
    mask = shard_tickets(jax.vmap(lambda p: M.make_mask(p, model.is_prunable))(params), mesh)
    text = train.jitted.lower(params, mask, keys, None, replicate(device_data(ds), mesh), 0, 50, None).compile().as_text()
    hlo[k] = text.count("all-reduce(")
# batch norm over a split batch sees the whole batch: per-device statistics of 8 of the 32
# examples would move the weights far more than float32 rounding does
import flax.linen as nn
from ltjax import models


class BatchNormMLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(32, name="fc1")(x.reshape(x.shape[0], -1))
        return nn.Dense(10, name="out")(nn.relu(nn.BatchNorm(use_running_average=not train)(x)))


bn = cfg.replace(model=models.wrap(BatchNormMLP(), input_shape=(28, 28, 1), num_outputs=10), widths=(),
                 iterations=40, eval_every=20, seeds=2, rounds=1, batch_size=32)
runs = [lottery.run(bn, f"{sys.argv[1]}/bn{k}", progress=False, log=lambda s: None, devices_per_ticket=k).rounds[0]
        for k in (1, 4)]
hlo["bn_diff"] = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                     for a, b in zip(jax.tree.leaves(runs[0].params), jax.tree.leaves(runs[1].params)))
print(json.dumps(hlo))
"""


def test_tickets_times_data_meshes_match_one_device(tmp_path):
    """8 tickets on 8 forced host devices as 8×1, 4×2, 2×4 and 1×8 (tickets × data): each
    ticket's minibatch of 64 split over its data devices, the gradient reduced over them (more
    all-reduces in the compiled program than the 1-D mesh has). Every factorization
    keeps exactly one device's per-layer counts and the same masks (at most a few weights at the
    pruning threshold may trade places), and weights equal to float32 rounding: the batch's loss
    is summed per device, then across devices, in another order than one device's sum (1e-5
    after 100 steps of SGD, against weights of order 0.1). A batch-norm network whose batch of 32 is split over 4 devices
    trains as on one device per ticket: its statistics are those of the whole batch."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run([sys.executable, "-c", _TWO_AXES, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hlo = json.loads(proc.stdout.splitlines()[-1])
    assert hlo["4"] > hlo["1"], hlo  # the gradient (and the batch loss) reduced over the data devices
    assert hlo["bn_diff"] < 1e-4, hlo  # batch norm: 2×1 vs 2×4 devices
    cfg = presets.get("lenet_mnist_openlth").replace(widths=(64,), iterations=100, eval_every=50, seeds=8, rounds=2,
                                                     batch_size=64)
    one = lottery.run(cfg, tmp_path / "one", progress=False, log=_quiet)
    for k in (1, 2, 4, 8):
        (d,) = list((tmp_path / f"k{k}").iterdir())
        run = load_run(d)
        for ra, rb in zip(one.rounds, run.rounds, strict=True):
            for n, count in ra.metrics["remaining"].items():
                np.testing.assert_array_equal(count, rb.metrics["remaining"][n])
            agree = [np.mean(np.asarray(x) == np.asarray(y)) for x, y in zip(_leaves(ra.mask), _leaves(rb.mask))]
            assert min(agree) > 0.999, (k, agree)
            for x, y in zip(_leaves(ra.params), _leaves(rb.params)):
                np.testing.assert_allclose(x, y, atol=1e-5, err_msg=f"{k} devices per ticket")


def test_devices_per_ticket_must_divide_the_devices_and_the_batch(tmp_path):
    """A data-axis size the devices (here 1) or the batch do not divide is refused before any
    data is loaded or anything is written."""
    from ltjax.config import ConfigError

    with pytest.raises(ConfigError, match=r"devices_per_ticket: data=3 is not valid: .*dividing the 1 devices"):
        lottery.run(SMALL, tmp_path, progress=False, log=_quiet, devices_per_ticket=3)
    with pytest.raises(ConfigError, match="devices_per_ticket: data=0 is not valid"):
        lottery.run(SMALL, tmp_path, progress=False, log=_quiet, devices_per_ticket=0)
    assert not list(tmp_path.iterdir())
