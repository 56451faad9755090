"""The parts of a study's round loop, each registered by name: restart, mask policy, control.

:func:`ltjax.lottery.run` trains round 0 from θ0, then for each round r ≥ 1 asks three parts
what to do, none of which knows about the others or about the loop:

* a **restart** (``Config.strategy``, :data:`RESTARTS`): the unmasked weights round r starts
  from and the global iteration it starts at (``reset`` θ0 at 0, ``rewind`` θk at k,
  ``continue`` the previous round's trained weights at 0, ``lr_rewind`` them at k,
  ``finetune`` them at k with the learning rate held at the schedule's last);
* a **mask policy** (``Config.mode``, :data:`MASK_POLICIES`): round r's mask (``iterative``
  prunes the previous round's trained weights, ``oneshot`` round 0's to the r-th density,
  ``at_init`` θ0 itself, ``random_at_init`` a uniformly random mask at the counts the
  study's rates give); LTH_flip (``flip_round``) is the ``flip`` policy of its round;
* **controls** (``Config.controls``, :data:`CONTROLS`): the ``(params, mask)`` each control
  network of a ticket starts from, trained beside the tickets in their program.

Scores (what a mask policy prunes by) are :mod:`ltjax.scores`: a pure function of the
params and mask, or also of a minibatch and the study's loss (SNIP, :func:`score_batch`). Each part is a pure function
of a :class:`Context` (the study's fixed arrays, and the saved rounds) and the round;
adding one is a function and a ``register_*`` line (see the guides "add a control" and "add a
restart strategy"). All arrays carry the leading ticket axis.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import controls, models, pruning, registry, scores, snip
from ltjax import masks as M
from ltjax.data.order import batch_indices
from ltjax.data.stream import train_examples

PyTree = Any


class Context(NamedTuple):
    """What the parts of round r may read. ``state(q) -> (mask, trained params, diverged)`` of
    a finished round q < r (loaded from the run directory when not in memory)."""

    config: Any  # ltjax.config.Config
    model: Any  # ltjax.models.Model
    theta0: PyTree
    theta_k: PyTree  # θk when the restart rewinds (else θ0)
    dense: PyTree  # the all-ones mask
    init_keys: jax.Array
    data_keys: jax.Array
    data: Any  # ltjax.train.DeviceData
    loss_fn: Callable  # (params, x, y) -> mean training loss (SNIP's)
    state: Callable[[int], tuple]


# -- restarts --------------------------------------------------------------------------------

class Restart(NamedTuple):
    """Where round r ≥ 1 starts: ``source(ctx, r)`` the unmasked weights, ``step(k)`` the global
    iteration (``k``: ``rewind_iteration``), so schedule and data order continue from there;
    ``rewinds``: it needs θk, the weights at iteration k of round 0. ``hold_lr(T)``, if given
    (``T``: ``iterations``): train at the constant learning rate the schedule gives at that
    iteration instead (the data order still continues from ``step``)."""

    source: Callable[[Context, int], PyTree]
    step: Callable[[int], int]
    rewinds: bool = False
    hold_lr: Callable[[int], int] | None = None


RESTARTS: dict[str, Restart] = {}


def register_restart(name: str, restart: Restart, *, replace: bool = False) -> None:
    """Make ``restart`` available as ``Config(strategy=name)``."""
    registry.add(RESTARTS, "restart", name, restart, replace, "an ltjax.rounds.Restart(source, step, rewinds)",
                 of_type=Restart)


def _trained(ctx: Context, r: int) -> PyTree:
    return ctx.state(r - 1)[1]  # the previous round's trained weights


register_restart("reset", Restart(lambda ctx, r: ctx.theta0, lambda k: 0))  # Frankle & Carbin 2018
register_restart("rewind", Restart(lambda ctx, r: ctx.theta_k, lambda k: k, rewinds=True))  # LTR
register_restart("continue", Restart(_trained, lambda k: 0))  # Han et al. 2015
# Renda et al. 2020: the previous round's trained weights, retrained for rewind's budget
# (iterations k … T): learning-rate rewinding on the schedule of iterations k … T, fine-tuning
# at the schedule's last learning rate (iteration T - 1's) throughout.
register_restart("lr_rewind", Restart(_trained, lambda k: k))
register_restart("finetune", Restart(_trained, lambda k: k, hold_lr=lambda T: T - 1))


def start_step(config, r: int) -> int:
    """The global iteration round r starts at."""
    return RESTARTS[config.strategy].step(config.rewind_iteration) if r > 0 else 0


def held_lr_step(config, r: int) -> int | None:
    """The iteration whose learning rate round r trains at throughout, or None when the schedule
    runs from :func:`start_step` (round 0 always runs it from 0)."""
    hold = RESTARTS[config.strategy].hold_lr
    return None if r == 0 or hold is None else hold(config.iterations)


# -- scores and pruning ------------------------------------------------------------------------

def round_rates(config, layer_names: list[str], r: int) -> float | dict[str, float]:
    """What ``prune`` removes in round r ≥ 1, as fractions of the mask it is applied to.

    Iterative: ``prune_rate`` of the survivors each round (layerwise: per-layer overrides).
    From the dense mask (one-shot and the at-initialization policies): a fraction ``1 - d_r``
    where ``d_r`` is ``densities[r-1]`` or ``(1 - prune_rate)^r``; a layer with an override
    rate q is pruned by ``(1 - d_r) · q / prune_rate`` (the 2018 paper prunes the output at
    half the rate).
    """
    if config.mode not in FROM_DENSE:
        if config.scope == "global":
            return config.prune_rate
        return pruning.layer_rates(layer_names, config.prune_rate, dict(config.layer_rates))
    d = config.densities[r - 1] if config.densities else (1 - config.prune_rate) ** r
    if config.scope == "global":
        return 1 - d
    rates = pruning.layer_rates(layer_names, config.prune_rate, dict(config.layer_rates))
    return {n: min(1.0, (1 - d) * q / config.prune_rate) for n, q in rates.items()}


def all_finite(tree: PyTree) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.bool_(True)


def _with_batch(name: str, loss_fn: Callable | None, model: Any) -> Callable:
    """Score ``name`` as ``(params, mask, x, y) -> scores``, whether or not it reads the batch."""
    fn = scores.get(name)
    if name not in scores.NEEDS_BATCH:
        return lambda p, m, x, y: fn(p, m)
    return lambda p, m, x, y: fn(p, m, scores.Batch(loss_fn, x, y, model))


@functools.lru_cache(maxsize=None)
def _pruner(score_names: tuple[str, ...], scope: str, exclude: tuple[str, ...], rates: Any,
            loss_fn: Callable | None, model: Any) -> Callable:
    fns = [_with_batch(n, loss_fn, model) for n in score_names]
    steps = [scores.STEPS.get(n, 1) for n in score_names]
    rate = dict(rates) if isinstance(rates, tuple) else rates

    def one(params, mask, fallback, frozen, which, x, y):
        # Each ticket's own score, in its own number of rescoring steps (SynFlow: 100), a select
        # under vmap when the study mixes scores.
        by = [functools.partial(pruning.prune_in_steps, lambda m, f=f: f(params, m, x, y), mask, n, rate=rate,
                                scope=scope, exclude=exclude) for f, n in zip(fns, steps)]
        new, finite = by[0]() if len(by) == 1 else jax.lax.switch(which, by)
        # A diverged ticket (non-finite scores) or a frozen one never gets a NaN-driven mask.
        keep_new = finite & ~frozen
        return jax.tree.map(lambda n, f: None if n is None else jnp.where(keep_new, n, f),
                            new, fallback, is_leaf=lambda x: x is None)

    return jax.jit(jax.vmap(one))


def next_mask(config, params: PyTree, mask: PyTree, r: int,
              fallback: PyTree | None = None, frozen: jax.Array | None = None,
              batch: scores.Batch | None = None) -> PyTree:
    """Mask of round r ≥ 1 from ``params`` scored by each ticket's score and the ``mask`` they
    are pruned from, at :func:`round_rates`.

    Tickets flagged in ``frozen`` (diverged earlier) and tickets whose scores are not all
    finite keep ``fallback`` (default: ``mask``) instead: a NaN never decides what is pruned.
    ``batch``: the loss and a minibatch per ticket (leading axis), for scores that need data
    (:func:`score_batch`).
    """
    rates = round_rates(config, M.layer_names(mask), r)
    key = tuple(sorted(rates.items())) if isinstance(rates, dict) else rates
    T = jax.tree.leaves(mask)[0].shape[0]
    frozen = jnp.zeros(T, bool) if frozen is None else jnp.asarray(frozen, bool)
    names = tuple(dict.fromkeys(config.ticket_scores()))
    which = (jnp.zeros(T, jnp.int32) if len(names) == 1
             else jnp.asarray([names.index(n) for n in config.ticket_scores()], jnp.int32))
    needs = [n for n in names if n in scores.NEEDS_BATCH]
    if needs and batch is None:
        raise ValueError(f"score {needs[0]!r} needs a minibatch: pass batch= (ltjax.rounds.score_batch)")
    x, y = (batch.x, batch.y) if needs else (jnp.zeros(T), jnp.zeros(T))
    return _pruner(names, config.scope, tuple(config.exclude), key, batch.loss_fn if needs else None,
                   batch.model if needs else None)(
        params, mask, mask if fallback is None else fallback, frozen, which, x, y)


def score_batch(ctx: "Context") -> scores.Batch | None:
    """The study's loss and each ticket's iteration-0 minibatch, for scores that need data
    (None when no ticket's score does)."""
    if not any(n in scores.NEEDS_BATCH for n in ctx.config.ticket_scores()):
        return None
    n, B = ctx.data.x_train.shape[0], ctx.config.batch_size
    idx = jax.vmap(lambda k: batch_indices(k, n, B, jnp.int32(0)))(ctx.data_keys)
    return scores.Batch(ctx.loss_fn, *train_examples(ctx.data, idx), ctx.model)


# -- mask policies -----------------------------------------------------------------------------

MaskPolicy = Callable[[Context, int, np.ndarray], PyTree]  # (ctx, r, frozen) -> round r's mask
MASK_POLICIES: dict[str, MaskPolicy] = {}
FROM_DENSE: set[str] = set()  # policies that prune the dense mask every round (set by registration)


def register_mask_policy(name: str, policy: MaskPolicy, *, replace: bool = False, from_dense: bool = True) -> None:
    """Make ``policy(ctx, r, frozen) -> mask`` (round r ≥ 1) available as ``Config(mode=name)``.
    ``from_dense``: its round-r mask is pruned from the dense mask (rates: :func:`round_rates`'s
    one-shot densities), not from round r-1's."""
    registry.add(MASK_POLICIES, "mask policy", name, policy, replace, "a function (ctx, r, frozen) -> mask")
    (FROM_DENSE.add if from_dense else FROM_DENSE.discard)(name)


def iterative(ctx: Context, r: int, frozen) -> PyTree:
    """Prune round r-1's trained weights from round r-1's mask (Frankle & Carbin 2018)."""
    mask, params, _ = ctx.state(r - 1)
    return next_mask(ctx.config, params, mask, r, frozen=frozen, batch=score_batch(ctx))


def oneshot(ctx: Context, r: int, frozen) -> PyTree:
    """Prune round 0's trained weights from the dense mask to the r-th density."""
    return next_mask(ctx.config, ctx.state(0)[1], ctx.dense, r, fallback=ctx.state(r - 1)[0], frozen=frozen,
                     batch=score_batch(ctx))


def at_init(ctx: Context, r: int, frozen) -> PyTree:
    """Prune θ0 itself (before any training) from the dense mask to the r-th density, by the
    tickets' scores: a ticket found at initialization, trained as the study's own ticket."""
    return next_mask(ctx.config, ctx.theta0, ctx.dense, r, fallback=ctx.state(r - 1)[0], frozen=frozen,
                     batch=score_batch(ctx))


def random_at_init(ctx: Context, r: int, frozen) -> PyTree:
    """A uniformly random mask at θ0 with exactly the per-layer counts that one-shot pruning to
    round r's density keeps (layerwise scope with its overrides; global scope: every layer at
    that density), keyed per ticket and round, independent of any weights."""
    def noise(key, mask):  # an i.i.d. uniform score per weight, a key per layer
        leaves, tree = jax.tree.flatten(mask, is_leaf=lambda x: x is None)
        return tree.unflatten([None if m is None else jax.random.uniform(jax.random.fold_in(key, i), m.shape)
                               for i, m in enumerate(leaves)])

    keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, 0x5EED), r))(ctx.init_keys)
    names = M.layer_names(ctx.dense)
    rates = round_rates(ctx.config, names, r)
    rates = rates if isinstance(rates, dict) else dict.fromkeys(names, rates)
    prune = lambda s, m: pruning.prune(s, m, rates, scope="layerwise", exclude=tuple(ctx.config.exclude))  # noqa: E731
    return jax.jit(jax.vmap(lambda k, m: prune(noise(k, m), m)))(keys, ctx.dense)


