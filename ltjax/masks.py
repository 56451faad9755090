"""Masks: pytrees shaped like the params, a bool array per prunable tensor, ``None`` elsewhere.

Every function here is pure and works unchanged under ``jax.vmap`` (a stack of T masks
with a leading ticket axis). Densities are fractions *remaining*; sparsity is
``1 - density``.

Layer names are the '/'-joined dict keys leading to a prunable leaf, without the leaf's
own name: the kernel at ``params['fc1']['kernel']`` belongs to layer ``"fc1"``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

PyTree = Any


def _is_none(x) -> bool:
    return x is None


def _key_str(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def path_str(path) -> str:
    """'/'-joined names of a tree path, e.g. ``"fc1/kernel"``."""
    return "/".join(_key_str(k) for k in path)


def layer_name(path) -> str:
    """Layer a leaf belongs to: its path without the last entry (``"fc1"`` for ``fc1/kernel``)."""
    parts = [_key_str(k) for k in path]
    return "/".join(parts[:-1]) if len(parts) > 1 else parts[0]


def leaves_with_names(mask: PyTree) -> list[tuple[str, jax.Array]]:
    """``[(layer_name, mask_leaf)]`` for the prunable leaves of ``mask``, in tree order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(mask, is_leaf=_is_none)
    return [(layer_name(p), leaf) for p, leaf in flat if leaf is not None]


def layer_names(mask: PyTree) -> list[str]:
    """Names of the prunable layers of ``mask``, in tree order."""
    return [name for name, _ in leaves_with_names(mask)]


def make_mask(params: PyTree, is_prunable: Callable[[tuple, Any], bool]) -> PyTree:
    """All-ones mask: ``True`` everywhere on leaves where ``is_prunable(path, leaf)``, else ``None``."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.ones(jnp.shape(x), bool) if is_prunable(p, x) else None, params
    )


def apply_mask(params: PyTree, mask: PyTree) -> PyTree:
    """``params ⊙ mask``: pruned entries become exactly 0; leaves with a ``None`` mask pass through."""
    return jax.tree.map(
        lambda m, p: p if m is None else jnp.where(m, p, jnp.zeros((), p.dtype)),
        mask, params, is_leaf=_is_none,
    )


def count(mask: PyTree) -> dict[str, jax.Array]:
    """Surviving weights per prunable layer: ``{layer: int32 count}``."""
    return {name: jnp.sum(m, dtype=jnp.int32) for name, m in leaves_with_names(mask)}


def size(mask: PyTree) -> dict[str, int]:
    """Total weights per prunable layer of one ticket's mask (static ints)."""
    return {name: int(m.size) for name, m in leaves_with_names(mask)}


def density(mask: PyTree) -> dict[str, jax.Array]:
    """Fraction of weights remaining per prunable layer, ``{layer: float32}``."""
    return {name: jnp.mean(m, dtype=jnp.float32) for name, m in leaves_with_names(mask)}


def global_density(mask: PyTree) -> jax.Array:
    """Fraction of all prunable weights remaining (unprunable leaves are not counted)."""
    leaves = [m for _, m in leaves_with_names(mask)]
    alive = sum(jnp.sum(m, dtype=jnp.int32) for m in leaves)
    return alive / sum(m.size for m in leaves)


def complement(mask: PyTree) -> PyTree:
    """``1 - m`` on the prunable leaves (the "LTH_flip" mask); ``None`` leaves stay ``None``."""
    return jax.tree.map(lambda m: None if m is None else ~m, mask, is_leaf=_is_none)


def intersection(a: PyTree, b: PyTree) -> PyTree:
    """Weights surviving in both masks."""
    return jax.tree.map(lambda x, y: None if x is None else x & y, a, b, is_leaf=_is_none)


def overlap(a: PyTree, b: PyTree) -> dict[str, jax.Array]:
    """Per layer, and under ``"total"``, the number of weights that survive in both masks."""
    per_layer = count(intersection(a, b))
    per_layer["total"] = sum(per_layer.values())
    return per_layer


def hamming(a: PyTree, b: PyTree) -> jax.Array:
    """Normalized Hamming distance: fraction of prunable weights on which the masks differ."""
    la = [m for _, m in leaves_with_names(a)]
    lb = [m for _, m in leaves_with_names(b)]
    diff = sum(jnp.sum(x != y, dtype=jnp.int32) for x, y in zip(la, lb))
    return diff / sum(x.size for x in la)


def compare(a: PyTree, b: PyTree) -> dict[str, dict[str, jax.Array]]:
    """Counts comparing two masks, per prunable layer and under ``"total"``.

    For each layer: ``kept_a`` and ``kept_b`` (survivors of each mask), ``overlap``
    (surviving in both), ``only_a`` (surviving in ``a``, pruned in ``b``), ``only_b``, and
    ``difference = only_a + only_b`` (the Hamming distance as a count).

    The LTH-vs-SNIP report's Tables 6-7 compare masks of equal size (a SNIP ticket is
    pruned to the LTH ticket's count). Its columns are, in these terms: **Kept** =
    ``kept_a`` (= ``kept_b``), **Overlap** = ``overlap``, and **Difference** = ``only_a``
    (= ``only_b``): weights kept by one and pruned by the other, counted on one side; its
    numbers satisfy Kept = Overlap + Difference (Table 6, row 1: 174,184.5 + 38,875.5 =
    213,060). Per layer the two one-sided counts can differ, since SNIP is global.
    """
    out: dict[str, dict[str, jax.Array]] = {}
    for (name, x), (_, y) in zip(leaves_with_names(a), leaves_with_names(b)):
        row = {
            "kept_a": jnp.sum(x, dtype=jnp.int32), "kept_b": jnp.sum(y, dtype=jnp.int32),
            "overlap": jnp.sum(x & y, dtype=jnp.int32),
            "only_a": jnp.sum(x & ~y, dtype=jnp.int32), "only_b": jnp.sum(~x & y, dtype=jnp.int32),
        }
        row["difference"] = row["only_a"] + row["only_b"]
        out[name] = row
    out["total"] = {k: sum(r[k] for r in out.values()) for k in next(iter(out.values()))} if out else {}
    return out
