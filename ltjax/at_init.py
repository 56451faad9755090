"""Pruning at initialization beyond SNIP: SynFlow, GraSP, inverted scores and layer collapse.

Both methods are scores (higher survives, :mod:`ltjax.scores`), so ``mode="at_init",
score="synflow"`` (or ``"grasp"``, ``"magnitude"``, ``"snip"``) is a study of tickets pruned at
θ0 and trained, and the controls ``synflow``, ``grasp`` and ``magnitude_at_init`` put them
beside IMP tickets (θ0 pruned to exactly the ticket's number of weights in the pool of layers
not in ``exclude``, as the ``snip`` control is).

**SynFlow** (Tanaka, Kunin, Yamins & Ganguli 2020, "Pruning neural networks without any data
by iteratively conserving synaptic flow", eq. 3 and Algorithm 1; details as in their public
code, ``Pruners/pruners.py`` and ``prune.py``): every parameter (weights, biases, batch-norm
scales, shifts and running statistics) is replaced by its absolute value, the network is
evaluated in eval mode on one all-ones input, ``R = Σ outputs``, and each prunable weight
scores ``|θ| ⊙ m ⊙ ∂R/∂w`` (``w = |θ| ⊙ m``). It prunes globally in 100 steps to density
``d^(i/100)`` after step i, rescoring with the current mask each step
(:func:`ltjax.pruning.prune_in_steps`, registered with ``steps=100``). It reads no data.

Overflow: ``R`` is a product over layers, so a deep network overflows float32 (or underflows).
ltjax computes in float32 and, when ``R`` falls outside ``[1e-30, 1e30]``, recomputes with each
prunable kernel divided by ``c_l = Σ|w_l| / fan_out_l`` (the summed incoming ``|w|`` of an
output unit, averaged over the layer's output units, so an all-ones input stays O(1) through
the layers). For a network whose linearized output is homogeneous of degree 1 in each kernel
(a chain of dense/conv layers with ReLU, pooling and eval-mode batch norm, and zero biases, as
at a default Flax initialization) that divides every score by the same ``Π c_l``: the ranking,
hence the mask, is unchanged. Residual networks (paths that skip layers) get exact scores only
while ``R`` stays in range (at θ0, ltjax's CIFAR ``resnet20`` gives ``R ≈ 1.4e25`` and ``vgg16``
``≈ 3e22``: in range); out of range their rescaled ranking is an approximation.

**GraSP** (Wang, Zhang & Grosse 2020, "Picking Winning Tickets Before Training by Preserving
Gradient Flow", eq. 8 and Algorithm 1; their public code ``pruner/GraSP.py``): with ``g`` the
gradient of the loss on a minibatch (held constant) and ``Hg`` the Hessian-gradient product,
GraSP's score is ``S = −θ ⊙ Hg`` and it *removes the weights with the highest S* (keeps
``S < τ``, the p-th percentile). ltjax's score is therefore ``θ ⊙ Hg = −S`` (higher survives),
which keeps exactly GraSP's weights. Gradients and ``Hg`` are over the prunable weights only,
as in their code, on logits divided by a temperature of 200 (their ``T=200``). Differences from
their code: the minibatch is the ticket's first training batch (theirs: 10 images per class),
the network's own initialization is scored (theirs re-draws the linear layers with Xavier
normal in a copy), and the scores are not divided by ``|Σ S|`` (a positive factor: the same
ranking).

**Sanity checks** (Frankle, Dziugaite, Roy & Carbin 2021, "Pruning Neural Networks at
Initialization: Why are We Missing the Mark?", sec. 5): the ``shuffle`` and ``reinit`` controls,
and ``invert``: the study's own score negated (keep the lowest), at the ticket's exact counts
(per layer with ``scope="layerwise"``, the pool's total with ``"global"``), in as many steps as
the score prunes in (SynFlow inverts every step, as the SynFlow code's ``invert`` does).

**Layer collapse** (Tanaka et al., sec. 3): a prunable layer with no surviving weight, which
disconnects the network: :func:`collapsed`, :func:`largest_compression`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from ltjax import masks as M
from ltjax import pruning, rounds, scores, snip
from ltjax.data.order import batch_indices
from ltjax.data.stream import train_examples

PyTree = Any
SYNFLOW_STEPS = 100  # Tanaka et al.'s default number of pruning iterations
GRASP_TEMPERATURE = 200.0  # Wang et al.'s code: logits / T


def _is_none(x) -> bool:
    return x is None


def _gated(mask: PyTree, params: PyTree, gates: PyTree) -> PyTree:
    return jax.tree.map(lambda m, p, g: p if m is None else jnp.where(m, p, jnp.zeros((), p.dtype)) * g,
                        mask, params, gates, is_leaf=_is_none)


def synflow_scores(apply_fn: Callable, params: PyTree, mask: PyTree, input_shape: Sequence[int]) -> PyTree:
    """SynFlow's synaptic saliency ``|θ| ⊙ m ⊙ ∂R/∂w`` of every prunable weight (``None`` elsewhere).

    Args:
      apply_fn: ``(params, x) -> outputs``, the eval-mode forward pass (``Model.apply``).
      params: the weights to score (all leaves are made non-negative).
      mask: current mask; pruned weights score 0.
      input_shape: one input's shape (the all-ones input is ``(1, *input_shape)``).
    Returns:
      Non-negative float32 scores shaped like ``mask``; see the module docstring for the
      rescaling used when ``R`` would overflow (the scores are then divided by ``Π c_l``).
    """
    lin = jax.tree.map(lambda p: jnp.abs(p).astype(jnp.float32), params)
    ones = jnp.ones((1, *input_shape), jnp.float32)

    def flow(gates):
        return jnp.sum(apply_fn(_gated(mask, lin, gates), ones).astype(jnp.float32))

    def saliency(gates):
        r, g = jax.value_and_grad(flow)(gates)
        return r, jax.tree.map(lambda m, gj, c: None if m is None else jnp.where(m, gj * c, 0.0),
                               mask, g, gates, is_leaf=_is_none)

    def scale(m, p):  # 1 / c_l (the last axis is the output units), 1 for an empty layer
        if m is None:
            return None
        total = jnp.sum(jnp.where(m, p, 0.0))
        c = total / p.shape[-1]
        return jnp.full(p.shape, jnp.where(total > 0, 1.0 / jnp.where(total > 0, c, 1.0), 1.0), jnp.float32)

    r, plain = saliency(jax.tree.map(lambda m: None if m is None else jnp.ones(m.shape, jnp.float32), mask,
                                     is_leaf=_is_none))
    _, rescaled = saliency(jax.tree.map(scale, mask, lin, is_leaf=_is_none))
    in_range = jnp.isfinite(r) & (r > 1e-30) & (r < 1e30)
    return jax.tree.map(lambda a, b: jnp.where(in_range, a, b), plain, rescaled)


def hessian_gradient_product(loss_fn: Callable[[PyTree], jax.Array], params: PyTree, mask: PyTree) -> PyTree:
    """``H g`` on the surviving prunable weights of ``params ⊙ mask`` (``None`` elsewhere).

    ``g = m ⊙ ∇L`` restricted to the prunable weights (the other leaves get a zero tangent) is
    held constant; ``Hg = ∂(gᵀ∇L)/∂w``, computed as a forward-over-reverse product
    (``jax.jvp`` of ``jax.grad``).
    """
    w = M.apply_mask(params, mask)
    grad = jax.grad(loss_fn)
    g = jax.tree.map(lambda m, gj: jnp.zeros_like(gj) if m is None else jnp.where(m, gj, 0.0), mask, grad(w),
                     is_leaf=_is_none)
    _, hg = jax.jvp(grad, (w,), (g,))
    return jax.tree.map(lambda m, h: None if m is None else jnp.where(m, h, 0.0), mask, hg, is_leaf=_is_none)


def grasp_scores(loss_fn: Callable[[PyTree], jax.Array], params: PyTree, mask: PyTree) -> PyTree:
    """ltjax's GraSP score ``θ ⊙ Hg`` (higher survives), the negative of GraSP's ``S = −θ ⊙ Hg``
    whose highest values GraSP removes; pruned weights score 0. ``loss_fn(params) -> loss``."""
    hg = hessian_gradient_product(loss_fn, params, mask)
    return jax.tree.map(lambda m, p, h: None if m is None else jnp.where(m, p * h, 0.0), mask, params, hg,
                        is_leaf=_is_none)


def _synflow(params: PyTree, mask: PyTree, batch: scores.Batch) -> PyTree:
    return synflow_scores(batch.model.apply, params, mask, batch.model.input_shape)


def _grasp(params: PyTree, mask: PyTree, batch: scores.Batch) -> PyTree:
    loss = lambda p: batch.loss_fn(p, batch.x, batch.y, temperature=GRASP_TEMPERATURE)  # noqa: E731
    return grasp_scores(loss, params, mask)


# SynFlow reads no data; it is a batch score only to see the study's model.
scores.register("synflow", _synflow, needs_batch=True, steps=SYNFLOW_STEPS)
scores.register("grasp", _grasp, needs_batch=True)


# -- layer collapse ----------------------------------------------------------------------------

def collapsed_layers(mask: PyTree) -> dict[str, jax.Array]:
    """``{layer: True where the prunable layer has no surviving weight}``."""
    return {name: ~jnp.any(m) for name, m in M.leaves_with_names(mask)}


def collapsed(mask: PyTree) -> jax.Array:
    """Whether any prunable layer of ``mask`` has no surviving weight (layer collapse); vmappable."""
    flags = list(collapsed_layers(mask).values())
    return jnp.any(jnp.stack(flags)) if flags else jnp.bool_(False)


def largest_compression(mask_at: Callable[[float], PyTree], densities: Sequence[float]) -> float | None:
    """The largest compression ``1 / density`` over ``densities`` at which ``mask_at(density)``
    (one ticket's mask) has no collapsed layer; None when every density collapses."""
    ok = [1.0 / d for d in densities if not bool(collapsed(mask_at(d)))]
    return max(ok) if ok else None


# -- controls beside tickets -------------------------------------------------------------------

def _batch(ctx: rounds.Context, copy: int) -> scores.Batch:
    """The study's loss and model, and each ticket's minibatch of iteration ``copy``."""
    n = ctx.data.x_train.shape[0]
    idx = jax.vmap(lambda k: batch_indices(k, n, ctx.config.batch_size, jnp.int32(copy)))(ctx.data_keys)
    return scores.Batch(ctx.loss_fn, *train_examples(ctx.data, idx), ctx.model)


def prune_at_init(name: str, params: PyTree, mask: PyTree, *, keep: Any, batch: scores.Batch | None = None,
                  invert: bool = False, scope: str = "global", exclude: tuple[str, ...] = ()) -> PyTree:
    """One ticket's mask: ``mask`` pruned by score ``name`` of ``params`` (θ0) to exactly ``keep``
    survivors (``global``: the pool's total, ``layerwise``: ``{layer: count}``), in the score's
    registered number of rescoring steps (SynFlow: 100). ``invert``: the score negated, so the
    lowest-scoring weights are kept (Frankle et al. 2021). ``batch``: what a data-dependent score
    reads (:class:`ltjax.scores.Batch`). Pure; vmap it over tickets."""
    fn, sign = scores.get(name), -1.0 if invert else 1.0
    if name in scores.NEEDS_BATCH and batch is None:
        raise ValueError(f"score {name!r} needs batch= (an ltjax.scores.Batch with the loss, a minibatch and model)")
    score = (lambda m: fn(params, m, batch)) if name in scores.NEEDS_BATCH else (lambda m: fn(params, m))
    signed = lambda m: jax.tree.map(lambda s: sign * s, score(m))  # noqa: E731
    return pruning.prune_in_steps(signed, mask, scores.STEPS.get(name, 1), keep=keep, scope=scope,
                                  exclude=exclude)[0]


@functools.lru_cache(maxsize=None)
def _pruner_at(name: str, invert: bool, scope: str, exclude: tuple[str, ...], loss_fn, model) -> Callable:
    def one(params, dense, keep, x, y):
        return prune_at_init(name, params, dense, keep=keep, batch=scores.Batch(loss_fn, x, y, model),
                             invert=invert, scope=scope, exclude=exclude)
    return jax.jit(jax.vmap(one))


def masks_at_init(ctx: rounds.Context, name: str, mask: PyTree, *, invert: bool = False, scope: str = "global",
                  copy: int = 0) -> PyTree:
    """θ0 pruned by score ``name`` (negated with ``invert``: keep the lowest) to exactly the
    counts of the tickets' ``mask``: the pool's total (``global``, the layers not in
    ``exclude``) or each layer's (``layerwise``). Data-dependent scores see each ticket's
    minibatch of iteration ``copy``."""
    exclude = tuple(ctx.config.exclude)
    if scope == "global":
        keep = jax.vmap(lambda m: snip.pool_size(m, exclude))(mask)
    else:
        keep = jax.vmap(M.count)(mask)
    b = _batch(ctx, copy)
    fn = _pruner_at(name, invert, scope, exclude, ctx.loss_fn, ctx.model)
    return fn(ctx.theta0, ctx.dense, keep, b.x, b.y)


def _method(name: str) -> rounds.Control:
    def control(ctx, keys, start, mask, source, copy):
        m = masks_at_init(ctx, name, mask, copy=copy)
        return jax.jit(jax.vmap(M.apply_mask))(ctx.theta0, m), m
    return control


def _invert(ctx, keys, start, mask, source, copy):
    names = set(ctx.config.ticket_scores())
    if len(names) != 1:
        raise ValueError(f"the invert control needs one score for all tickets, got {sorted(names)}")
    m = masks_at_init(ctx, names.pop(), mask, invert=True, scope=ctx.config.scope, copy=copy)
    return jax.jit(jax.vmap(M.apply_mask))(ctx.theta0, m), m


rounds.register_control("synflow", _method("synflow"), from_iteration_0=True)
rounds.register_control("grasp", _method("grasp"), from_iteration_0=True)
rounds.register_control("magnitude_at_init", _method("magnitude"), from_iteration_0=True)
rounds.register_control("invert", _invert, from_iteration_0=True)

