"""Linear mode connectivity and instability (Frankle, Dziugaite, Roy & Carbin, ICML 2020,
"Linear Mode Connectivity and the Lottery Ticket Hypothesis", sec. 2 and Algorithm 1).

**Instability analysis** of a network ``W_k`` (the weights at iteration k, dense or under a
mask m): train two copies from ``W_k ⊙ m`` to the end of training (iteration T) under
different samples of SGD noise (each copy its own data order, and augmentation and dropout
keys; everything else equal), then evaluate the error of

    W(α) = (1 − α)·W1 + α·W2

at ``points`` evenly spaced α in [0, 1] (the paper uses 30; the default here is 31, so α = ½ is
one of them). The **instability** is the paper's *error barrier height*

    max_α E(W(α)) − ½ (E(W1) + E(W2)),

on the test set and on (a fixed subset of) the training set. A network is *stable* when it is
≈ 0 (the paper: within 2%); W1 and W2 are then *linearly mode connected*.

Copies start like a ticket rewound to ``θk`` (:mod:`ltjax.rounds`): the weights (and
batch-norm statistics) at k, a fresh optimizer state, the learning-rate schedule continuing at
k, data order from global iteration k on. Pruned weights stay exactly 0 in both copies, so
every point of the path has the mask's zeros.

**Batch norm.** Running statistics are not linear in the weights: W(α)'s own statistics are
recomputed at every α (interior points and both ends, so the path is measured one way) as the
mean over ``bn_batches`` training batches of each batch's statistics (what PyTorch's
``torch.optim.swa_utils.update_bn`` computes), the same batches at every α. It relies on the
running-average update of Flax's ``BatchNorm``, ``new = μ·old + (1 − μ)·batch`` (linear in
``old``), to read each batch's statistics without knowing μ. ``bn_batches=0`` interpolates the
two copies' running statistics instead (cheaper, and not what W(α) computes).

**One program.** :func:`analyze` trains every copy of every pair (pairs may differ in start,
mask and k) side by side (:func:`ltjax.train.map_tickets`: vmapped, in chunks or over a mesh;
a copy whose k is later than another's stops at T and waits), then evaluates every pair's path
with α vmapped, all in one compiled program. :func:`spawn_points` trains the network to each k
in the same way (one truncated copy of the trajectory per k), so "instability versus k" is one
call of :func:`versus_k`. :func:`run_pairs` gives the pairs of an IMP / LTR run's rounds.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ltjax import data as D
from ltjax.data.order import batch_indices
from ltjax.masks import apply_mask, make_mask
from ltjax.train import (EVAL_BATCH, Batch, DeviceData, TrainSpec, TrainState, device_data, evaluate, make_optimizer,
                         make_train_step, map_tickets)

PyTree = Any


class Instability(NamedTuple):
    """What :func:`analyze` measured; P pairs, A = ``points`` values of α."""

    alphas: np.ndarray  # (A,) evenly spaced in [0, 1]
    test_error: np.ndarray  # (P, A) test error of W(α), in [0, 1]
    test_loss: np.ndarray  # (P, A) mean test loss of W(α)
    train_error: np.ndarray  # (P, A) error on the first ``train_examples`` training examples
    test_instability: np.ndarray  # (P,) error barrier height on the test set
    train_instability: np.ndarray  # (P,) the same on the training subset
    copies: PyTree  # (P, 2, …) the trained copies W1, W2 of each pair

    def summary(self) -> list[dict]:
        """One plain dict per pair (JSON-able): instabilities and the endpoints' test errors."""
        return [dict(test_instability=float(self.test_instability[p]),
                     train_instability=float(self.train_instability[p]),
                     test_error_ends=[float(self.test_error[p, 0]), float(self.test_error[p, -1])],
                     test_error_max=float(self.test_error[p].max()))
                for p in range(len(self.test_instability))]


