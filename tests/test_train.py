"""The scan-fused masked trainer, on a small synthetic problem (fast to compile)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import data as D
from ltjax import masks as M
from ltjax import models
from ltjax.train import TrainSpec, device_data, lr_schedule, make_trainer


def _dataset(n_train=640, n_val=100, n_test=200, seed=0) -> D.Dataset:
    """A learnable 10-class problem on 8x8 uint8 'images': class = brightest of 10 regions."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 10, n).astype(np.int32)
        x = rng.integers(0, 100, (n, 8, 8, 1)).astype(np.uint8)
        x.reshape(n, -1)[np.arange(n), y * 6] = 255
        return x, y

    return D.Dataset("synthetic", *make(n_train), *make(n_val), *make(n_test), (0.2,), (0.3,), 10)


DS = _dataset()
MODEL = models.mlp((32, 16), input_shape=(8, 8, 1), init="glorot_normal")


KEYS = jax.random.split(jax.random.PRNGKey(0), 3)


@functools.cache
def _theta0():
    """θ0 of three tickets, drawn by one program that every test's tickets share."""
    return models.run_init(jax.vmap(MODEL.init), KEYS)


def _tickets(T, density=0.5):
    """The first T tickets: θ0, a random mask of ``density`` per ticket (drawn on the host) and keys."""
    params = jax.tree.map(lambda a: a[:T], _theta0())
    rng = np.random.default_rng(T)
    mask = jax.tree.map(lambda m: None if m is None else jnp.asarray(rng.random(m.shape) < density),
                        M.make_mask(params, MODEL.is_prunable), is_leaf=lambda x: x is None)
    return params, mask, KEYS[:T]


def _trainer(**kw):
    spec = TrainSpec(**{"optimizer": "sgd", "lr": 0.05, "batch_size": 32, "eval_every": 20, **kw})
    return make_trainer(MODEL, spec, DS.mean, DS.std)


@pytest.mark.parametrize("opt", [dict(optimizer="sgd"), dict(optimizer="momentum", weight_decay=1e-2),
                                 dict(optimizer="adam", lr=1e-3)])
def test_pruned_weights_stay_exactly_zero(opt):
    params, mask, keys = _tickets(2)
    # Unmasked starting weights: the trainer must mask them on entry.
    out, curves = _trainer(**opt)(params, mask, keys, device_data(DS), 0, 100)
    flat_m = [m for _, m in M.leaves_with_names(mask)]
    flat_p = [out[name]["kernel"] for name in M.layer_names(mask)]
    for m, p in zip(flat_m, flat_p):
        assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)
        assert np.all(np.asarray(p)[np.asarray(m)] != 0.0)  # survivors did train
    assert np.all(np.isfinite(np.asarray(curves.train_loss)))


def test_learns():
    params, mask, keys = _tickets(1, density=1.0)
    _, curves = _trainer(lr=0.1)(params, mask, keys, device_data(DS), 0, 200)
    assert curves.test_acc[0, -1] > 0.9
    assert curves.val_loss[0, -1] < curves.val_loss[0, 0]


def test_vmapped_equals_one_by_one():
    params, mask, keys = _tickets(3)
    data = device_data(DS)
    train = _trainer(optimizer="momentum")
    out, curves = train(params, mask, keys, data, 0, 60)
    for i in range(3):
        one = lambda t: jax.tree.map(lambda a: a[i : i + 1], t)  # noqa: E731
        out_i, curves_i = train(one(params), one(mask), keys[i : i + 1], data, 0, 60)
        for a, b in zip(jax.tree.leaves(one(out)), jax.tree.leaves(out_i)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(curves.val_loss[i], curves_i.val_loss[0], rtol=1e-4)


@pytest.mark.parametrize("chunk", [1, 2])
def test_ticket_chunks_compute_what_one_vmap_computes(chunk):
    """3 tickets in sequential chunks (1: a plain loop; 2: a vmapped pair plus a remainder)."""
    params, mask, keys = _tickets(3)
    data = device_data(DS)
    spec = TrainSpec(optimizer="momentum", lr=0.05, batch_size=32, eval_every=20)
    seen = []
    out, curves = make_trainer(MODEL, spec, DS.mean, DS.std)(params, mask, keys, data, 0, 60)
    c_out, c_curves = make_trainer(MODEL, spec, DS.mean, DS.std, progress=seen.append,
                                   ticket_chunk=chunk)(params, mask, keys, data, 0, 60)
    for a, b in zip(jax.tree.leaves((out, curves)), jax.tree.leaves((c_out, c_curves))):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    # progress counts to 60 once per chunk, in order
    assert [int(s) for s in seen] == [20, 40, 60] * -(-3 // chunk)
    with pytest.raises(ValueError, match="ticket_chunk must be a positive"):
        make_trainer(MODEL, spec, DS.mean, DS.std, ticket_chunk=0)


def test_progress_callback_changes_nothing_computed():
    """The progress callback only reads the iteration count, so the program with it computes
    bitwise what the program without it computes (the same arithmetic in the same shapes);
    runs without a progress bar leave it out, which lets JAX cache their programs on disk."""
    params, mask, keys = _tickets(3)
    data, seen = device_data(DS), []
    plain = _trainer(optimizer="momentum")(params, mask, keys, data, 0, 60)
    shown = make_trainer(MODEL, TrainSpec(optimizer="momentum", lr=0.05, batch_size=32, eval_every=20), DS.mean,
                         DS.std, progress=seen.append)(params, mask, keys, data, 0, 60)
    assert [int(s) for s in seen] == [20, 40, 60]
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(shown)):
        np.testing.assert_array_equal(a, b)


def test_split_training_equals_one_call():
    """Snapshot at k then continue == one call (stateless SGD, constant lr): global iteration
    numbering gives the same batches, so the rewind point is the true iteration-k weights."""
    params, mask, keys = _tickets(2)
    data, train = device_data(DS), _trainer()
    full, c_full = train(params, mask, keys, data, 0, 100)
    half, c1 = train(params, mask, keys, data, 0, 40)
    rest, c2 = train(half, mask, keys, data, 40, 60)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(rest)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.concatenate([c1.step, c2.step], 1), c_full.step)
    np.testing.assert_array_equal(c_full.step[0], np.arange(20, 101, 20))