def flip(ctx: Context, r: int, frozen) -> PyTree:
    """LTH_flip: the complement of round r-1's mask (used at ``flip_round``)."""
    return jax.jit(jax.vmap(M.complement))(ctx.state(r - 1)[0])


register_mask_policy("iterative", iterative, from_dense=False)
register_mask_policy("oneshot", oneshot)
register_mask_policy("at_init", at_init)
register_mask_policy("random_at_init", random_at_init)


def round_mask(ctx: Context, r: int, frozen) -> PyTree:
    """Round r's mask: dense in round 0, ``flip`` at ``flip_round``, else the study's policy."""
    if r == 0:
        return ctx.dense
    return (flip if r == ctx.config.flip_round else MASK_POLICIES[ctx.config.mode])(ctx, r, frozen)


# -- controls ----------------------------------------------------------------------------------

# (ctx, keys, start, mask, source, copy) -> (params, mask): ``start`` = source ⊙ mask, the
# ticket's start; ``source`` the unmasked weights the round starts from; ``copy`` the copy index
Control = Callable[[Context, jax.Array, PyTree, PyTree, PyTree, int], tuple[PyTree, PyTree]]
CONTROLS: dict[str, Control] = {}
FROM_ITERATION_0: set[str] = set()  # controls that train from θ0 at iteration 0 (set by registration)


