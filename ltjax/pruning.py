"""``prune(scores, mask, ...)``: remove the lowest-scoring surviving weights, exactly.

Counting rule. A pruning step with rate ``q`` (fraction of the *surviving* weights to
remove) on a pool with ``n`` survivors removes exactly ``k = round(q · n)`` weights, halves
rounded up. ``q`` is taken as the nearest fraction ``a/b`` with ``b ≤ 10_000`` (exact for the
rates the papers use: 0.2, 0.1, 0.35, ...) so ``k`` is computed in exact integer arithmetic,
also under ``jit``/``vmap`` where ``n`` is a traced value.

Ordering rule. Survivors are ranked by (score, flat position) ascending and the first ``k``
are removed: ties break deterministically toward the earlier position (in tree order, then
row-major within a tensor). Already pruned weights never come back and their scores are
ignored. NaN scores sort last (treated as most important), so a NaN can't prune a weight.

Scopes:
  * ``layerwise``: every prunable layer is its own pool with its own rate (the 2018 paper
    prunes hidden layers at 20% and the output layer at 10% per round).
  * ``global``: one pool of all prunable layers except ``exclude`` (OpenLTH's LeNet setting
    excludes the output layer); excluded layers keep their mask unchanged.
"""

from __future__ import annotations

import fnmatch
from fractions import Fraction
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from jax import lax

from ltjax import masks as M

PyTree = Any
SCOPES = ("layerwise", "global")
_MAX_DENOMINATOR = 10_000


def _as_fraction(rate: float) -> tuple[int, int]:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"pruning rate must be a fraction in [0, 1] of surviving weights, got {rate!r}")
    f = Fraction(rate).limit_denominator(_MAX_DENOMINATOR)
    return f.numerator, f.denominator


