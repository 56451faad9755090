"""Masked optimization for anyone's training loop: an optax wrapper that keeps pruned weights at 0.

``keep_pruned(inner, mask)`` wraps any optax ``GradientTransformation`` (SGD with momentum,
Adam, AdamW with weight decay, a chain with a schedule, ...). It holds ``mask`` (an ltjax mask:
a pytree like the params with a bool array per prunable leaf and ``None`` elsewhere) in its state
and, at every ``update``:

1. multiplies the incoming gradients by the mask, so the inner optimizer never sees a
   gradient of a pruned weight and its per-weight state (momentum, Adam's moments) stays
   exactly 0 there;
2. runs the inner transformation;
3. replaces the update of every pruned weight by ``-params`` there (or 0 when ``update`` is
   called without params), so ``optax.apply_updates`` leaves it at exactly 0: ``p + (-p) = 0``
   in floating point. Weight decay and any other term that reads the params are cancelled on
   pruned weights the same way. Unmasked params become pruned after the first step; passing
   ``masks.apply_mask(params, mask)`` in from the start is the usual way.

Leaves whose mask is ``None`` (biases, batch-norm scales) are updated by the inner optimizer
as they would be without the wrapper (bitwise, tested). The surviving weights follow the
arithmetic of a hand-written masked step (mask the gradient, update, mask the weights), to
float rounding: the two are different programs, which XLA may fuse differently.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ltjax.masks import apply_mask

PyTree = Any


class KeepPrunedState(NamedTuple):
    """``mask``: the ltjax mask the wrapper enforces; ``inner``: the wrapped optimizer's state."""

    mask: PyTree
    inner: optax.OptState


def _is_none(x) -> bool:
    return x is None


def keep_pruned(inner: optax.GradientTransformation, mask: PyTree) -> optax.GradientTransformation:
    """``inner`` restricted to the weights ``mask`` keeps; pruned weights are held at exactly 0.

    ``mask`` must have the params' tree structure with ``None`` on leaves that are never pruned
    (as :func:`ltjax.masks.make_mask` builds it). To change the mask (a new pruning round),
    build a new optimizer and state: IMP restarts the optimizer every round.
    """
    inner = optax.with_extra_args_support(inner)

    def init(params):
        return KeepPrunedState(mask, inner.init(apply_mask(params, mask)))

    def update(updates, state, params=None, **extra):
        grads = apply_mask(updates, state.mask)
        new, inner_state = inner.update(grads, state.inner, params, **extra)

        def hold(m, u, p):
            if m is None:
                return u
            return jnp.where(m, u, jnp.zeros((), u.dtype) if p is None else -p.astype(u.dtype))

        if params is None:
            new = jax.tree.map(lambda m, u: hold(m, u, None), state.mask, new, is_leaf=_is_none)
        else:
            new = jax.tree.map(hold, state.mask, new, params, is_leaf=_is_none)
        return new, KeepPrunedState(state.mask, inner_state)

    return optax.GradientTransformationExtraArgs(init, update)


__all__ = ["KeepPrunedState", "keep_pruned"]