def register_control(name: str, control: Control, *, replace: bool = False, from_iteration_0: bool = False) -> None:
    """Make ``control`` available in ``Config.controls``. ``from_iteration_0``: it starts from θ0
    at iteration 0, so it cannot train in the program of tickets that start at k > 0."""
    registry.add(CONTROLS, "control", name, control, replace, "a function (ctx, keys, start, mask, source, copy)")
    (FROM_ITERATION_0.add if from_iteration_0 else FROM_ITERATION_0.discard)(name)


def _at_theta0(ctx: Context, mask: PyTree) -> PyTree:
    return jax.jit(jax.vmap(M.apply_mask))(ctx.theta0, mask)


def snip_rates(config, mask: PyTree) -> tuple[dict[str, int], dict[str, float]]:
    """Per-step rates of iterative SNIP's default schedule: the study's own IMP rates.

    Layerwise scope: each layer's survivors shrink at its IMP rate (``prune_rate`` with the
    ``layer_rates`` overrides); global scope: one pool at ``prune_rate``. Returns
    ``(dense sizes, rates)`` keyed alike, over the layers SNIP may prune (not ``exclude``).
    """
    sizes = {n: v for n, v in M.size(mask).items() if not pruning.excluded(n, config.exclude)}
    if config.scope == "global":
        return {"pool": sum(sizes.values())}, {"pool": config.prune_rate}
    rates = pruning.layer_rates(list(sizes), config.prune_rate, dict(config.layer_rates))
    return sizes, rates


