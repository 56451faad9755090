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

import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import PartitionSpec

from ltjax import data as D
from ltjax.data.augment import augment
from ltjax.data.order import batch_indices
from ltjax.data.stream import HostData, Prefetcher, eval_batches, read_eval
from ltjax.devices import AXIS, DATA, data_devices, pad_tickets, padded_count, shard_tickets
from ltjax.masks import apply_mask

PyTree = Any
OPTIMIZERS = ("sgd", "momentum", "adam")
HYPER = ("lr", "weight_decay")  # what may vary per ticket of one program (see make_trainer's ``hyper``)
EVAL_BATCH = 1000


class TrainSpec(NamedTuple):
    """Everything about how one ticket trains (hashable: it keys compiled-program caches).

    ``optimizer`` is a name (``sgd | momentum | adam``, with ``lr``, ``momentum``,
    ``weight_decay`` and the schedule fields), or your own optax optimizer: a factory
    ``f(learning_rate) -> GradientTransformation`` called with the learning-rate schedule
    (``schedule``, default the one built from ``lr``, ``lr_drops`` and ``warmup_iterations``)
    already offset to the ticket's first iteration, so a ticket rewound to k continues the
    schedule at k; or a ready ``GradientTransformation``, used as is (its own step count
    starts at 0 for every fresh optimizer). ``loss(logits, labels) -> per-example loss``
    replaces the default (softmax cross-entropy; sigmoid BCE for one output).
    """

    optimizer: str | Callable | optax.GradientTransformation = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_drops: tuple[int, ...] = ()  # iterations at which lr is multiplied by lr_drop_factor
    lr_drop_factor: float = 0.1
    warmup_iterations: int = 0
    batch_size: int = 60
    eval_every: int = 100
    augment: str = "none"  # on-device training augmentation (ltjax.data.augment), keyed per ticket and step
    schedule: Callable | None = None  # learning rate at a global iteration (for a factory ``optimizer``)
    loss: Callable | None = None  # (logits, labels) -> per-example loss


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


def lr_schedule(spec: TrainSpec, lr=None) -> optax.Schedule:
    """Learning rate at a global iteration: ``spec.schedule`` if given, else linear warmup to
    ``lr`` (default ``spec.lr``; in a sweep, the ticket's traced value), then step drops."""
    if spec.schedule is not None:
        return spec.schedule
    lr = spec.lr if lr is None else lr
    drops = {int(t): spec.lr_drop_factor for t in spec.lr_drops}
    sched = optax.piecewise_constant_schedule(lr, drops) if drops else optax.constant_schedule(lr)
    if spec.warmup_iterations:
        warm = optax.linear_schedule(0.0, lr, spec.warmup_iterations)
        return lambda t: jnp.where(t < spec.warmup_iterations, warm(t), sched(t))
    return sched


def make_optimizer(spec: TrainSpec, start_step=0, hyper: dict | None = None,
                   hold_lr=None) -> optax.GradientTransformation:
    """The optimizer of a ticket whose first iteration is ``start_step``.

    By name: SGD, SGD with momentum (heavy ball, PyTorch convention) or Adam; weight decay is
    L2 added to the gradient before the optimizer (PyTorch's ``weight_decay``), so it is
    masked like the gradient. A factory is called with the schedule offset by
    ``start_step``; a ``GradientTransformation`` is returned as is (see :class:`TrainSpec`).
    ``hyper``: this ticket's own ``lr`` and ``weight_decay`` (scalars, traced in a sweep) in
    place of the spec's (see :func:`check_hyper`). ``hold_lr``: an iteration whose learning
    rate every step uses (fine-tuning at the schedule's final rate), instead of the schedule.
    """
    hyper = hyper or {}
    if isinstance(spec.optimizer, optax.GradientTransformation):
        return spec.optimizer
    sched = lr_schedule(spec, hyper.get("lr"))
    lr = (lambda count: sched(count + start_step)) if hold_lr is None else (lambda count: sched(hold_lr))
    if callable(spec.optimizer):
        opt = spec.optimizer(lr)
        if not isinstance(opt, optax.GradientTransformation):
            raise TypeError(f"optimizer factory {spec.optimizer!r} returned {type(opt).__name__}; it must return "
                            f"an optax.GradientTransformation, e.g. lambda lr: optax.adamw(lr, weight_decay=1e-4)")
        return opt
    if spec.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {spec.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}, "
                         f"or an optax optimizer factory lr -> GradientTransformation")
    if spec.optimizer == "sgd":
        core = optax.sgd(lr)
    elif spec.optimizer == "momentum":
        core = optax.sgd(lr, momentum=spec.momentum)
    else:
        core = optax.adam(lr)
    if spec.weight_decay or "weight_decay" in hyper:
        return optax.chain(optax.add_decayed_weights(hyper.get("weight_decay", spec.weight_decay)), core)
    return core


