"""Score functions: a float pytree shaped like the mask (``None`` on unprunable leaves).

Higher score = more important; :func:`ltjax.pruning.prune` removes the lowest-scoring
*surviving* weights, so scores of already pruned weights never matter.

Layerwise importance scores (Vandersmissen et al., "layerwise importance" paper, sec. 2.1
and Algorithm 2; LAMP from Lee et al. 2021) rescale each layer's magnitudes so that
values from different layers become comparable when pooled for global pruning
(``scope=global``). As Algorithm 2 prescribes (``layerwise-importance(abs(θ))``), every
score is computed from ``a = |w|`` and only over the layer's *surviving* weights (pruned
weights get score 0 and take no part in a layer's sums, minima or maxima):

==========  ==============================================================
magnitude   ``a``
l1          ``a / Σ a``
l2          ``a² / Σ a²``
softmax     ``exp(a) / Σ exp(a)``
minmax      ``(a − min a) / (max a − min a)`` (1 where max = min)
lamp        ``a_u² / Σ_{v: a_v ≥ a_u} a_v²`` (Lee et al. 2021; ties share one denominator)
==========  ==============================================================

A "layer" is one prunable tensor (a kernel).

A score may also need data: registered with ``needs_batch=True`` it is called
``fn(params, mask, batch)`` with a :class:`Batch` (the study's loss and one minibatch per
ticket: the batch it trains on at iteration 0). SNIP's connection sensitivity is such a score
(``snip``, registered by :mod:`ltjax.snip`), so a study pruned by SNIP at initialization is
``mode="at_init", score="snip"``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from ltjax import registry

PyTree = Any
ScoreFn = Callable[[PyTree, PyTree], PyTree]


class Batch(NamedTuple):
    """What a data-dependent score sees: ``loss_fn(params, x, y, temperature=1.0) -> mean loss``
    (as the trainer computes it; ``temperature`` divides the logits, GraSP's), one minibatch
    ``x, y``, and the study's :class:`ltjax.models.Model` (SynFlow's data-free forward pass)."""

    loss_fn: Callable
    x: Any
    y: Any
    model: Any = None


NEEDS_BATCH: set[str] = set()  # scores called fn(params, mask, batch)
STEPS: dict[str, int] = {}  # rescoring steps of every pruning by a score (SynFlow: 100)


def magnitude(params: PyTree, mask: PyTree) -> PyTree:
    """Magnitude score ``s = |w|`` for every prunable weight (Han et al. 2015; Frankle & Carbin 2018).

    Args:
      params: parameter pytree of one ticket.
      mask: mask pytree; only its ``None`` pattern is used.
    Returns:
      ``|w|`` on prunable leaves, ``None`` elsewhere.
    """
    return jax.tree.map(
        lambda m, p: None if m is None else jnp.abs(p), mask, params, is_leaf=lambda x: x is None
    )


def _per_layer(fn: Callable[[jax.Array, jax.Array], jax.Array]) -> ScoreFn:
    """Lift ``fn(a, alive) -> score`` (one layer's |w| and mask) to a score pytree;
    pruned weights get 0."""
    def score(params: PyTree, mask: PyTree) -> PyTree:
        def one(m, p):
            if m is None:
                return None
            a = jnp.abs(p).astype(jnp.float32)
            return jnp.where(m, fn(a, m), 0.0)
        return jax.tree.map(one, mask, params, is_leaf=lambda x: x is None)
    return score


def _safe_div(num: jax.Array, den: jax.Array, if_zero: float = 0.0) -> jax.Array:
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), if_zero)


def _l1(a, m):
    return _safe_div(a, jnp.sum(jnp.where(m, a, 0.0)))


def _l2(a, m):
    return _safe_div(a * a, jnp.sum(jnp.where(m, a * a, 0.0)))


def _softmax(a, m):
    top = jnp.max(jnp.where(m, a, -jnp.inf))
    e = jnp.where(m, jnp.exp(a - jnp.where(jnp.isfinite(top), top, 0.0)), 0.0)  # shift: same ratios, no overflow
    return _safe_div(e, jnp.sum(e))


def _minmax(a, m):
    lo = jnp.min(jnp.where(m, a, jnp.inf))
    hi = jnp.max(jnp.where(m, a, -jnp.inf))
    return _safe_div(a - lo, hi - lo, if_zero=1.0)


def _lamp(a, m):
    flat_a, flat_m = a.reshape(-1), m.reshape(-1)
    key = jnp.where(flat_m, flat_a * flat_a, -1.0)  # pruned weights sort first and add nothing
    srt = jnp.sort(key)
    contrib = jnp.maximum(srt, 0.0)
    suffix = jnp.cumsum(contrib[::-1])[::-1]  # suffix[i] = Σ_{j ≥ i} srt[j]
    first = jnp.searchsorted(srt, key, side="left")  # ties: the first of equal values, so all of them count
    return _safe_div(flat_a * flat_a, suffix[first]).reshape(a.shape)


l1 = _per_layer(_l1)
l1.__doc__ = "L1 normalization per layer: ``|w| / Σ_layer |w|`` over surviving weights."
l2 = _per_layer(_l2)
l2.__doc__ = "L2 normalization per layer: ``w² / Σ_layer w²`` over surviving weights."
softmax = _per_layer(_softmax)
softmax.__doc__ = "Softmax per layer of ``|w|``: ``exp|w| / Σ_layer exp|w|`` over surviving weights."
minmax = _per_layer(_minmax)
minmax.__doc__ = "Min-max normalization per layer of ``|w|`` over surviving weights (1 where max = min)."
lamp = _per_layer(_lamp)
lamp.__doc__ = ("LAMP (Lee et al. 2021): ``w_u² / Σ_{v: |w_v| ≥ |w_u|} w_v²`` over the layer's surviving "
                "weights; the layer's largest weight scores 1.")

SCORES: dict[str, ScoreFn] = {"magnitude": magnitude, "l1": l1, "l2": l2, "softmax": softmax,
                              "minmax": minmax, "lamp": lamp}


def per_layer(fn: Callable[[jax.Array, jax.Array], jax.Array]) -> ScoreFn:
    """Make a score from ``fn(a, alive)``: one layer's ``|w|`` (float32) and its mask in, that
    layer's scores out. Applied to every prunable layer; pruned weights score 0, so
    normalizations inside ``fn`` should reduce over ``alive`` only (as ``l1`` does with
    ``jnp.where(alive, a, 0)``)."""
    return _per_layer(fn)


def register(name: str, fn: ScoreFn, *, replace: bool = False, needs_batch: bool = False, steps: int = 1) -> None:
    """Make ``fn(params, mask) -> scores`` available by name (``Config(score=name)``,
    ``scores=(..., name)``, :func:`get`). Higher scores survive. A name already taken raises
    unless ``replace``. ``needs_batch``: ``fn(params, mask, batch)`` with a :class:`Batch`.
    ``steps``: every pruning by this score is done in that many steps, rescored with the
    current mask before each (:func:`ltjax.pruning.prune_in_steps`, SynFlow's schedule).
    Registration lives in this process: register before ``lottery.run`` (the ``ltjax``
    command line sees only the built-in scores)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"score {name!r}: steps must be a positive integer, got {steps!r}")
    registry.add(SCORES, "score", name, fn, replace, "a function (params, mask) -> scores")
    (NEEDS_BATCH.add if needs_batch else NEEDS_BATCH.discard)(name)
    STEPS[name] = steps


def get(name: str) -> ScoreFn:
    """Score function by name; an unknown name raises with the valid choices."""
    try:
        return SCORES[name]
    except KeyError:
        raise ValueError(f"unknown score {name!r}; valid scores: {', '.join(sorted(SCORES))}") from None
