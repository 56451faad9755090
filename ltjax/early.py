"""Early winning tickets: when a ticket's structure emerges during one ordinary training run.

The building blocks of the early-ticket paper (prune at epoch s, rewind to epoch v; mask
dynamics; pseudo-prune-then-retrain; memorization capacity; gradual pruning) and of
early-bird detection (You et al. 2020). Pure functions over parameter and mask pytrees of
one ticket (``vmap`` them over a stack); the drivers that train are in
:mod:`ltjax.early_study`.

Conventions (stated because the papers leave them open):

* ``rate`` is the fraction of the pooled weights *pruned* (sparsity), 0.8 by default; the
  pool is every prunable layer except ``exclude`` (the paper leaves the first and the last
  layer unpruned: :func:`first_and_last`). Excluded layers keep all their weights.
* The normalized Hamming distance between two masks is the number of pooled weights on
  which they differ divided by the number of pooled weights (so two masks of sparsity p
  are at most ``2·min(p, 1−p)`` apart).
* Magnitude is ``|w|`` with the ordering rule of :mod:`ltjax.pruning` (ties to the earlier
  position), so a mask is a deterministic function of the weights.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import analysis
from ltjax import masks as M
from ltjax import pruning

PyTree = Any


# ---------------------------------------------------------------------------- pooled layers


def first_and_last(names: Sequence[str]) -> tuple[str, ...]:
    """The first and the last prunable layer in input-to-output order (the layers the
    early-ticket paper leaves unpruned), e.g. ``("fc1", "out")`` for LeNet-300-100."""
    order = analysis.display_order(list(names))
    return (order[0], order[-1]) if len(order) > 1 else tuple(order)


def _pooled(tree: PyTree, mask: PyTree, exclude: tuple[str, ...]) -> list[tuple[str, jax.Array]]:
    """``[(layer, leaf of tree)]`` for the prunable layers not excluded."""
    picked = jax.tree.map(lambda m, x: None if m is None else x, mask, tree, is_leaf=lambda x: x is None)
    return [(n, x) for n, x in M.leaves_with_names(picked) if not pruning.excluded(n, exclude)]


def pool_size(mask: PyTree, exclude: tuple[str, ...] = ()) -> int:
    """Number of weights in the pool (prunable layers except ``exclude``) of one ticket."""
    return sum(int(np.prod(np.shape(x))) for _, x in _pooled(mask, mask, exclude))


# ---------------------------------------------------------------------------- masks from weights


def magnitude_mask(params: PyTree, mask: PyTree, rate: float, exclude: tuple[str, ...] = ()) -> PyTree:
    """One-shot global magnitude pruning: prune ``round(rate · pool)`` of the pooled weights
    (the ones with the smallest ``|w|``; already pruned weights first) from ``mask``."""
    n = pool_size(mask, exclude)
    keep = n - pruning.static_prune_count(n, rate)
    return pruning.prune_to_count(jax.tree.map(jnp.abs, params), mask, keep, exclude=exclude)


def layer_rates(params: PyTree, mask: PyTree, rate: float, exclude: tuple[str, ...] = ()) -> dict[str, jax.Array]:
    """Per pooled layer, the fraction of its weights global magnitude pruning at ``rate``
    would remove (the early-ticket paper's Figure 2b), without pruning anything."""
    new = magnitude_mask(params, mask, rate, exclude)
    old_d, new_d = dict(_pooled(mask, mask, exclude)), dict(_pooled(new, mask, exclude))
    return {n: 1.0 - jnp.sum(new_d[n]) / jnp.maximum(jnp.sum(old_d[n]), 1) for n in old_d}


def layer_std(params: PyTree, mask: PyTree) -> dict[str, jax.Array]:
    """Per prunable layer, the standard deviation of its surviving weights (Figure 2a)."""
    out = {}
    for (n, w), (_, m) in zip(_pooled(params, mask, ()), _pooled(mask, mask, ())):
        k = jnp.maximum(jnp.sum(m), 1)
        mean = jnp.sum(jnp.where(m, w, 0)) / k
        out[n] = jnp.sqrt(jnp.sum(jnp.where(m, (w - mean) ** 2, 0)) / k)
    return out


def pooled_bits(mask: PyTree, exclude: tuple[str, ...] = ()) -> jax.Array:
    """The pooled layers' mask entries as one flat bool vector (tree order)."""
    return jnp.concatenate([jnp.ravel(m) for _, m in _pooled(mask, mask, exclude)])


def hamming(a: PyTree | jax.Array, b: PyTree | jax.Array, exclude: tuple[str, ...] = ()) -> jax.Array:
    """Normalized Hamming distance: the fraction of pooled weights on which masks ``a`` and
    ``b`` differ (masks as pytrees, or flat vectors from :func:`pooled_bits`)."""
    fa = a if isinstance(a, (jax.Array, np.ndarray)) else pooled_bits(a, exclude)
    fb = b if isinstance(b, (jax.Array, np.ndarray)) else pooled_bits(b, exclude)
    if fa.shape != fb.shape:
        raise ValueError(f"masks of different sizes: {fa.shape} and {fb.shape}")
    return jnp.mean(fa != fb)


def hamming_matrix(masks: Sequence[jax.Array]) -> np.ndarray:
    """Pairwise normalized Hamming distances of flat mask vectors (Figure 3), as float64."""
    bits = np.stack([np.asarray(m, bool) for m in masks])
    n = bits.shape[1]
    x = bits.astype(np.float32)
    differ = x @ (1 - x).T + (1 - x) @ x.T  # counts where exactly one is set
    return differ.astype(np.float64) / n


# ---------------------------------------------------------------------------- early-bird


def early_bird(distances_to_previous: Sequence[Sequence[float]], window: int = 5,
               threshold: float = 0.1) -> int | None:
    """You et al.'s early-bird rule: the first epoch index ``e`` at which the newest mask is
    within ``threshold`` of each of the previous ``window − 1`` masks.

    ``distances_to_previous[e][j]`` is the distance from epoch ``e``'s mask to epoch
    ``e − 1 − j``'s (j = 0 the previous one); epochs with fewer than ``window − 1``
    predecessors cannot fire. Returns ``None`` when no epoch qualifies.
    """
    if window < 2:
        raise ValueError(f"window must be at least 2 masks, got {window}")
    for e, d in enumerate(distances_to_previous):
        if e >= window - 1 and len(d) >= window - 1 and max(d[: window - 1]) <= threshold:
            return e
    return None


def distances_to_previous(masks: Sequence[jax.Array], window: int = 5) -> list[list[float]]:
    """For each epoch's flat mask, its normalized Hamming distance to each of the previous
    ``window − 1`` masks (most recent first): the input of :func:`early_bird`."""
    m = [np.asarray(x, bool) for x in masks]
    return [[float(np.mean(m[e] != m[e - 1 - j])) for j in range(min(e, window - 1))] for e in range(len(m))]


def channel_mask(params: PyTree, rate: float, scale_name: str = "scale") -> dict[str, jax.Array]:
    """Channel-level mask from batch-norm scales (network slimming, as early-bird uses):
    ``{bn layer: bool per channel}`` keeping channels whose ``|γ|`` is above the global
    ``rate`` quantile over all batch-norm layers (``round(rate · channels)`` pruned, ties
    to the earlier position). Raises ``ValueError`` for a model without batch norm."""
    found = [(M.layer_name(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
             if M.path_str(p).split("/")[-1] == scale_name and "batch_stats" not in M.path_str(p)]
    if not found:
        raise ValueError(f"the model has no batch-norm scales (no leaf named {scale_name!r}): channel-level "
                         "early-bird masks need batch norm; use weight-level masks")
    scores = {n: jnp.abs(g) for n, g in found}
    masks = {n: jnp.ones(g.shape, bool) for n, g in found}
    n_all = sum(int(g.size) for _, g in found)
    keep = n_all - pruning.static_prune_count(n_all, rate)
    return pruning.prune_to_count(scores, masks, keep)


# ---------------------------------------------------------------------------- gradual pruning


def cubic_sparsity(t, s_i: float, s_f: float, t0: int, n: int, dt: int):
    """Zhu & Gupta's schedule: ``s_t = s_f + (s_i − s_f)(1 − (t − t0)/(n·Δt))³`` for
    ``t0 ≤ t ≤ t0 + n·Δt``; ``s_i`` before ``t0`` and ``s_f`` after. Works on ints and
    traced arrays."""
    span = n * dt
    frac = jnp.clip((jnp.asarray(t, jnp.float32) - t0) / span, 0.0, 1.0)
    return s_f + (s_i - s_f) * (1.0 - frac) ** 3


def gradual_mask_update(mask_template: PyTree, s_i: float, s_f: float, t0: int, n: int, dt: int,
                        exclude: tuple[str, ...] = ()):
    """A ``mask_update`` for :func:`ltjax.train.make_trainer`: at iterations ``t0 + j·Δt``
    (j = 0..n) prune the pool by magnitude to ``round(s_t · pool)`` pruned weights
    (never fewer than already pruned: masks only shrink); at other iterations, no change."""
    size = pool_size(mask_template, exclude)

    def prune(t, params, mask):
        s = cubic_sparsity(t, s_i, s_f, t0, n, dt)
        keep = size - jnp.round(s * size).astype(jnp.int32)
        return pruning.prune_to_count(jax.tree.map(jnp.abs, params), mask, keep, exclude=exclude)

    def update(t, params, mask):
        j = t - t0
        due = (j >= 0) & (j <= n * dt) & (j % dt == 0)
        # a real branch: the global sort runs only at the n + 1 update steps (``due`` depends on
        # the iteration alone, so it stays a branch under vmap over tickets)
        return jax.lax.cond(due, prune, lambda t_, p_, m_: m_, t, params, mask)

    return update


# ---------------------------------------------------------------------------- random labels


def random_labels(y: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """Labels drawn uniformly at random (Boo et al.'s memorization test), deterministic per
    ``seed``; the images are untouched, so only the labels change."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7AB]))
    return rng.integers(0, num_classes, len(y)).astype(np.asarray(y).dtype)