def interpolate(a: PyTree, b: PyTree, alpha) -> PyTree:
    """``(1 − α)·a + α·b`` leaf by leaf, exactly ``a`` at α = 0 and exactly ``b`` at α = 1 (bitwise,
    signed zeros included), so both ends of a path are the trained copies themselves."""
    def mix(x, y):
        return jnp.where(alpha == 0, x, jnp.where(alpha == 1, y, (1 - alpha) * x + alpha * y)).astype(x.dtype)

    return jax.tree.map(mix, a, b)


def error_barrier(errors: jax.Array) -> jax.Array:
    """``max_α E(α) − ½ (E(0) + E(1))`` over the last axis (α ascending from 0 to 1)."""
    errors = jnp.asarray(errors)
    return jnp.max(errors, axis=-1) - 0.5 * (errors[..., 0] + errors[..., -1])


def batch_statistics(model, weights: PyTree, state: dict, xs: jax.Array, rng: jax.Array | None = None) -> dict:
    """The model state (batch-norm running statistics) of ``weights``: the mean over the batches
    ``xs`` (``(N, B, …)``, already normalized) of each batch's own statistics, in ``state``'s tree.

    Each batch's statistics come from one training-mode pass with the running statistics set to
    0 (giving ``(1 − μ)·batch``); ``1 − μ`` itself from one pass with them set to 1
    (``μ + (1 − μ)·batch``), so any momentum μ works."""
    if not state:
        return state
    zeros = jax.tree.map(jnp.zeros_like, state)
    ones = jax.tree.map(jnp.ones_like, state)
    scaled = lax.map(lambda x: model.forward_train(weights, zeros, x, rng)[1], xs)
    first = jax.tree.map(lambda a: a[0], scaled)
    shifted = model.forward_train(weights, ones, xs[0], rng)[1]
    return jax.tree.map(lambda s, f, o: jnp.mean(s, axis=0) / (1 - (o - f)), scaled, first, shifted)


def train_copies(model, spec: TrainSpec, mean, std, params: PyTree, masks: PyTree, keys: jax.Array,
                 starts: jax.Array, stops: jax.Array, length: int, data: DeviceData, *,
                 ticket_chunk: int | None = None, mesh=None) -> PyTree:
    """Train each copy c (leading axis C on every argument but ``length`` and ``data``) from
    ``params[c] ⊙ masks[c]`` at global iteration ``starts[c]`` to iteration ``stops[c]``: a fresh
    optimizer with the schedule at ``starts[c]``, the data order of ``keys[c]``. One program of
    ``length`` (static, ≥ the longest ``stops − starts``) steps; a copy that reaches its stop
    earlier idles there, its state held. Returns the trained params (``(C, …)``, batch-norm
    statistics merged in)."""
    n, B = data.x_train.shape[0], spec.batch_size

    def one(args, data):
        p, m, key, start, stop = args
        opt = make_optimizer(spec, start)
        step = make_train_step(model, spec, opt, mean, std)
        weights, model_state = model.split(apply_mask(p, m))
        state = TrainState(weights, model_state, opt.init(weights), model.split(m)[0], start, jax.random.split(key))

        def body(s, _):
            i = batch_indices(key, n, B, s.step)
            new, _ = step(s, Batch(data.x_train[i], data.y_train[i]))
            return jax.tree.map(lambda a, b: jnp.where(s.step < stop, a, b), new, s), None

        state, _ = lax.scan(body, state, None, length=length)
        return model.merge(state.params, state.model_state)

    as_int = lambda a: jnp.asarray(a, jnp.int32)  # noqa: E731
    return map_tickets(one, (params, masks, keys, as_int(starts), as_int(stops)), ticket_chunk, mesh, (data,))