def snip_masks(ctx: Context, name: str, copy: int, mask: PyTree) -> PyTree:
    """Masks of the ``snip`` / ``isnip`` controls: θ0 pruned before training to the tickets' sizes.

    Each ticket's SNIP network keeps exactly as many weights as the ticket in the pool of
    prunable layers not in ``exclude``. Its minibatch is the one the ticket trains on at
    iteration ``copy`` (copy 0: the first batch), so copies differ only in the batch.
    ``isnip`` prunes along :func:`ltjax.snip.geometric_schedule` with the study's rates.
    """
    config = ctx.config
    keep = np.asarray(jax.vmap(lambda m: snip.pool_size(m, config.exclude))(mask))
    if name == "snip":
        keeps = jnp.asarray(keep[:, None], jnp.int32)
    else:
        sizes, rates = snip_rates(config, jax.tree.map(lambda a: a[0], ctx.dense))
        keeps = snip.schedule_array([snip.geometric_schedule(sizes, rates, int(k)) for k in keep])
    n = ctx.data.x_train.shape[0]
    idx = jax.vmap(lambda k: batch_indices(k, n, config.batch_size, jnp.int32(copy)))(ctx.data_keys)
    fn = _snipper(ctx.loss_fn, tuple(config.exclude))
    return fn(ctx.theta0, ctx.dense, *train_examples(ctx.data, idx), keeps)