def check_hyper(spec: TrainSpec, hyper: dict | None, tickets: int) -> dict | None:
    """Per-ticket hyperparameters as float32 vectors of one value per ticket, or a clear error.

    ``lr`` replaces ``spec.lr`` in the schedule ltjax builds (warmup, step drops), so it needs
    that schedule (not your own); ``weight_decay`` is the named optimizers' L2 term. Each ticket
    computes what a run with its value as ``spec``'s constant computes (tested bitwise against
    programs of the same shape)."""
    if not hyper:
        return None
    unknown = sorted(set(hyper) - set(HYPER))
    if unknown:
        raise ValueError(f"unknown per-ticket hyperparameters {unknown}; what may vary per ticket: {', '.join(HYPER)} "
                         f"(initialization std: ltjax.models.init_with_std)")
    for k, v in hyper.items():
        if jnp.shape(v) != (tickets,):
            raise ValueError(f"hyper[{k!r}] must hold one value per ticket, shape ({tickets},); "
                             f"got shape {jnp.shape(v)}")
    ready = isinstance(spec.optimizer, optax.GradientTransformation)
    if "lr" in hyper and (spec.schedule is not None or ready):
        raise ValueError("hyper['lr'] is the peak of the schedule ltjax builds from lr, lr_drops and "
                         "warmup_iterations; with your own schedule (or a ready GradientTransformation) put each learning rate in it")
    if "weight_decay" in hyper and not isinstance(spec.optimizer, str):
        raise ValueError("hyper['weight_decay'] is the named optimizers' L2 term; with your own optimizer, give its "
                         "weight decay to it (e.g. optax.adamw's weight_decay)")
    return {k: jnp.asarray(v, jnp.float32) for k, v in hyper.items()}