def _eval_sets(data: DeviceData, train_examples: int):
    """The test set, and the first ``train_examples`` training examples (a multiple of the eval
    batch when larger than one), with weights."""
    n = min(train_examples, data.x_train.shape[0])
    n = n if n <= EVAL_BATCH else n - n % EVAL_BATCH
    w = jnp.ones((n,), jnp.float32)
    return (data.x_test, data.y_test, data.w_test), (data.x_train[:n], data.y_train[:n], w)


def path_metrics(model, spec: TrainSpec, mean, std, a: PyTree, b: PyTree, alphas: jax.Array, data: DeviceData, *,
                 bn_batches: int = 30, bn_key: jax.Array | None = None, train_examples: int = 10_000,
                 alpha_chunk: int | None = None):
    """``(test error, test loss, train error)`` of ``W(α)`` between one pair ``a``, ``b`` (params
    without a ticket axis), each ``(A,)``, with α vmapped, ``alpha_chunk`` values at a time if given
    (bounds memory: each α holds a network's activations; see the module docstring for batch norm)."""
    (xt, yt, wt), (xr, yr, wr) = _eval_sets(data, train_examples)
    n, B = data.x_train.shape[0], spec.batch_size
    key = jax.random.PRNGKey(0) if bn_key is None else bn_key
    if model.stateful and bn_batches:
        idx = jax.vmap(lambda t: batch_indices(key, n, B, t))(jnp.arange(bn_batches, dtype=jnp.int32))
        bn_x = D.normalize(data.x_train[idx], mean, std)
    rng = jax.random.fold_in(key, 1) if model.rngs else None

    def forward(params, x):
        return model.apply(params, D.normalize(x, mean, std))

    def at(alpha):
        p = interpolate(a, b, alpha)
        if model.stateful and bn_batches:
            weights, state = model.split(p)
            p = model.merge(weights, batch_statistics(model, weights, state, bn_x, rng))
        test_loss, test_acc = evaluate(forward, p, xt, yt, wt, spec.loss)
        _, train_acc = evaluate(forward, p, xr, yr, wr, spec.loss)
        return 1 - test_acc, test_loss, 1 - train_acc

    return jax.vmap(at)(alphas) if alpha_chunk is None else lax.map(at, alphas, batch_size=alpha_chunk)