@functools.lru_cache(maxsize=None)
def _snipper(loss_fn: Callable, exclude: tuple[str, ...]) -> Callable:
    return jax.jit(jax.vmap(lambda p, m, x, y, ks: snip.iterative_snip(loss_fn, p, m, x, y, ks, exclude=exclude)))


def _reinit(ctx, keys, start, mask, source, copy):
    if ctx.config.sweep == "init_std":  # each ticket's own std
        stds = jnp.asarray(ctx.config.ticket_sweep(), jnp.float32)
        init = lambda k, m, s: controls.reinit(k, lambda kk: models.init_with_std(ctx.model, kk, s), m)  # noqa: E731
        return models.run_init(jax.vmap(init), keys, mask, stds), mask
    return models.run_init(jax.vmap(lambda k, m: controls.reinit(k, ctx.model.init, m)), keys, mask), mask


def _shuffle(ctx, keys, start, mask, source, copy):
    layers = tuple(ctx.config.shuffle_layers)
    return jax.jit(jax.vmap(lambda k, p, m: controls.shuffle(k, p, m, layers)))(keys, start, mask)


def _random(ctx, keys, start, mask, source, copy):
    return jax.jit(jax.vmap(controls.random_prune))(keys, source, mask)


def _reset(ctx, keys, start, mask, source, copy):
    return _at_theta0(ctx, mask), mask


def _snip(name: str) -> Control:
    def control(ctx, keys, start, mask, source, copy):
        m = snip_masks(ctx, name, copy, mask)
        return _at_theta0(ctx, m), m
    return control


register_control("reinit", _reinit)
register_control("shuffle", _shuffle)
register_control("random", _random)
register_control("reset", _reset, from_iteration_0=True)
register_control("snip", _snip("snip"), from_iteration_0=True)
register_control("isnip", _snip("isnip"), from_iteration_0=True)


def parse_controls(spec: tuple[str, ...]) -> list[tuple[str, int]]:
    """``("reinit:3", "shuffle")`` → ``[("reinit", 3), ("shuffle", 1)]``; raises on unknown names."""
    out = []
    for item in spec:
        name, _, count = item.partition(":")
        if name not in CONTROLS:
            raise ValueError(f"unknown control {name!r} in controls={','.join(spec)!r}; valid controls: "
                             f"{', '.join(CONTROLS)} (optionally with a count, e.g. reinit:3)")
        try:
            c = int(count) if count else 1
        except ValueError:
            raise ValueError(f"control count in {item!r} must be a positive integer") from None
        if c < 1:
            raise ValueError(f"control count in {item!r} must be a positive integer")
        out.append((name, c))
    return out


def control_starts(ctx: Context, r: int, start: PyTree, mask: PyTree,
                   source: PyTree) -> tuple[PyTree, PyTree, list[tuple[str, int]]]:
    """Start weights and masks of round r's control networks, stacked after one another.

    Block order: for each ``(name, count)`` of ``config.controls``, ``count`` blocks of T
    (one control per ticket). Each control's key is derived from its ticket's init key, the
    control's position, its copy index and the round, so controls are reproducible and
    independent.
    """
    blocks_p, blocks_m, labels = [], [], []
    for idx, (name, count) in enumerate(parse_controls(ctx.config.controls)):
        for j in range(count):
            keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(
                jax.random.fold_in(k, 7919 + idx), j), r))(ctx.init_keys)
            p, m = CONTROLS[name](ctx, keys, start, mask, source, j)
            blocks_p.append(p)
            blocks_m.append(m)
            labels.append((name, j))
    return concat(*blocks_p), concat(*blocks_m), labels


def concat(*trees: PyTree) -> PyTree:
    """Stack ticket blocks along the ticket axis (``None`` mask leaves stay ``None``)."""
    return jax.tree.map(lambda *xs: None if xs[0] is None else jnp.concatenate(xs), *trees,
                        is_leaf=lambda x: x is None)