@pytest.mark.parametrize("opt,exact", [(dict(optimizer="momentum", weight_decay=1e-3, lr_drops=(50,)), True),
                                       (dict(optimizer="adam", lr=1e-3), False)])
def test_stateful_calls_continue_exactly_where_they_stopped(opt, exact):
    """Passing the optimizer state on (momentum buffers, Adam moments and step count, the
    schedule's origin) makes a run split into three calls equal to one call: bitwise for
    momentum SGD; for Adam to float rounding (XLA fuses its bias correction differently in
    programs of different lengths)."""
    params, mask, keys = _tickets(2)
    data, train = device_data(DS), _trainer(**opt)
    # three calls of 20 iterations (the last one across the lr drop at 50) against one of 60
    full = train.stateful(params, mask, keys, data, 0, 60)
    a = train.stateful(params, mask, keys, data, 0, 20)
    b = train.stateful(a.params, mask, keys, data, 20, 20, opt_state=a.opt_state, origin=0)
    c = train.stateful(b.params, mask, keys, data, 40, 20, opt_state=b.opt_state, origin=0)
    for x, y in zip(jax.tree.leaves((full.params, full.opt_state)), jax.tree.leaves((c.params, c.opt_state))):
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
    plain, _ = train(params, mask, keys, data, 0, 60)
    for x, y in zip(jax.tree.leaves(plain), jax.tree.leaves(full.params)):
        np.testing.assert_array_equal(x, y)
    # a fresh optimizer at step 40 (what a rewound ticket gets) is a different run
    fresh = train.stateful(b.params, mask, keys, data, 40, 20)
    assert not np.array_equal(fresh.params["fc1"]["kernel"], full.params["fc1"]["kernel"])


def test_each_ticket_has_its_own_data_order():
    params, mask, keys = _tickets(1)
    two = lambda t: jax.tree.map(lambda a: jnp.concatenate([a, a]), t)  # noqa: E731
    data, train = device_data(DS), _trainer()
    same, _ = train(two(params), two(mask), jnp.concatenate([keys, keys]), data, 0, 40)
    diff, _ = train(two(params), two(mask), jnp.stack([keys[0], jax.random.PRNGKey(99)]), data, 0, 40)
    k_same = same["fc1"]["kernel"]
    k_diff = diff["fc1"]["kernel"]
    np.testing.assert_array_equal(k_same[0], k_same[1])
    assert not np.array_equal(k_diff[0], k_diff[1])


def test_no_validation_set_gives_nan_val_curves():
    ds = DS._replace(x_val=DS.x_val[:0], y_val=DS.y_val[:0])
    params, mask, keys = _tickets(1)
    _, curves = _trainer()(params, mask, keys, device_data(ds), 0, 20)
    assert np.isnan(curves.val_loss).all() and np.isfinite(curves.test_loss).all()