def analyze(model, spec: TrainSpec, mean, std, starts: PyTree, masks: PyTree | None, keys: jax.Array,
            start_steps: Sequence[int] | int, stop: int, data: DeviceData, *, points: int = 31,
            bn_batches: int = 30, bn_key: jax.Array | None = None, train_examples: int = 10_000,
            alpha_chunk: int | None = None, ticket_chunk: int | None = None, mesh=None) -> Instability:
    """Instability analysis of P starting points in one compiled program.

    ``starts``: params with a leading pair axis P (``W_k`` of each pair); ``masks``: their masks
    (``None``: dense); ``keys``: ``(P, 2)`` data-order keys, one per copy (they must differ
    within a pair: that difference is the SGD noise); ``start_steps``: each pair's k (one int for
    all); ``stop``: T, the iteration both copies train to. ``points`` values of α, evenly spaced
    in [0, 1]; ``bn_batches`` training batches for batch-norm statistics at each α (keyed by
    ``bn_key``); ``train_examples``: the size of the training subset the train error is measured
    on. ``alpha_chunk``: evaluate that many α at a time (default all: memory for every α's
    activations at once; give 1–4 for convolutional networks on a small device).
    ``ticket_chunk`` / ``mesh``: how the 2P copies are mapped (:func:`ltjax.train.map_tickets`).
    """
    keys = jnp.asarray(keys)
    P = keys.shape[0]
    if keys.shape[:2] != (P, 2):
        raise ValueError(f"keys must hold two data-order keys per pair, shape ({P}, 2, ...); got {keys.shape}")
    if points < 2:
        raise ValueError(f"points={points}: a path needs at least its two ends (the paper uses 30 values of α)")
    steps = np.broadcast_to(np.asarray(start_steps, np.int64), (P,))
    if np.any(steps < 0) or np.any(steps >= stop):
        raise ValueError(f"every start step k must satisfy 0 <= k < stop={stop}; got {sorted(set(steps.tolist()))}")
    leading = {np.shape(x)[0] for x in jax.tree.leaves(starts)}
    if leading != {P}:
        raise ValueError(f"starts must carry the pair axis of length {P} (one W_k per pair of keys); "
                         f"leading sizes found: {sorted(leading)}")
    if masks is None:
        masks = jax.vmap(lambda p: make_mask(p, model.is_prunable))(starts)
    if data.x_train.shape[0] < spec.batch_size:
        raise ValueError(f"batch_size={spec.batch_size} exceeds the {data.x_train.shape[0]} training examples")
    raw = np.asarray(jax.random.key_data(keys) if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) else keys)
    if any(np.array_equal(raw[p, 0], raw[p, 1]) for p in range(P)):  # raw bits, of typed or raw keys
        raise ValueError("each pair needs two different data-order keys: equal keys train identical copies")
    alphas = jnp.linspace(0.0, 1.0, points, dtype=jnp.float32)
    program = jax.jit(functools.partial(_program, model, spec, tuple(mean), tuple(std), stop=int(stop),
                                        length=int(stop - steps.min()),
                                        bn_batches=int(bn_batches), train_examples=int(train_examples),
                                        alpha_chunk=alpha_chunk, ticket_chunk=ticket_chunk, mesh=mesh))
    key = jax.random.PRNGKey(0) if bn_key is None else bn_key
    out = program(starts, masks, keys, jnp.asarray(steps, jnp.int32), alphas, data, key)
    test_err, test_loss, train_err, copies = jax.device_get(out)
    return Instability(np.asarray(alphas), test_err, test_loss, train_err, np.asarray(error_barrier(test_err)),
                       np.asarray(error_barrier(train_err)), copies)


def _program(model, spec, mean, std, starts, masks, keys, steps, alphas, data, bn_key, *, stop, length, bn_batches,
             train_examples, alpha_chunk, ticket_chunk, mesh):
    P = keys.shape[0]
    twice = lambda t: jax.tree.map(lambda a: jnp.repeat(a, 2, axis=0), t)  # noqa: E731  (pair p → copies 2p, 2p+1)
    flat_keys = keys.reshape(2 * P, *keys.shape[2:])
    steps2 = jnp.repeat(steps, 2)
    trained = train_copies(model, spec, mean, std, twice(starts), twice(masks), flat_keys, steps2,
                           jnp.full_like(steps2, stop), length, data, ticket_chunk=ticket_chunk, mesh=mesh)
    pairs = jax.tree.map(lambda a: a.reshape(P, 2, *a.shape[1:]), trained)
    metrics = lax.map(lambda pr: path_metrics(
        model, spec, mean, std, jax.tree.map(lambda a: a[0], pr), jax.tree.map(lambda a: a[1], pr), alphas, data,
        bn_batches=bn_batches, bn_key=bn_key, train_examples=train_examples, alpha_chunk=alpha_chunk), pairs)
    return (*metrics, pairs)


def spawn_points(model, spec: TrainSpec, mean, std, theta0: PyTree, mask: PyTree | None, key: jax.Array,
                 ks: Sequence[int], data: DeviceData, *, ticket_chunk: int | None = None, mesh=None) -> PyTree:
    """``W_k`` for each k in ``ks`` (leading axis ``len(ks)``): ``theta0 ⊙ mask`` trained from
    iteration 0 with data-order ``key`` and read at iteration k; one trajectory, computed as one
    truncated copy per k in one program. ``theta0``, ``mask`` and ``key`` have no ticket axis."""
    ks = np.asarray(ks, np.int64)
    if ks.ndim != 1 or not len(ks) or np.any(ks < 0):
        raise ValueError(f"ks must be a non-empty list of iterations >= 0; got {np.asarray(ks).tolist()}")
    if mask is None:
        mask = make_mask(theta0, model.is_prunable)
    K = len(ks)
    rep = lambda t: jax.tree.map(lambda a: jnp.broadcast_to(a, (K, *jnp.shape(a))), t)  # noqa: E731
    program = jax.jit(functools.partial(train_copies, model, spec, tuple(mean), tuple(std), length=int(ks.max()),
                                        ticket_chunk=ticket_chunk, mesh=mesh))
    return program(rep(theta0), rep(mask), rep(key), jnp.zeros((K,), jnp.int32), jnp.asarray(ks, jnp.int32),
                   data=data)


