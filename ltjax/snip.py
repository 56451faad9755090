"""Pruning at initialization: SNIP (Lee et al. 2019) and iterative SNIP (the LTH-vs-SNIP report).

SNIP scores every prunable weight once, at initialization, from one minibatch, and prunes
the lowest-scoring ones globally (one pool of all prunable layers):

* auxiliary gates ``c = 1`` multiply the (masked) weights, ``w = c ⊙ m ⊙ θ``;
* ``g_j = ∂L(c ⊙ m ⊙ θ) / ∂c_j`` at ``c = 1`` (equivalently ``θ_j · ∂L/∂w_j``);
* saliency ``s_j = |g_j| / Σ_k |g_k|``, the sum over the surviving prunable weights.

The SNIP paper takes absolute values; the report's formula (its sec. 4.3, step 4) omits
them. ltjax follows SNIP: without the absolute value, a weight whose removal would *lower*
the loss a lot would rank as least important to keep. The normalization does not change
the ranking; it is kept so saliencies are comparable across batches and networks.

Iterative SNIP (report sec. 4.4) prunes in steps before any training: to survivor counts
``N_1 > N_2 > … > N`` (:func:`geometric_schedule`: the counts IMP's per-round rates would
leave, e.g. 20% of each fully connected and 10% of each convolutional layer's survivors
per step), re-scoring at each step with the already pruned weights masked out. With one
step it is SNIP exactly. Every step uses the same minibatch (SNIP's "one minibatch").

All functions are pure and work under ``jax.vmap`` over tickets (keep counts may differ
per ticket).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from ltjax import masks as M
from ltjax import pruning, scores

PyTree = Any
LossFn = Callable[[PyTree, jax.Array, jax.Array], jax.Array]  # (params, x, y) -> mean loss


def _is_none(x) -> bool:
    return x is None


def connection_sensitivity(loss_fn: LossFn, params: PyTree, mask: PyTree, x: jax.Array, y: jax.Array) -> PyTree:
    """SNIP saliency ``|g_j| / Σ_k |g_k|`` of every prunable weight (``None`` elsewhere).

    Args:
      loss_fn: ``(params, x, y) -> scalar`` mean loss of the network on a batch.
      params: the weights to score (θ0 for SNIP).
      mask: current mask; pruned weights get saliency 0 (their gate multiplies a zero).
      x, y: one minibatch.
    Returns:
      Saliencies shaped like ``mask`` (float32), summing to 1 over the surviving weights
      (all zeros if every gradient is zero).
    """
    gates = jax.tree.map(lambda m: None if m is None else jnp.ones(m.shape, jnp.float32), mask, is_leaf=_is_none)

    def gated_loss(c):
        w = jax.tree.map(lambda m, p, g: p if m is None else jnp.where(m, p, jnp.zeros((), p.dtype)) * g.astype(p.dtype),
                         mask, params, c, is_leaf=_is_none)
        return loss_fn(w, x, y)

    g = jax.grad(gated_loss)(gates)
    a = jax.tree.map(lambda m, gj: None if m is None else jnp.where(m, jnp.abs(gj), 0.0), mask, g, is_leaf=_is_none)
    total = sum(jnp.sum(v) for v in jax.tree.leaves(a))
    scale = jnp.where(total > 0, 1.0 / jnp.where(total > 0, total, 1.0), 0.0)
    return jax.tree.map(lambda v: v * scale, a)


def snip(loss_fn: LossFn, params: PyTree, mask: PyTree, x: jax.Array, y: jax.Array, keep: int | jax.Array,
         *, exclude: tuple[str, ...] = ()) -> PyTree:
    """SNIP: keep the ``keep`` most salient surviving weights of the pooled prunable layers.

    ``exclude`` layers are neither scored into the pool nor pruned. Ties in saliency break
    by position (see :mod:`ltjax.pruning`). Returns the new mask.
    """
    s = connection_sensitivity(loss_fn, params, mask, x, y)
    return pruning.prune_to_count(s, mask, keep, exclude=exclude)


def iterative_snip(loss_fn: LossFn, params: PyTree, mask: PyTree, x: jax.Array, y: jax.Array,
                   keeps: Sequence[int] | jax.Array, *, exclude: tuple[str, ...] = ()) -> PyTree:
    """Iterative SNIP: SNIP to ``keeps[0]`` survivors, re-score, SNIP to ``keeps[1]``, ...

    ``keeps`` must be non-increasing (a repeated count is a step that prunes nothing, which
    lets schedules of different lengths share one vmapped program). With ``keeps=[N]`` this
    is :func:`snip` exactly.
    """
    keeps = jnp.asarray(keeps, jnp.int32).reshape(-1)

    def step(m, k):
        return snip(loss_fn, params, m, x, y, k, exclude=exclude), None

    out, _ = lax.scan(step, mask, keeps)
    return out


def geometric_schedule(alive: Mapping[str, int], rates: Mapping[str, float], keep: int) -> list[int]:
    """Survivor totals after each step of iterative SNIP, ending exactly at ``keep``.

    Each step removes ``round(rate_l · survivors_l)`` from every layer l (IMP's counting
    rule, :func:`ltjax.pruning.prune_count`) until the total reaches ``keep`` or fewer; the
    last entry is then ``keep``. So for an IMP ticket of round r pruned with the same
    rates, the schedule has r steps and its i-th entry is round i's ticket size.

    Args:
      alive: survivors per layer before the first step (e.g. the dense sizes).
      rates: fraction of each layer's survivors removed per step.
      keep: the final total.
    """
    counts = {k: int(v) for k, v in alive.items()}
    total = sum(counts.values())
    if not 0 <= keep <= total:
        raise ValueError(f"keep={keep} must be in [0, {total}] (the survivors before the first step)")
    out: list[int] = []
    while total > keep:
        counts = {k: n - int(pruning.prune_count(n, rates[k])) for k, n in counts.items()}
        new = sum(counts.values())
        if new >= total:  # rates too small to remove anything more: finish in one step
            break
        total = new
        out.append(max(total, keep))
    if not out or out[-1] != keep:
        out.append(keep)
    return out


def schedule_array(schedules: Sequence[Sequence[int]]) -> jax.Array:
    """Stack per-ticket schedules of different lengths into one (T, S) array; a shorter
    schedule is padded at the end with its last count, so its extra steps prune nothing."""
    S = max(len(s) for s in schedules)
    return jnp.asarray([list(s) + [s[-1]] * (S - len(s)) for s in schedules], jnp.int32)


def pool_size(mask: PyTree, exclude: tuple[str, ...] = ()) -> jax.Array:
    """Survivors in the SNIP pool: all prunable layers except ``exclude``."""
    return sum(c for n, c in M.count(mask).items() if not pruning.excluded(n, exclude))


def snip_score(params: PyTree, mask: PyTree, batch: scores.Batch) -> PyTree:
    """SNIP's :func:`connection_sensitivity` as a score (on the ticket's iteration-0 batch):
    with ``scope="global"`` and ``mode="at_init"``, a study's tickets are SNIP networks."""
    return connection_sensitivity(batch.loss_fn, params, mask, batch.x, batch.y)


scores.register("snip", snip_score, needs_batch=True)
