"""Masked training, fused into one compiled program per call.

``make_trainer(model, spec)`` returns ``train(params, mask, key, data, start_step,
num_steps)`` for a *stack* of T tickets (leading axis on params, mask and key; data is
shared). Inside it, for each ticket (``jax.vmap``):

* the batch for global iteration t is gathered on the device from the ticket's own data
  order: epoch ``e = t // steps_per_epoch`` is a pseudorandom permutation of the training
  set keyed by ``fold_in(key, e)`` (:mod:`ltjax.data.order`), the last partial batch of an
  epoch is dropped;
* the forward pass sees ``params ⊙ mask``: params are masked once on entry, and gradients
  and optimizer updates are multiplied by the mask at every step, so pruned weights stay
  exactly 0 (bitwise) and no per-step multiply of the weights is needed;
* every ``eval_every`` iterations, validation and test loss and accuracy are computed in
  the same program and recorded with the mean training loss of those iterations.

Iterations are counted globally: a ticket rewound to iteration k trains ``start_step=k``
to ``k + num_steps`` and sees the batches and learning rate of those iterations.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from ltjax import data as D
from ltjax.data.augment import augment
from ltjax.data.order import batch_indices
from ltjax.devices import constrain_tickets, pad_tickets, padded_count
from ltjax.masks import apply_mask
from ltjax.models import STATE

PyTree = Any
OPTIMIZERS = ("sgd", "momentum", "adam")
EVAL_BATCH = 1000


class TrainSpec(NamedTuple):
    """Everything about how one ticket trains (hashable: it keys compiled-program caches)."""

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_drops: tuple[int, ...] = ()  # iterations at which lr is multiplied by lr_drop_factor
    lr_drop_factor: float = 0.1
    warmup_iterations: int = 0
    batch_size: int = 60
    eval_every: int = 100
    augment: str = "none"  # on-device training augmentation (ltjax.data.augment), keyed per ticket and step


class DeviceData(NamedTuple):
    """Arrays on the device; eval sets padded to a multiple of the eval batch, with weights."""

    x_train: jax.Array
    y_train: jax.Array
    x_val: jax.Array
    y_val: jax.Array
    w_val: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    w_test: jax.Array


class Curves(NamedTuple):
    """Recorded every ``eval_every`` iterations; ``step`` is the global iteration just completed."""

    step: jax.Array
    train_loss: jax.Array  # mean minibatch loss over the last eval_every iterations
    train_acc: jax.Array  # mean minibatch accuracy over the same iterations (no extra pass)
    val_loss: jax.Array
    val_acc: jax.Array
    test_loss: jax.Array
    test_acc: jax.Array


def _pad(x: np.ndarray, y: np.ndarray):
    n = len(x)
    # A set smaller than one evaluation batch is one unpadded batch; larger sets are padded
    # to whole batches of EVAL_BATCH (padding carries weight 0).
    m = n if n <= EVAL_BATCH else -(-n // EVAL_BATCH) * EVAL_BATCH
    pad = m - n
    w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    y = np.concatenate([y, np.zeros(pad, y.dtype)])
    return x, y, w


def device_data(ds: D.Dataset, sharding=None) -> DeviceData:
    """Put a :class:`~ltjax.data.Dataset` on the device (replicated when ``sharding`` is given)."""
    arrays = DeviceData(ds.x_train, ds.y_train, *_pad(ds.x_val, ds.y_val), *_pad(ds.x_test, ds.y_test))
    return jax.device_put(arrays, sharding)


def lr_schedule(spec: TrainSpec) -> optax.Schedule:
    """Learning rate at a global iteration: linear warmup, then step drops."""
    drops = {int(t): spec.lr_drop_factor for t in spec.lr_drops}
    sched = optax.piecewise_constant_schedule(spec.lr, drops) if drops else optax.constant_schedule(spec.lr)
    if spec.warmup_iterations:
        warm = optax.linear_schedule(0.0, spec.lr, spec.warmup_iterations)
        return lambda t: jnp.where(t < spec.warmup_iterations, warm(t), sched(t))
    return sched


def make_optimizer(spec: TrainSpec, start_step=0) -> optax.GradientTransformation:
    """SGD, SGD with momentum (heavy ball, PyTorch convention) or Adam.

    Weight decay is L2 added to the gradient before the optimizer (PyTorch's
    ``weight_decay``), so it is masked like the gradient. ``start_step`` offsets the
    schedule, so a rewound ticket resumes the learning-rate schedule at iteration k.
    """
    if spec.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {spec.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    sched = lr_schedule(spec)
    lr = lambda count: sched(count + start_step)  # noqa: E731
    if spec.optimizer == "sgd":
        core = optax.sgd(lr)
    elif spec.optimizer == "momentum":
        core = optax.sgd(lr, momentum=spec.momentum)
    else:
        core = optax.adam(lr)
    if spec.weight_decay:
        return optax.chain(optax.add_decayed_weights(spec.weight_decay), core)
    return core


def loss_and_correct(logits: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-example loss and correctness: softmax cross-entropy, or sigmoid BCE for 1 output."""
    if logits.shape[-1] == 1:
        z = logits[..., 0]
        loss = optax.sigmoid_binary_cross_entropy(z, y.astype(z.dtype))
        return loss, (z > 0) == (y == 1)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return loss, jnp.argmax(logits, -1) == y