def correct(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example correctness: argmax, or the sign of a single logit."""
    if logits.shape[-1] == 1:
        return (logits[..., 0] > 0) == (y == 1)
    return jnp.argmax(logits, -1) == y


def default_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example loss: softmax cross-entropy, or sigmoid BCE for 1 output."""
    if logits.shape[-1] == 1:
        z = logits[..., 0]
        return optax.sigmoid_binary_cross_entropy(z, y.astype(z.dtype))
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def loss_and_correct(logits: jax.Array, y: jax.Array, loss: Callable | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-example loss (``loss`` or :func:`default_loss`) and correctness."""
    per_example = (loss or default_loss)(logits, y)
    if per_example.shape != y.shape:
        raise ValueError(f"loss must return one value per example, shape {y.shape}; got shape {per_example.shape} "
                         f"(return the per-example values, not their mean)")
    return per_example, correct(logits, y)


class TrainOutput(NamedTuple):
    """What :func:`make_trainer`'s ``train.stateful`` returns (leading ticket axis on each)."""

    params: PyTree
    curves: Curves
    opt_state: PyTree  # pass back in to continue training exactly where this call stopped
    mask: PyTree  # the mask at the end (changes only with a ``mask_update``)


class TrainState(NamedTuple):
    """One ticket in training. ``params`` are the trained weights (always ``⊙ mask``);
    ``model_state`` what the forward pass updates itself (batch-norm running statistics),
    kept apart from the optimizer; ``step`` the global iteration the next step runs."""

    params: PyTree
    model_state: dict
    opt_state: PyTree
    mask: PyTree
    step: jax.Array
    rng: jax.Array  # split(ticket key): [1] keys augmentation, [0] dropout, folded with the iteration


class Batch(NamedTuple):
    x: jax.Array
    y: jax.Array


def make_train_step(model, spec: TrainSpec, opt: optax.GradientTransformation, mean, std,
                    mask_update: Callable | None = None) -> Callable:
    """``train_step(state, batch) -> (state, (loss, accuracy))``: one masked optimizer step.

    Gradients and updates are multiplied by the mask, so pruned weights stay exactly 0
    (bitwise) and no per-step multiply of the weights is needed. ``mask_update(t, params,
    mask) -> mask`` (unsplit params), if given, runs first; what it prunes is zeroed at once.
    """
    def batch_loss(params, model_state, x, y, rng):
        logits, new_state = model.forward_train(params, model_state, D.normalize(x, mean, std), rng)
        loss, ok = loss_and_correct(logits, y, spec.loss)
        return jnp.mean(loss), (jnp.mean(ok.astype(jnp.float32)), new_state)

    def train_step(state: TrainState, batch: Batch):
        params, mask, t = state.params, state.mask, state.step
        if mask_update is not None:
            full = mask_update(t, model.merge(params, state.model_state), _merge_mask(model, mask, state.model_state))
            mask = model.split(full)[0]
            params = apply_mask(params, mask)
        x = augment(spec.augment, jax.random.fold_in(state.rng[1], t), batch.x)
        rng = jax.random.fold_in(state.rng[0], t) if model.rngs else None
        (loss, (acc, model_state)), grads = jax.value_and_grad(batch_loss, has_aux=True)(
            params, state.model_state, x, batch.y, rng)
        updates, opt_state = opt.update(apply_mask(grads, mask), state.opt_state, params)
        params = apply_mask(optax.apply_updates(params, updates), mask)
        return TrainState(params, model_state, opt_state, mask, t + 1, state.rng), (loss, acc)

    return train_step


def _merge_mask(model, mask, model_state):
    """The whole-tree mask of a weights mask: ``None`` on the model state."""
    return model.merge(mask, jax.tree.map(lambda _: None, model_state))


def evaluate(forward: Callable, params: PyTree, x, y, w, loss: Callable | None = None):
    """Weighted mean loss and accuracy of ``forward(params, x)`` over a padded set, in
    batches of at most :data:`EVAL_BATCH` (NaN for an empty set)."""
    if x.shape[0] == 0:
        return jnp.float32(jnp.nan), jnp.float32(jnp.nan)
    b = min(EVAL_BATCH, x.shape[0])
    xs = x.reshape(-1, b, *x.shape[1:])
    ys, ws = y.reshape(-1, b), w.reshape(-1, b)

    def one(args):
        xb, yb, wb = args
        per_example, ok = loss_and_correct(forward(params, xb), yb, loss)
        return jnp.sum(per_example * wb), jnp.sum(ok * wb)

    losses, oks = lax.map(one, (xs, ys, ws))
    n = jnp.sum(w)
    return jnp.sum(losses) / n, jnp.sum(oks) / n


def make_segments(model, spec: TrainSpec, mean, std, progress=None, mask_update=None,
                  place_batch: Callable[[jax.Array], jax.Array] = lambda a: a) -> Callable:
    """``train_one(params, mask, key, opt_state, hyper, data, start_step, num_steps, origin,
    hold_lr=None) -> TrainOutput`` for one ticket: ``num_steps // eval_every`` scanned segments of
    :func:`make_train_step`, each followed by validation and test evaluation in the same program.
    ``place_batch`` is applied to each minibatch's images and labels (a sharding constraint that
    splits them over a ``data`` mesh axis)."""
    B, E = spec.batch_size, spec.eval_every

    def forward(params, x):
        return model.apply(params, D.normalize(x, mean, std))

    def train_one(params, mask, key, opt_state, hyper, data: DeviceData, start_step, num_steps, origin,
                  hold_lr=None):
        n = data.x_train.shape[0]
        opt = make_optimizer(spec, start_step if origin is None else origin, hyper, hold_lr)
        step = make_train_step(model, spec, opt, mean, std, mask_update)

        def segment(state, c):
            ts = start_step + c * E + jnp.arange(E, dtype=jnp.int32)
            # the E batches' indices at once, outside the step loop: integer work vectorized over
            # the segment rather than a few scalar operations (and a loop) inside every step
            idxs = jax.vmap(lambda t: batch_indices(key, n, B, t))(ts)
            state, (losses, accs) = lax.scan(
                lambda s, i: step(s, Batch(place_batch(data.x_train[i]), place_batch(data.y_train[i]))), state, idxs)
            trained = model.merge(state.params, state.model_state)
            val = evaluate(forward, trained, data.x_val, data.y_val, data.w_val, spec.loss)
            test = evaluate(forward, trained, data.x_test, data.y_test, data.w_test, spec.loss)
            done = (c + 1) * E
            if progress is not None:
                jax.debug.callback(progress, done)
            return state, Curves(start_step + done, jnp.mean(losses), jnp.mean(accs), *val, *test)

        weights, model_state = model.split(apply_mask(params, mask))
        wmask = model.split(mask)[0]
        # the keys are independent of the data-order keys fold_in(key, epoch)
        state = TrainState(weights, model_state, opt.init(weights) if opt_state is None else opt_state, wmask,
                           jnp.asarray(start_step, jnp.int32), jax.random.split(key))
        state, curves = lax.scan(segment, state, jnp.arange(num_steps // E, dtype=jnp.int32))
        return TrainOutput(model.merge(state.params, state.model_state), curves, state.opt_state,
                           _merge_mask(model, state.mask, state.model_state))

    return train_one


def make_streamed(model, spec: TrainSpec, mean, std, progress=None, ticket_chunk=None, mask_update=None,
                  mesh=None, place: Callable = lambda a: a) -> Callable:
    """The trainer's form for :class:`~ltjax.data.stream.HostData`: what :func:`make_segments`
    computes, with the minibatches read on the host in the same order (the indices are
    :func:`~ltjax.data.order.batch_indices` of each ticket's key and iteration) and fed to a
    compiled program of a few iterations at a time, the evaluation sets in batches of
    :data:`EVAL_BATCH`; a :class:`~ltjax.data.stream.Prefetcher` reads ahead while the device
    trains. Returns a :class:`TrainOutput`."""
    B, E = spec.batch_size, spec.eval_every
    tickets = lambda one, args, *shared: map_tickets(one, args, ticket_chunk, mesh, shared)  # noqa: E731
    opt_of = lambda origin, h, hold: make_optimizer(spec, origin, h, hold)  # noqa: E731

    @jax.jit
    def init(params, mask, key, opt_state, hyper, start, origin, hold_lr):
        def one(a, start, origin, hold_lr):
            p, m, k, o, h = a
            w, ms = model.split(apply_mask(p, m))
            o = opt_of(origin, h, hold_lr).init(w) if o is None else o
            return TrainState(w, ms, o, model.split(m)[0], jnp.asarray(start, jnp.int32), jax.random.split(k))
        return tickets(one, (params, mask, key, opt_state, hyper), start, origin, hold_lr)

    @jax.jit
    def steps(state, xs, key, ys, hyper, origin, hold_lr):
        def one(a, origin, hold_lr):
            st, x, _, y, h = a
            step = make_train_step(model, spec, opt_of(origin, h, hold_lr), mean, std, mask_update)
            return lax.scan(lambda s, b: step(s, Batch(place(b[0]), place(b[1]))), st, (x, y))
        return tickets(one, (state, xs, key, ys, hyper), origin, hold_lr)

    @jax.jit
    def evaluate_batch(state, key, x, y, w):
        def one(a, x, y, w):
            trained = model.merge(a[0].params, a[0].model_state)
            per_example, ok = loss_and_correct(model.apply(trained, D.normalize(x, mean, std)), y, spec.loss)
            return jnp.sum(per_example * w), jnp.sum(ok * w)
        return tickets(one, (state, None, key), x, y, w)

    @jax.jit
    def finish(state):
        return model.merge(state.params, state.model_state), _merge_mask(model, state.mask, state.model_state)

    indices = jax.jit(lambda keys, ts, n: jax.vmap(lambda k: jax.vmap(lambda t: batch_indices(k, n, B, t))(ts))(keys),
                      static_argnums=2)

    def run(params, mask, key, opt_state, hyper, data: HostData, start_step, num_steps, origin, hold_lr):
        t_begin = time.perf_counter()
        T = key.shape[0]
        s, evals, jobs, make = _stream_plan(data, key, indices, start_step, num_steps, E, B, mesh)
        org = jnp.int32(start_step if origin is None else origin)
        hold = None if hold_lr is None else jnp.int32(hold_lr)
        state = init(params, mask, key, opt_state, hyper, jnp.int32(start_step), org, hold)
        curves = []
        with Prefetcher(jobs, make, data.prefetch, data.stats) as feed:
            for c in range(num_steps // E):
                losses, accs = [], []
                for _ in range(E // s):
                    xs, ys = next(feed)
                    state, (lo, ac) = steps(state, xs, key, ys, hyper, org, hold)
                    losses.append(lo)
                    accs.append(ac)
                row = [jnp.int32(start_step + (c + 1) * E), jnp.mean(jnp.concatenate(losses, 1), 1),
                       jnp.mean(jnp.concatenate(accs, 1), 1)]
                for x, _, spans in evals:
                    sums = [evaluate_batch(state, key, *next(feed)) for _ in spans]
                    if not sums:
                        row += [jnp.full(T, jnp.nan, jnp.float32)] * 2
                        continue
                    total = jnp.float32(len(x))
                    row += [jnp.sum(jnp.stack([a for a, _ in sums], 1), 1) / total,
                            jnp.sum(jnp.stack([b for _, b in sums], 1), 1) / total]
                if progress is not None:
                    progress((c + 1) * E)
                curves.append(row)
        params_out, mask_out = finish(state)
        stacked = Curves(*(jnp.stack([jnp.broadcast_to(r[i], (T,)) for r in curves], 1) for i in range(7)))
        data.stats["seconds"] += time.perf_counter() - t_begin
        return TrainOutput(params_out, stacked, state.opt_state, mask_out)

    return run


def _stream_plan(data: HostData, key, indices: Callable, start_step: int, num_steps: int, E: int, B: int, mesh):
    """What a streamed call reads, in order: ``s`` iterations per transfer (the most, dividing
    ``E``, whose images stay under ``data.chunk_bytes``), each evaluation set's batch spans,
    the jobs (train chunks, then after every ``E`` iterations the evaluation batches) and
    ``make(job)``, which reads one job's arrays on the host and puts them on the device."""
    T, n = key.shape[0], len(data.x_train)
    per_step = T * B * data.item_bytes()
    s = max([d for d in range(1, E + 1) if E % d == 0 and d * per_step <= data.chunk_bytes] or [1])
    evals = [(x, y, eval_batches(x, EVAL_BATCH)) for x, y in ((data.x_val, data.y_val),
                                                                    (data.x_test, data.y_test))]
    jobs = []
    for c in range(num_steps // E):
        jobs += [("train", start_step + c * E + i * s) for i in range(E // s)]
        jobs += [("eval", j, b, e) for j, (_, _, spans) in enumerate(evals) for b, e in spans]
    put = (lambda a: a) if mesh is None else (lambda a: shard_tickets(a, mesh))  # noqa: E731

    def make(job):
        if job[0] == "train":
            idx = np.asarray(indices(key, job[1] + jnp.arange(s, dtype=jnp.int32), n))
            x = np.asarray(data.x_train[idx.reshape(-1)]).reshape(*idx.shape, *data.x_train.shape[1:])
            return put(jnp.asarray(x)), put(jnp.asarray(data.y_train[idx]))
        x, y, _ = evals[job[1]]
        return jax.device_put(read_eval(x, y, job[2], job[3], min(EVAL_BATCH, len(x))))

    return s, evals, jobs, make


def map_tickets(one: Callable, args: tuple, ticket_chunk: int | None = None, mesh=None, shared: tuple = ()):
    """``one(a, *shared)`` over the leading ticket axis of ``args`` (``args[2]`` are the keys):
    vmapped, in chunks of ``ticket_chunk`` one after another, or spread over ``mesh``'s devices
    (padded to a multiple of them with copies of the last ticket, the copies dropped from the
    outputs). ``shared``: arrays every ticket reads whole (the data), passed rather than closed
    over so that each device of a mesh gets them as its own."""
    if mesh is None or mesh.devices.size == 1:
        return _dispatch(lambda a: one(a, *shared), args, ticket_chunk)
    return _map_on_mesh(one, args, ticket_chunk, mesh, shared)


def _map_on_mesh(one: Callable, args: tuple, ticket_chunk: int | None, mesh, shared: tuple):
    T = args[2].shape[0]
    Tp = padded_count(T, mesh)
    # Each device maps ``one`` over its own tickets (shard_map, manual over the ticket axis), so
    # a device runs one device's program for its share of the stack (the per-ticket
    # convolutions of conv_same, chunks within the device) and nothing crosses devices. A
    # ``data`` axis stays automatic: the batch's sharding constraint inside splits each ticket's
    # minibatch over it and GSPMD reduces the gradient over it.
    local = jax.shard_map(lambda a, sh: _dispatch(lambda x: one(x, *sh), a, ticket_chunk), mesh=mesh,
                          in_specs=(PartitionSpec(AXIS), PartitionSpec()), out_specs=PartitionSpec(AXIS),
                          axis_names=frozenset({AXIS}), check_vma=False)
    out = local(pad_tickets(args, Tp), shared)
    return jax.tree.map(lambda a: a[:T], out)


def _dispatch(one: Callable, args: tuple, ticket_chunk: int | None):
    T = args[2].shape[0]
    if T == 1:  # one ticket: the unbatched program (XLA:CPU's batched matmuls are slower)
        out = one(jax.tree.map(lambda a: a[0], args))
        return jax.tree.map(lambda a: a[None], out)
    if ticket_chunk == 1:  # plain loop: no batch axis at all
        return lax.map(one, args)
    if ticket_chunk and ticket_chunk < T:
        return lax.map(one, args, batch_size=ticket_chunk)  # vmapped within a chunk
    return jax.vmap(one)(args)


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
    on the device together. Every ticket computes the same function either way.

    ``mask_update(t, params, mask) -> mask`` (one ticket's arrays), if given, runs before the
    gradient of every iteration ``t`` inside the compiled loop; the weights it prunes are
    zeroed at once and stay zero. Gradual pruning schedules use it (see :mod:`ltjax.early`).

    ``mesh`` (a :func:`ltjax.devices.ticket_mesh`) spreads the tickets over its devices inside
    the program (see :func:`map_tickets`). Without it the program follows its inputs' shardings.

    ``hold_lr`` (``train`` and ``stateful``): an iteration; every step then uses the learning
    rate the schedule gives there (a fine-tuned ticket: the schedule's last), while the data
    order still runs from ``start_step``.

    ``hyper`` (``train`` and ``stateful``): ``{"lr": (T,), "weight_decay": (T,)}``, each ticket's
    own value (:data:`HYPER`, checked by :func:`check_hyper`), traced, so a learning-rate or
    weight-decay sweep is one program; each ticket computes what a run with its value as the
    spec's constant computes.
    """
    B, E = spec.batch_size, spec.eval_every
    if ticket_chunk is not None and ticket_chunk < 1:
        raise ValueError(f"ticket_chunk must be a positive number of tickets or None (all at once), got {ticket_chunk}")
    k = data_devices(mesh)
    if B % k:
        raise ValueError(f"batch_size={B} must be a multiple of the mesh's {k} data devices, which split each "
                         f"ticket's minibatch")
    # inside map_tickets' shard_map (manual over tickets) a bare spec names the data axis of its mesh
    place = (lambda a: a) if k == 1 else (lambda a: lax.with_sharding_constraint(a, PartitionSpec(DATA)))
    train_one = make_segments(model, spec, mean, std, progress, mask_update, place)
    streamed = make_streamed(model, spec, mean, std, progress, ticket_chunk, mask_update, mesh, place)

    def tickets(params, mask, key, opt_state, hyper, data, start_step, num_steps, origin, hold_lr):
        one = lambda a, d, s, o, h: train_one(*a, d, s, num_steps, o, h)  # noqa: E731
        return map_tickets(one, (params, mask, key, opt_state, hyper), ticket_chunk, mesh,
                           (data, start_step, origin, hold_lr))

    def check(key, data, num_steps, hyper):
        if num_steps % E:
            raise ValueError(f"num_steps={num_steps} must be a multiple of eval_every={E}")
        if data.x_train.shape[0] < B:
            raise ValueError(f"batch_size={B} exceeds the {data.x_train.shape[0]} training examples")
        return check_hyper(spec, hyper, key.shape[0])

    jitted = jax.jit(lambda p, m, k, h, d, s, n, lr: tickets(p, m, k, None, h, d, s, n, None, lr)[:2],
                     static_argnums=(6,))
    jitted_stateful = jax.jit(tickets, static_argnums=(7,))
    as_int = lambda t: None if t is None else jnp.int32(t)  # noqa: E731  (traced: one program for every value)

    def train(params, mask, key, data: DeviceData, start_step: int, num_steps: int, hyper: dict | None = None,
              hold_lr: int | None = None):
        hyper = check(key, data, num_steps, hyper)
        if isinstance(data, HostData):
            return streamed(params, mask, key, None, hyper, data, start_step, num_steps, None, hold_lr)[:2]
        return jitted(params, mask, key, hyper, data, jnp.int32(start_step), int(num_steps), as_int(hold_lr))

    def stateful(params, mask, key, data: DeviceData, start_step: int, num_steps: int, opt_state=None,
                 origin: int | None = None, hyper: dict | None = None, hold_lr: int | None = None) -> TrainOutput:
        hyper = check(key, data, num_steps, hyper)
        if isinstance(data, HostData):
            return streamed(params, mask, key, opt_state, hyper, data, start_step, num_steps, origin, hold_lr)
        return TrainOutput(*jitted_stateful(params, mask, key, opt_state, hyper, data, jnp.int32(start_step),
                                            int(num_steps), as_int(origin), as_int(hold_lr)))

    train.stateful = stateful
    train.jitted = jitted  # (params, mask, key, hyper, data, start_step, num_steps, hold_lr): for lowering
    return train