def copy_keys(key: jax.Array, pairs: int) -> jax.Array:
    """``(pairs, 2)`` data-order keys: two different ones per pair, derived from ``key``."""
    return jax.vmap(lambda p: jax.random.split(jax.random.fold_in(key, p)))(jnp.arange(pairs))


def versus_k(model, spec: TrainSpec, mean, std, theta0: PyTree, mask: PyTree | None, key: jax.Array,
             ks: Sequence[int], stop: int, data: DeviceData, *, copies_key: jax.Array | None = None,
             **kw) -> Instability:
    """Instability of ``W_k`` for each k in ``ks`` (the paper's instability-versus-k curves):
    the trajectory from ``theta0 ⊙ mask`` with data order ``key`` read at each k
    (:func:`spawn_points`), then every k's pair of copies (keys from ``copies_key``, default
    derived from ``key``) analyzed in one program (:func:`analyze`; ``kw`` go there)."""
    starts = spawn_points(model, spec, mean, std, theta0, mask, key, ks, data,
                          ticket_chunk=kw.get("ticket_chunk"), mesh=kw.get("mesh"))
    masks = None if mask is None else jax.tree.map(lambda a: jnp.broadcast_to(a, (len(ks), *a.shape)), mask)
    copies_key = jax.random.fold_in(key, 1) if copies_key is None else copies_key
    return analyze(model, spec, mean, std, starts, masks, copy_keys(copies_key, len(ks)), ks, stop, data, **kw)


class RunPairs(NamedTuple):
    """The pairs of a finished IMP / LTR run (see :func:`run_pairs`); pair p is ``labels[p]``."""

    starts: PyTree  # (P, …) θk (θ0 when reset) of the pair's ticket
    masks: PyTree  # (P, …) the round's mask
    step: int  # k: where the copies start
    stop: int  # T: the run's iterations
    labels: list[tuple[int, int]]  # (round, ticket)


def run_pairs(run, rounds: Sequence[int] | None = None) -> RunPairs:
    """One pair per (round, ticket) of a run made with ``strategy="reset"`` or ``"rewind"``: the
    ticket's sparse network as that round trained it, ``θk ⊙ mask`` (θ0 with reset) at iteration
    k, to be trained to the run's T. ``rounds``: which completed rounds (default all)."""
    cfg = run.config
    if cfg.strategy not in ("reset", "rewind"):
        raise ValueError(f"run {run.path} restarts with strategy={cfg.strategy!r}; instability of a round's start "
                         f"is defined here for 'reset' (θ0) and 'rewind' (θk), whose rounds start from a fixed point")
    done = [r.index for r in run.rounds]
    rounds = done if rounds is None else list(rounds)
    missing = sorted(set(rounds) - set(done))
    if missing or not rounds:
        raise ValueError(f"rounds {missing or rounds} are not completed in {run.path}; completed: {done}")
    k = cfg.rewind_iteration if cfg.strategy == "rewind" else 0
    source = run.theta_k if k else run.theta0
    T = len(jax.tree.leaves(source)[0])
    stack = lambda trees: jax.tree.map(lambda *a: np.concatenate(a), *trees)  # noqa: E731
    masks = stack([run.rounds[r].mask for r in rounds])
    starts = stack([source] * len(rounds))
    return RunPairs(starts, masks, k, cfg.iterations, [(r, t) for r in rounds for t in range(T)])