def prune_count(alive: jax.Array, rate: float) -> jax.Array:
    """``round(rate · alive)``, halves up, in exact int32 arithmetic (see module docstring)."""
    num, den = _as_fraction(rate)
    alive = jnp.asarray(alive, jnp.int32)
    q, r = alive // den, alive % den
    return q * num + (r * num + den // 2) // den


def static_prune_count(alive: int, rate: float) -> int:
    """:func:`prune_count` for a Python int (usable while tracing, where sizes are static)."""
    num, den = _as_fraction(rate)
    q, r = divmod(int(alive), den)
    return q * num + (r * num + den // 2) // den


def remove_lowest(scores: jax.Array, alive: jax.Array, k: int | jax.Array) -> jax.Array:
    """``alive`` (bool, 1-D) with its ``k`` lowest-scoring alive entries removed: the one
    ordering rule of every pruning function here. Entries are ranked by (score, position)
    ascending among the alive ones, so ties remove the earlier position first; dead entries
    stay dead. ``k`` may be traced; a ``k`` above the number alive removes them all."""
    n = alive.shape[0]
    pos = lax.iota(jnp.int32, n)
    # Sort keys, most significant first: pruned before surviving, then score, then position.
    # The position key makes the order total, hence ties deterministic.
    _, _, order = lax.sort((alive.astype(jnp.int32), scores.astype(jnp.float32), pos), num_keys=3)
    rank = jnp.zeros(n, jnp.int32).at[order].set(pos)
    return alive & (rank >= (n - jnp.sum(alive, dtype=jnp.int32)) + k)


def _prune_pool(scores: list[jax.Array], masks: list[jax.Array], rate: float | None = None,
                keep: jax.Array | None = None) -> list[jax.Array]:
    """Prune one pool of tensors jointly, by ``rate`` of its survivors or down to ``keep``
    survivors; returns the new masks in the same shapes."""
    flat_s = jnp.concatenate([s.reshape(-1).astype(jnp.float32) for s in scores])
    flat_m = jnp.concatenate([m.reshape(-1) for m in masks])
    alive = jnp.sum(flat_m, dtype=jnp.int32)
    if keep is None:
        k = prune_count(alive, rate)
    else:
        k = jnp.clip(alive - jnp.asarray(keep, jnp.int32), 0, alive)
    new = remove_lowest(flat_s, flat_m, k)
    out, start = [], 0
    for m in masks:
        out.append(new[start : start + m.size].reshape(m.shape))
        start += m.size
    return out


def _rate_for(name: str, rate: float | Mapping[str, float]) -> float:
    if not isinstance(rate, Mapping):
        return float(rate)
    for pattern, r in rate.items():
        if fnmatch.fnmatchcase(name, pattern):
            return float(r)
    raise ValueError(
        f"no pruning rate given for layer {name!r}; rates were given for patterns {list(rate)}"
        " (add '*' as a catch-all pattern)"
    )


def layer_rates(names: list[str], base: float, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """Per-layer rates: ``base`` everywhere, except layers matching an override pattern (first match wins)."""
    overrides = dict(overrides or {})
    return {n: _rate_for(n, {**overrides, "*": base}) for n in names}


def excluded(name: str, exclude: tuple[str, ...]) -> bool:
    """Whether layer ``name`` matches one of the ``exclude`` names or globs."""
    return any(fnmatch.fnmatchcase(name, e) for e in exclude)


def _pool(mask: PyTree, exclude: tuple[str, ...]):
    flat_m, treedef = jax.tree_util.tree_flatten_with_path(mask, is_leaf=lambda x: x is None)
    names = [M.layer_name(p) for p, _ in flat_m]
    leaves = [m for _, m in flat_m]
    included = [
        i for i, (n, m) in enumerate(zip(names, leaves))
        if m is not None and not excluded(n, exclude)
    ]
    return treedef, names, leaves, included


def prune_to_count(scores: PyTree, mask: PyTree, keep: int | jax.Array, *, exclude: tuple[str, ...] = ()) -> PyTree:
    """Global pruning to an exact size: keep the ``keep`` highest-scoring survivors of the
    pool of all prunable layers except ``exclude`` (same ordering rule as :func:`prune`).

    ``keep`` may be a traced integer (one per ticket under ``vmap``). If the pool holds no
    more than ``keep`` survivors, the mask is returned unchanged. Used where a method must
    match another's weight count exactly (SNIP tickets sized like an IMP round's ticket).
    """
    treedef, _, leaves, included = _pool(mask, exclude)
    flat_s = treedef.flatten_up_to(scores)
    new = list(leaves)
    if included:
        pooled = _prune_pool([flat_s[i] for i in included], [leaves[i] for i in included], keep=keep)
        for i, m in zip(included, pooled):
            new[i] = m
    return jax.tree_util.tree_unflatten(treedef, new)


def prune(
    scores: PyTree,
    mask: PyTree,
    rate: float | Mapping[str, float],
    *,
    scope: str = "layerwise",
    exclude: tuple[str, ...] = (),
) -> PyTree:
    """Remove the lowest-scoring surviving weights; returns the new mask (masks only shrink).

    Args:
      scores: float pytree shaped like ``mask`` (``None`` on unprunable leaves).
      mask: current mask of one ticket (vmap for a stack of tickets).
      rate: fraction of surviving weights to remove. ``layerwise``: a float for every
        layer, or ``{layer_name_or_glob: rate}`` (first matching pattern wins). ``global``:
        one float for the pooled layers.
      scope: ``"layerwise"`` or ``"global"``.
      exclude: layer names or globs left untouched by pruning (either scope).
    Returns:
      The new mask, same structure; ``None`` leaves stay ``None``.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown pruning scope {scope!r}; valid scopes: {', '.join(SCOPES)}")
    treedef, names, leaves, included = _pool(mask, exclude)
    flat_s = treedef.flatten_up_to(scores)
    new = list(leaves)
    if scope == "layerwise":
        for i in included:
            (new[i],) = _prune_pool([flat_s[i]], [leaves[i]], _rate_for(names[i], rate))
    elif included:
        if isinstance(rate, Mapping):
            raise ValueError("global pruning takes one rate (a float), not per-layer rates")
        pooled = _prune_pool([flat_s[i] for i in included], [leaves[i] for i in included], float(rate))
        for i, m in zip(included, pooled):
            new[i] = m
    return jax.tree_util.tree_unflatten(treedef, new)


def exponential_keeps(alive: jax.Array, keep: jax.Array, steps: int) -> jax.Array:
    """Survivor counts after each of ``steps`` steps from ``alive`` down to ``keep`` on SynFlow's
    exponential schedule (Tanaka et al. 2020, sec. 6: density ``d^(i/steps)`` after step i of
    ``steps``, ``d = keep / alive``): ``round(alive · d^(i/steps))``, non-increasing, the last
    exactly ``keep``. Int32 of shape ``(steps,)``; traceable."""
    alive, keep = jnp.asarray(alive, jnp.int32), jnp.asarray(keep, jnp.int32)
    a = jnp.maximum(alive, 1).astype(jnp.float32)
    frac = lax.iota(jnp.float32, steps) / steps + 1.0 / steps
    counts = jnp.round(a * (keep.astype(jnp.float32) / a) ** frac).astype(jnp.int32)
    return jnp.clip(counts, keep, alive).at[-1].set(keep)


def prune_in_steps(score_fn, mask: PyTree, steps: int, *, rate: float | Mapping[str, float] | None = None,
                   keep: int | jax.Array | Mapping[str, Any] | None = None, scope: str = "layerwise",
                   exclude: tuple[str, ...] = ()) -> tuple[PyTree, jax.Array]:
    """Prune ``mask`` in ``steps`` steps, calling ``score_fn(current mask) -> scores`` before each.

    The target is ``rate`` (as :func:`prune`: each pool loses ``round(rate · survivors)``) or
    ``keep`` (``global``: the pool's survivor count; ``layerwise``: ``{layer: count}``). Each
    pool's survivors follow :func:`exponential_keeps` and end at the target exactly; every step
    removes the lowest-scoring survivors under :func:`prune`'s ordering rule. With
    ``steps=1`` and a ``rate`` this is ``prune(score_fn(mask), mask, rate, ...)``.

    Returns ``(new mask, finite)``: ``finite`` is whether every step's scores were finite.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown pruning scope {scope!r}; valid scopes: {', '.join(SCOPES)}")
    if (rate is None) == (keep is None):
        raise ValueError("prune_in_steps takes exactly one of rate= and keep=")
    finite = lambda s: jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(s)] or [True]))  # noqa: E731
    if steps == 1 and rate is not None:
        s = score_fn(mask)
        return prune(s, mask, rate, scope=scope, exclude=exclude), finite(s)
    treedef, names, leaves, included = _pool(mask, exclude)
    if scope == "global" and isinstance(rate, Mapping):
        raise ValueError("global pruning takes one rate (a float), not per-layer rates")
    pools = [[i] for i in included] if scope == "layerwise" else ([included] if included else [])
    schedules = []
    for pool in pools:
        alive = sum(jnp.sum(leaves[i], dtype=jnp.int32) for i in pool)
        if rate is not None:
            target = alive - prune_count(alive, _rate_for(names[pool[0]], rate))
        else:
            target = keep[names[pool[0]]] if isinstance(keep, Mapping) else keep
        schedules.append(exponential_keeps(alive, target, steps))
    if not pools:
        return mask, finite(score_fn(mask))

    def step(current, keeps):
        flat_s = treedef.flatten_up_to(score_fn(jax.tree_util.tree_unflatten(treedef, current)))
        new = list(current)
        for j, pool in enumerate(pools):
            for i, m in zip(pool, _prune_pool([flat_s[i] for i in pool], [current[i] for i in pool], keep=keeps[j])):
                new[i] = m
        return new, finite([flat_s[i] for i in included])

    out, ok = lax.scan(step, leaves, jnp.stack(schedules, axis=1))
    return jax.tree_util.tree_unflatten(treedef, out), jnp.all(ok)