def test_lr_schedule_warmup_and_drops():
    f = lr_schedule(TrainSpec(lr=0.1, lr_drops=(100, 200), lr_drop_factor=0.1, warmup_iterations=10))
    np.testing.assert_allclose([f(0), f(5), f(10), f(99), f(100), f(199), f(200)],
                               [0.0, 0.05, 0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-6)


def test_bad_lengths_raise():
    params, mask, keys = _tickets(1)
    with pytest.raises(ValueError, match="multiple of eval_every"):
        _trainer()(params, mask, keys, device_data(DS), 0, 30)
    with pytest.raises(ValueError, match="batch_size"):
        _trainer(batch_size=10_000, eval_every=20)(params, mask, keys, device_data(DS), 0, 20)


_PADDED_CHUNKS = """
import jax, numpy as np
from ltjax import data as D, masks, models
from ltjax.devices import pad_tickets, replicate, shard_tickets, ticket_mesh
from ltjax.train import TrainSpec, device_data, make_trainer
assert jax.local_device_count() == 4
ds = D.load("synthetic_mnist", validation_size=64)
model = models.mlp((32,), init="glorot_normal")
spec = TrainSpec(optimizer="adam", lr=1e-3, batch_size=16, eval_every=20)
keys = jax.random.split(jax.random.PRNGKey(0), 7)  # 7 tickets: padded to 8, 2 per device
params = models.run_init(jax.vmap(model.init), keys)
mask = jax.vmap(lambda p: masks.make_mask(p, model.is_prunable))(params)
mask = jax.tree.map(lambda m, k: jax.random.uniform(k, m.shape) < 0.5, mask,  # half pruned, per ticket
                    {n: {"kernel": jax.random.PRNGKey(i), "bias": None} for i, n in enumerate(mask)})
data = device_data(ds)
mesh = ticket_mesh(7)

def check(p, c, ref, exact):
    assert jax.tree.leaves(p)[0].shape[0] == 7
    for x, y, m in zip(jax.tree.leaves(p), jax.tree.leaves(ref[0]), jax.tree.leaves(mask, is_leaf=lambda a: a is None)):
        x, y = np.asarray(x), np.asarray(y)
        if m is not None:  # pruned weights exactly 0 in both programs
            assert (x[~np.asarray(m)] == 0).all() and (y[~np.asarray(m)] == 0).all()
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            # float32 reassociation: a batched matmul may sum in another order than the unbatched
            # one (~1 ulp per step); 40 Adam steps, whose normalized updates make small gradients'
            # rounding count, keep it to ~1e-5 relative, a few 1e-9 absolute on near-zero weights
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
    # the evaluation sums may round differently (1 ulp) in the batched program
    np.testing.assert_allclose(np.asarray(c.test_loss), np.asarray(ref[1].test_loss), rtol=1e-4 if not exact else 1e-6)

# all at once: each device vmaps its 2 tickets, which is what one device computes in 2-ticket
# chunks of the same padded stack (the 7th ticket's copy makes the last chunk a pair too): bitwise
padded = pad_tickets((params, mask, keys), 8)
pairs = make_trainer(model, spec, ds.mean, ds.std, ticket_chunk=2)(*padded, data, 0, 40)
pairs = jax.tree.map(lambda a: a[:7], pairs)
train = make_trainer(model, spec, ds.mean, ds.std, mesh=mesh)
check(*train(*shard_tickets((params, mask, keys), mesh), replicate(data, mesh), 0, 40), pairs, exact=True)
# per-device chunks of 1 against one device's unbatched loop: other shapes, so to rounding
ones = make_trainer(model, spec, ds.mean, ds.std, ticket_chunk=1)(params, mask, keys, data, 0, 40)
train = make_trainer(model, spec, ds.mean, ds.std, mesh=mesh, ticket_chunk=1)
check(*train(*shard_tickets((params, mask, keys), mesh), replicate(data, mesh), 0, 40), ones, exact=False)
"""


def test_padded_and_per_device_chunked_tickets_equal_one_device():
    """7 tickets on 4 forced host devices, padded to 8 inside the program. All at once (2 per
    device) they compute bitwise what one device computes in 2-ticket chunks of the padded
    stack: the same per-device program. In per-device chunks of 1 they agree to float rounding
    with one device's one-at-a-time loop (a degenerate batch axis is not the unbatched program on
    every CPU); pruned weights are exactly 0 in every program."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    subprocess.run([sys.executable, "-c", _PADDED_CHUNKS], check=True, env=env)


def test_ticket_memory_state_is_the_weights_mask_and_optimizer_state():
    from ltjax import memory
    from ltjax.train import make_optimizer

    model = models.mlp((30, 20), init="glorot_normal")
    spec = TrainSpec(optimizer="adam", lr=1e-3, batch_size=16, eval_every=10)
    params = model.init(jax.random.PRNGKey(0))
    mask = M.make_mask(params, model.is_prunable)
    expected = sum(np.asarray(a).nbytes for a in jax.tree.leaves((params, mask, make_optimizer(spec).init(params))))
    mem = memory.ticket_memory(model, spec)
    assert mem["state"] == expected  # float32 weights, bool mask, Adam's two moments and its count
    assert mem["temporaries"] >= 0 and mem["total"] == mem["state"] + mem["temporaries"]