class TrainOutput(NamedTuple):
    """What :func:`make_trainer`'s ``train.stateful`` returns (leading ticket axis on each)."""

    params: PyTree
    curves: Curves
    opt_state: PyTree  # pass back in to continue training exactly where this call stopped
    mask: PyTree  # the mask at the end (changes only with a ``mask_update``)


def make_trainer(
    model, spec: TrainSpec, mean: tuple[float, ...], std: tuple[float, ...],
    progress: Callable[[int], None] | None = None, ticket_chunk: int | None = None,
    mask_update: Callable[[jax.Array, PyTree, PyTree], PyTree] | None = None, mesh=None,
):
    """Build ``train(params, mask, key, data, start_step, num_steps) -> (params, Curves)``.

    Arguments carry a leading ticket axis T (params, mask, key); ``data`` is a shared
    :class:`DeviceData`; ``num_steps`` must be a multiple of ``spec.eval_every`` and is
    static (one compilation per distinct value). ``progress(iterations_done)`` is called
    from inside the program after each evaluation, for progress bars; with chunks it counts
    from 0 again for each chunk.

    ``train.stateful(params, mask, key, data, start_step, num_steps, opt_state=None,
    origin=None) -> TrainOutput`` also returns the optimizer state and final mask, and takes
    them back: a training run split into calls that pass ``opt_state`` on, with ``origin`` =
    the first call's ``start_step`` (where the learning-rate schedule and the optimizer's own
    step count began), computes what one call computes. Without ``opt_state`` a call starts a
    fresh optimizer at ``start_step``, as a rewound ticket does.

    ``ticket_chunk=k`` trains the tickets in chunks of k, one chunk after another inside the
    same compiled program (``lax.map`` with ``batch_size=k``), vmapped within a chunk; the
    default vmaps all T at once. Chunks bound the memory of a study whose tickets do not fit
    on the device together, and ``k=1`` avoids batched convolutions, which XLA:CPU runs as
    slow grouped convolutions. Every ticket computes the same function either way.

    ``mask_update(t, params, mask) -> mask`` (one ticket's arrays), if given, runs before the
    gradient of every iteration ``t`` inside the compiled loop; the weights it prunes are
    zeroed at once and stay zero. Gradual pruning schedules use it (see :mod:`ltjax.early`).

    ``mesh`` (a :func:`ltjax.devices.ticket_mesh`) spreads the tickets over its devices inside
    the program: a ticket count the devices do not divide is padded with copies of the last
    ticket to the next multiple, trained sharded, and the copies dropped from the outputs.
    Without it the program follows its inputs' shardings.
    """
    B, E = spec.batch_size, spec.eval_every
    if ticket_chunk is not None and ticket_chunk < 1:
        raise ValueError(f"ticket_chunk must be a positive number of tickets or None (all at once), got {ticket_chunk}")

    # Params enter masked (train_one applies the mask once) and every update is masked, so
    # the weights the forward pass sees are always exactly params ⊙ mask: no per-step multiply.
    def forward(params, x):
        return model.apply(params, D.normalize(x, mean, std))

    def batch_loss(params, x, y):
        logits, new_params = model.apply_train(params, D.normalize(x, mean, std))
        loss, correct = loss_and_correct(logits, y)
        return jnp.mean(loss), (jnp.mean(correct.astype(jnp.float32)), new_params)

    def evaluate(params, x, y, w):
        if x.shape[0] == 0:
            return jnp.float32(jnp.nan), jnp.float32(jnp.nan)
        b = min(EVAL_BATCH, x.shape[0])
        xs = x.reshape(-1, b, *x.shape[1:])
        ys, ws = y.reshape(-1, b), w.reshape(-1, b)

        def one(args):
            xb, yb, wb = args
            loss, correct = loss_and_correct(forward(params, xb), yb)
            return jnp.sum(loss * wb), jnp.sum(correct * wb)

        loss, correct = lax.map(one, (xs, ys, ws))
        n = jnp.sum(w)
        return jnp.sum(loss) / n, jnp.sum(correct) / n

    def train_one(params, mask, key, opt_state, data: DeviceData, start_step, num_steps, origin):
        n = data.x_train.shape[0]
        opt = make_optimizer(spec, start_step if origin is None else origin)
        aug_key = jax.random.split(key)[1]  # independent of the data-order keys fold_in(key, epoch)

        def step(carry, t_idx):
            (params, opt_state, mask), (t, idx) = carry, t_idx
            if mask_update is not None:
                mask = mask_update(t, params, mask)
                params = apply_mask(params, mask)
            x = augment(spec.augment, jax.random.fold_in(aug_key, t), data.x_train[idx])
            (loss, (acc, stepped)), grads = jax.value_and_grad(batch_loss, has_aux=True)(params, x, data.y_train[idx])
            updates, opt_state = opt.update(apply_mask(grads, mask), opt_state, params)
            params = apply_mask(optax.apply_updates(params, updates), mask)
            if model.stateful:  # running statistics come from the forward pass, not the optimizer
                params = {**params, STATE: stepped[STATE]}
            return (params, opt_state, mask), (loss, acc)

        def chunk(carry, c):
            ts = start_step + c * E + jnp.arange(E, dtype=jnp.int32)
            # the E batches' indices at once, outside the step loop: integer work vectorized over
            # the segment rather than a few scalar operations (and a loop) inside every step
            idxs = jax.vmap(lambda t: batch_indices(key, n, B, t))(ts)
            carry, (losses, accs) = lax.scan(step, carry, (ts, idxs))
            val = evaluate(carry[0], data.x_val, data.y_val, data.w_val)
            test = evaluate(carry[0], data.x_test, data.y_test, data.w_test)
            done = (c + 1) * E
            if progress is not None:
                jax.debug.callback(progress, done)
            return carry, Curves(start_step + done, jnp.mean(losses), jnp.mean(accs), *val, *test)

        params = apply_mask(params, mask)
        carry = (params, opt.init(params) if opt_state is None else opt_state, mask)
        (params, opt_state, mask), curves = lax.scan(chunk, carry, jnp.arange(num_steps // E, dtype=jnp.int32))
        return TrainOutput(params, curves, opt_state, mask)

    def tickets(params, mask, key, opt_state, data, start_step, num_steps, origin):
        def one(args):
            return train_one(*args, data, start_step, num_steps, origin)

        args = (params, mask, key, opt_state)
        T = key.shape[0]
        if mesh is not None and mesh.devices.size > 1:
            n_dev, Tp = mesh.devices.size, padded_count(T, mesh)
            padded = pad_tickets(args, Tp)
            if ticket_chunk and ticket_chunk < Tp // n_dev:
                # chunk within each device: a (devices, tickets per device) split, the device axis
                # sharded, so every device maps over its own tickets (a map over the sharded axis
                # itself would run the devices one after another)
                split = constrain_tickets(jax.tree.map(lambda a: a.reshape(n_dev, Tp // n_dev, *a.shape[1:]), padded),
                                          mesh)
                out = jax.vmap(lambda a: dispatch(one, a))(split)
                out = jax.tree.map(lambda a: a.reshape(Tp, *a.shape[2:]), out)
            else:
                out = dispatch(one, constrain_tickets(padded, mesh))
            return jax.tree.map(lambda a: a[:T], out)
        return dispatch(one, args)

    def dispatch(one, args):
        T = args[2].shape[0]
        if T == 1:  # one ticket: the unbatched program (XLA:CPU's batched matmuls are slower)
            out = one(jax.tree.map(lambda a: a[0], args))
            return jax.tree.map(lambda a: a[None], out)
        if ticket_chunk == 1:  # plain loop: no batch axis at all
            return lax.map(one, args)
        if ticket_chunk and ticket_chunk < T:
            return lax.map(one, args, batch_size=ticket_chunk)  # vmapped within a chunk
        return jax.vmap(one)(args)

    def check(key, data, num_steps):
        if num_steps % E:
            raise ValueError(f"num_steps={num_steps} must be a multiple of eval_every={E}")
        if data.x_train.shape[0] < B:
            raise ValueError(f"batch_size={B} exceeds the {data.x_train.shape[0]} training examples")

    jitted = jax.jit(lambda p, m, k, d, s, n: tickets(p, m, k, None, d, s, n, None)[:2], static_argnums=(5,))
    jitted_stateful = jax.jit(tickets, static_argnums=(6,))

    def train(params, mask, key, data: DeviceData, start_step: int, num_steps: int):
        check(key, data, num_steps)
        return jitted(params, mask, key, data, jnp.int32(start_step), int(num_steps))

    def stateful(params, mask, key, data: DeviceData, start_step: int, num_steps: int, opt_state=None,
                 origin: int | None = None) -> TrainOutput:
        check(key, data, num_steps)
        return TrainOutput(*jitted_stateful(params, mask, key, opt_state, data, jnp.int32(start_step), int(num_steps),
                                            None if origin is None else jnp.int32(origin)))

    train.stateful = stateful
    return train