def of_run(run, rounds: Sequence[int] | None = None, *, key: jax.Array | None = None, manual_dir: str | None = None,
           data_dir: str | None = None, **kw) -> tuple[Instability, RunPairs]:
    """Instability of every (round, ticket) of a finished ``reset`` / ``rewind`` run
    (:func:`run_pairs`), on the run's own data, model and training recipe; copy keys from ``key``
    (default ``PRNGKey(0)``); ``kw`` go to :func:`analyze`. Returns the analysis and the pairs."""
    from ltjax import lottery  # the study driver sits above this module

    cfg = run.config
    ds = D.load(cfg.dataset, validation_size=cfg.validation_size, split_seed=cfg.split_seed, data_dir=data_dir,
                manual_dir=manual_dir)
    model = lottery.build_model(cfg, ds)
    pairs = run_pairs(run, rounds)
    keys = copy_keys(jax.random.PRNGKey(0) if key is None else key, len(pairs.labels))
    res = analyze(model, cfg.train_spec(), ds.mean, ds.std, pairs.starts, pairs.masks, keys, pairs.step, pairs.stop,
                  device_data(ds), **kw)
    return res, pairs


def run_table(run, rounds: Sequence[int] | None = None, *, points: int = 31, bn_batches: int = 30,
              train_examples: int = 10_000, seed: int = 0, ticket_chunk: int | None = None,
              manual_dir: str | None = None, data_dir: str | None = None):
    """:func:`of_run` as rows, one per (round, ticket): ``round, ticket, density`` (fraction of
    prunable weights remaining) and :meth:`Instability.summary`'s fields. Computed once per
    settings and kept in the run directory as an atomically written part
    (:func:`ltjax.store.part`), so asking again reads it back. Returns ``(rows, path)``."""
    from ltjax import store

    done = [r.index for r in run.rounds]
    rounds = done if rounds is None else sorted(set(int(r) for r in rounds))
    settings = dict(rounds=rounds, points=points, bn_batches=bn_batches, train_examples=train_examples, seed=seed)

    def compute():
        res, pairs = of_run(run, rounds, key=jax.random.PRNGKey(seed), manual_dir=manual_dir, data_dir=data_dir,
                            points=points, bn_batches=bn_batches, train_examples=train_examples,
                            ticket_chunk=ticket_chunk)
        rows = [dict(round=r, ticket=t, density=float(run.rounds[r].metrics["density"][t]), **s)
                for (r, t), s in zip(pairs.labels, res.summary())]
        return dict(rows=rows, alphas=res.alphas.tolist(), test_error=res.test_error.tolist(),
                    train_error=res.train_error.tolist())

    return store.part(run.path, "instability", settings, compute)["rows"], store.part_path(run.path, "instability",
                                                                                           settings)


def of_config(config, ks: Sequence[int], *, manual_dir: str | None = None, data_dir: str | None = None,
              **kw) -> Instability:
    """:func:`versus_k` of a study configuration's dense network: the θ0 (as ``lottery.run`` draws
    it) and data order of its first seed, its model, data and training recipe, T =
    ``config.iterations``; ``kw`` go to :func:`analyze`."""
    from ltjax import lottery  # the study driver sits above this module

    config.validate().require_objects()
    ds = D.load(config.dataset, validation_size=config.validation_size, split_seed=config.split_seed,
                data_dir=data_dir, manual_dir=manual_dir)
    model = lottery.build_model(config, ds)
    init_keys, data_keys = lottery.seed_keys(config)
    theta0 = jax.tree.map(lambda a: a[0], lottery.init_theta0(config, model, init_keys[:1]))  # the study's θ0
    return versus_k(model, config.train_spec(), ds.mean, ds.std, theta0, None, data_keys[0], ks, config.iterations,
                    device_data(ds), **kw)

