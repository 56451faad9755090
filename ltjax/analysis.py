"""Anatomy of winning tickets (Frankle & Carbin 2018, section 5; Figures 9 and 10).

Pure functions on one ticket's or a stack of tickets' params and masks (pytrees as in
:mod:`ltjax.masks`: a bool array per prunable kernel, ``None`` elsewhere), plus the
bookkeeping that picks the round of a run closest to a density the paper names.

Dense kernels are ``[fan_in, fan_out]`` (Flax ``Dense``); a stack of T tickets adds
leading axes, ``[T, fan_in, fan_out]``. Densities are fractions *remaining*.

* :func:`survivor_init_values` — initial weights of surviving connections (Figure 9).
* :func:`prune_dead_edges` — drop surviving edges with no path to an output unit
  (Figure 10, footnote 7).
* :func:`incoming_counts`, :func:`aggregate_counts` — surviving incoming connections per
  unit, sorted in descending order, and their summary over tickets (Figure 10).
* :func:`layer_densities`, :func:`round_densities`, :func:`closest_round`,
  :func:`select_rounds` — which round is "the network pruned to 51.2%".
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Literal, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import masks as M

PyTree = Any


def _is_none(x) -> bool:
    return x is None


def _named_leaves(mask: PyTree) -> dict[str, Any]:
    """``{layer: mask leaf}``; a layer with two prunable leaves is ambiguous here, so refused."""
    pairs = M.leaves_with_names(mask)
    names = [n for n, _ in pairs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"layers {dup} have more than one prunable leaf; the anatomy functions "
                         "expect one prunable kernel per layer")
    return dict(pairs)


def _replace_named(mask: PyTree, new: Mapping[str, Any]) -> PyTree:
    """``mask`` with the prunable leaf of each layer in ``new`` replaced (same structure)."""
    return jax.tree_util.tree_map_with_path(
        lambda p, m: None if m is None else new.get(M.layer_name(p), m), mask, is_leaf=_is_none
    )


# ---------------------------------------------------------------------------- Figure 9


def survivor_init_values(theta0: PyTree, mask: PyTree) -> dict[str, np.ndarray]:
    """Initial values of the surviving weights, per prunable layer (Figure 9).

    ``{layer: theta0[layer][mask[layer]]}`` as a 1-D NumPy array, in row-major order of the
    mask. With a stack (ticket axis leading on both ``theta0`` and ``mask``) the survivors of
    all tickets are pooled into one array per layer, as the paper pools ten runs. Leaves with
    a ``None`` mask (biases) are not reported. Not jittable: the output length is the number
    of survivors.
    """
    def pick(m, p):
        if m is None:
            return None
        m, p = np.asarray(m), np.asarray(p)
        if m.shape != p.shape:
            raise ValueError(f"mask leaf of shape {m.shape} does not match parameter of shape {p.shape}; "
                             "pass theta0 and mask of the same ticket(s)")
        return p[m]

    return _named_leaves(jax.tree.map(pick, mask, theta0, is_leaf=_is_none))


# ---------------------------------------------------------------------------- Figure 10


def mlp_layer_order(names: Sequence[str]) -> list[str]:
    """Input-to-output order of the layers of :class:`ltjax.models.mlp.MLP`: ``fc1 … fcN, out``.

    Tree order is alphabetical (``fc10`` before ``fc2``), so the order is rebuilt from the
    names. Raises ``ValueError`` for other names: pass ``layer_order`` explicitly then.
    """
    hidden = {}
    for n in names:
        if (g := re.fullmatch(r"fc(\d+)", n)) is not None:
            hidden[int(g.group(1))] = n
        elif n != "out":
            raise ValueError(f"layer {n!r} is not an MLP layer (fc<k> or out); pass layer_order "
                             f"explicitly (layers: {list(names)})")
    if "out" not in names:
        raise ValueError(f"no 'out' layer among {list(names)}; pass layer_order explicitly")
    return [hidden[k] for k in sorted(hidden)] + ["out"]


def display_order(names: Sequence[str]) -> list[str]:
    """An input-to-output reading order for plots of any model's layers: numbers inside names
    compare as numbers (``conv2`` before ``conv10``, ``s1b2`` before ``s2b1``), other text
    alphabetically (ltjax's ResNet stem ``conv`` before the blocks ``s…``), and ``out`` last.
    For display only; path analyses that need the true order take ``layer_order``."""
    def key(n):
        parts = [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n) if p]
        return (n == "out", [(0, p) if isinstance(p, int) else (1, p) for p in parts])

    return sorted(names, key=key)


def _chain(mask: PyTree, layer_order: Sequence[str] | None) -> tuple[dict[str, Any], list[str]]:
    leaves = _named_leaves(mask)
    order = list(layer_order) if layer_order is not None else mlp_layer_order(list(leaves))
    if sorted(order) != sorted(leaves):
        raise ValueError(f"layer_order {order} must list every prunable layer exactly once: {sorted(leaves)}")
    for a, b in zip(order, order[1:]):
        sa, sb = jnp.shape(leaves[a]), jnp.shape(leaves[b])
        if len(sa) < 2 or len(sb) < 2 or sa[-1] != sb[-2] or sa[:-2] != sb[:-2]:
            raise ValueError(f"{a} {sa} → {b} {sb} is not a chain of dense kernels [..., fan_in, fan_out] "
                             f"(fan_out of {a} must equal fan_in of {b})")
    return leaves, order


def prune_dead_edges(mask: PyTree, layer_order: Sequence[str] | None = None,
                     from_inputs: bool = False) -> PyTree:
    """Remove the surviving edges of a chain of dense layers that have no path to an output unit.

    Layers ``l = 1..L`` (``layer_order``, input to output; default :func:`mlp_layer_order`)
    have kernels ``K_l`` of shape ``[..., n_{l-1}, n_l]``. Going backwards, with
    ``alive_L = 1`` (every output unit is alive)::

        K'_l[i, j]   = K_l[i, j] and alive_l[j]
        alive_{l-1}[i] = any_j K'_l[i, j]

    so a unit is alive iff it has a surviving outgoing edge to an alive unit, and an edge
    survives iff it is in the mask and its destination unit is alive. The output layer's
    edges are never removed. This is footnote 7 of Frankle & Carbin (2018): "We also
    removed any edges that did not have a path to an output unit."

    With ``from_inputs=True`` edges with no path *from* an input unit are removed too (a
    forward pass of the same rule: an edge survives iff its source unit is reachable from
    an input). Off by default: the paper does not say it, and such an edge still carries
    the source unit's constant bias activation.

    Returns a mask of the same structure (``None`` leaves stay ``None``; leaves become JAX
    bool arrays). Leading axes (a ticket stack) broadcast, and the function works under
    ``jax.vmap`` and ``jax.jit``. Every prunable layer must be in ``layer_order``.
    """
    leaves, order = _chain(mask, layer_order)
    k = {n: jnp.asarray(leaves[n], bool) for n in order}
    alive = jnp.ones(jnp.shape(k[order[-1]])[:-2] + jnp.shape(k[order[-1]])[-1:], bool)
    for n in reversed(order):
        k[n] = k[n] & alive[..., None, :]
        alive = jnp.any(k[n], axis=-1)
    if from_inputs:
        reach = jnp.ones(jnp.shape(k[order[0]])[:-1], bool)
        for n in order:
            k[n] = k[n] & reach[..., :, None]
            reach = jnp.any(k[n], axis=-2)
    return _replace_named(mask, k)


def incoming_counts(mask: PyTree, sort: bool = True) -> dict[str, jax.Array]:
    """Surviving incoming connections of each unit, per prunable dense layer (Figure 10).

    ``{layer: c}`` with ``c[..., j] = sum_i K[..., i, j]`` (the sum over the fan_in axis of a
    ``[..., fan_in, fan_out]`` kernel), int32, one entry per unit of the layer's output;
    sorted in descending order along the unit axis when ``sort`` (then entry ``r`` is the
    count of the r-th best-connected unit, not of unit r). Per ticket: a stack gives
    ``[T, fan_out]``. Apply :func:`prune_dead_edges` first to count as the paper does.
    """
    out = {}
    for n, m in _named_leaves(mask).items():
        c = jnp.sum(jnp.asarray(m), axis=-2, dtype=jnp.int32)
        out[n] = -jnp.sort(-c, axis=-1) if sort else c
    return out


def aggregate_counts(counts: np.ndarray | jax.Array, how: Literal["mean", "pool"] = "mean") -> np.ndarray:
    """Summarize per-ticket sorted counts ``[T, n]`` of one layer into one descending curve.

    * ``"mean"``: ``mean_t sort_desc(counts[t])[r]`` for each rank ``r`` — length ``n``: the
      average over tickets of the r-th best-connected unit's count.
    * ``"pool"``: the ``T * n`` units of all tickets sorted together, descending.

    The paper says only that the Figure 10 "data points were collected over ten trials"
    (its footnote 7 is about dead-edge removal, not aggregation); ``"mean"`` keeps one point
    per unit of the layer, as its x-axes do. A 1-D input is one ticket and comes back
    sorted. Rows are re-sorted here, so unsorted counts are fine.
    """
    c = np.asarray(counts)
    if c.ndim == 1:
        c = c[None]
    if c.ndim != 2:
        raise ValueError(f"counts must be [T, n] (or [n] for one ticket), got shape {c.shape}")
    if how == "mean":
        return -np.sort(-c, axis=1).mean(axis=0)
    if how == "pool":
        return -np.sort(-c.reshape(-1))
    raise ValueError(f"unknown aggregation {how!r}; use 'mean' or 'pool'")


# ---------------------------------------------------------------------------- densities


def layer_densities(layer_density: Mapping[str, Any], sizes: Mapping[str, int],
                    layers: Sequence[str]) -> np.ndarray:
    """Density of a group of layers: ``sum_l d_l n_l / sum_l n_l`` over ``layers``.

    ``layer_density`` maps a layer to its density (a number or per-ticket array);
    ``sizes`` maps it to its number of prunable weights ``n_l``.
    """
    missing = [n for n in layers if n not in layer_density or n not in sizes]
    if missing or not layers:
        raise ValueError(f"layers {list(layers)}: need a density and a size for each; missing {missing} "
                         f"(known: {sorted(layer_density)})")
    total = sum(sizes[n] for n in layers)
    return sum(np.asarray(layer_density[n], np.float64) * sizes[n] for n in layers) / total


def round_densities(run, on: str = "hidden", layer_order: Sequence[str] | None = None) -> np.ndarray:
    """Density of each round of ``run`` (mean over tickets), shape ``[len(run.rounds)]``.

    ``on``:
      * ``"hidden"`` (default): all prunable layers but the last of ``layer_order``
        (the output layer), size-weighted. Frankle & Carbin (2018) prune hidden layers at
        20% and the output layer at 10% per round and call round r "the network pruned to
        0.8^r" (51.2% = round 3, 16.8% = round 8, 5.50% = round 13): their percentages are
        the hidden layers' density.
      * ``"global"``: fraction of all prunable weights remaining (``metrics["density"]``).
      * a layer name: that layer's density.

    Reads ``metrics["density"]`` / ``metrics["layer_density"]`` of each round, and the
    layer sizes from round 0's mask.
    """
    ms = [rd.metrics for rd in run.rounds]
    if on == "global":
        return np.array([np.mean(m["density"]) for m in ms])
    if on == "hidden":
        leaves = _named_leaves(run.rounds[0].mask)
        order = list(layer_order) if layer_order is not None else mlp_layer_order(list(leaves))
        sizes = {n: int(np.size(leaves[n])) for n in order}
        return np.array([np.mean(layer_densities(m["layer_density"], sizes, order[:-1])) for m in ms])
    known = sorted(ms[0]["layer_density"]) if ms else []
    if ms and on not in ms[0]["layer_density"]:
        raise ValueError(f"unknown density {on!r}; use 'hidden', 'global' or a layer name: {known}")
    return np.array([np.mean(m["layer_density"][on]) for m in ms])


def closest_round(densities: Sequence[float] | np.ndarray, target: float, rtol: float | None = 0.05) -> int:
    """Index of the density closest to ``target`` in ratio, ``argmin_r |log(d_r / target)|``.

    Ratio, not difference, because IMP densities are geometric. Ties go to the earlier
    round. Raises ``ValueError`` when the closest one is off by more than ``rtol``
    (relative, ``|d / target - 1|``), i.e. the run never reached that density; ``None``
    accepts any.
    """
    d = np.asarray(densities, np.float64)
    if d.ndim != 1 or d.size == 0 or not 0 < target <= 1:
        raise ValueError(f"need a non-empty 1-D list of densities and 0 < target <= 1, got {d.shape}, {target}")
    with np.errstate(divide="ignore"):
        r = int(np.argmin(np.abs(np.log(d) - np.log(target))))
    if rtol is not None and abs(d[r] / target - 1) > rtol:
        raise ValueError(f"no round has density within {rtol:.0%} of {target:.4g}: the closest is round {r} "
                         f"at {d[r]:.4g} (densities {np.round(d, 4).tolist()}); run more rounds or pass rtol=None")
    return r


def select_rounds(run, targets: Sequence[float], on: str = "hidden", rtol: float | None = 0.05,
                  layer_order: Sequence[str] | None = None) -> list[int]:
    """Round indices of ``run`` closest to each target density (see :func:`round_densities`)."""
    d = round_densities(run, on, layer_order)
    return [closest_round(d, t, rtol) for t in targets]


def layer_collapse(mask: PyTree, layer_order: Sequence[str] | None = None) -> dict[str, bool]:
    """Layer collapse of one ticket's mask (the layerwise-importance paper, sec. 3.4).

    ``empty``: some prunable layer has no surviving weight. ``no_path``: no chain of
    surviving edges connects an input to an output unit; computed for dense chains such as
    the MLP (:func:`prune_dead_edges` both ways); for other models it equals ``empty``,
    which for a plain feed-forward network also cuts every path (not for residual ones).
    """
    leaves = _named_leaves(mask)
    empty = any(not bool(np.any(np.asarray(m))) for m in leaves.values())
    try:
        order = list(layer_order) if layer_order is not None else mlp_layer_order(list(leaves))
        live = prune_dead_edges(mask, order, from_inputs=True)
    except ValueError:
        return {"empty": empty, "no_path": empty}
    return {"empty": empty, "no_path": empty or not bool(np.any(np.asarray(_named_leaves(live)[order[-1]])))}


def common_survivors(masks: Sequence[PyTree]) -> dict[str, dict[str, float]]:
    """Weights every one of several tickets keeps (e.g. the tickets of one initialization
    found with different scores), per layer and ``total``: the count, as a fraction of all
    the layer's weights (``of_all``), and as a fraction of the mean number of survivors
    (``of_surviving``)."""
    named = [_named_leaves(m) for m in masks]
    out: dict[str, dict[str, float]] = {}
    tot = {"common": 0.0, "size": 0.0, "alive": 0.0}
    for layer in named[0]:
        stack = np.stack([np.asarray(n[layer], bool) for n in named])
        common = float(np.all(stack, axis=0).sum())
        alive = float(stack.reshape(len(named), -1).sum(axis=1).mean())
        size = float(stack[0].size)
        out[layer] = {"common": common, "of_all": common / size, "of_surviving": common / alive if alive else 0.0}
        tot["common"] += common
        tot["size"] += size
        tot["alive"] += alive
    out["total"] = {"common": tot["common"], "of_all": tot["common"] / tot["size"],
                    "of_surviving": tot["common"] / tot["alive"] if tot["alive"] else 0.0}
    return out


def weight_dynamics(params_by_round: Sequence[np.ndarray], masks_by_round: Sequence[np.ndarray],
                    groups: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per-connection weight std and sign flips across rounds (the layerwise-importance
    paper, Figure 2), summarized per group of connections (e.g. overlapping vs not).

    Args:
      params_by_round: one layer's trained weights of one ticket in consecutive rounds.
      masks_by_round: that ticket's masks in the same rounds; a connection counts in a
        round only while it survives.
      groups: ``{name: bool array}`` selecting connections (same shape as the layer).
    Returns:
      ``{name: {"n", "mean_std", "median_std", "mean_flips", "flipped_fraction"}}``: the
      std over the rounds a connection survived (connections alive in ≥ 2 rounds), and
      the number of sign changes between consecutive rounds in which it survived.
    """
    w = np.stack([np.asarray(p, np.float64) for p in params_by_round])
    m = np.stack([np.asarray(k, bool) for k in masks_by_round])
    alive_n = m.sum(axis=0)
    wm = np.where(m, w, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.nanstd(wm, axis=0)
    both = m[1:] & m[:-1]
    flips = np.sum(both & (np.sign(w[1:]) != np.sign(w[:-1])), axis=0)
    out = {}
    for name, sel in groups.items():
        sel = np.asarray(sel, bool) & (alive_n >= 2)
        s, f = std[sel], flips[sel]
        out[name] = {"n": int(sel.sum()),
                     "mean_std": float(s.mean()) if s.size else float("nan"),
                     "median_std": float(np.median(s)) if s.size else float("nan"),
                     "mean_flips": float(f.mean()) if f.size else float("nan"),
                     "flipped_fraction": float((f > 0).mean()) if f.size else float("nan")}
    return out


def survival(common: PyTree, mask: PyTree, exclude: Sequence[str] = ()) -> dict[str, dict[str, float]]:
    """How many of the ``common`` weights (e.g. those a partial reinitialization kept at
    θ0) a new ticket's ``mask`` keeps, per layer and ``total``: ``fraction`` = survivors /
    common, against ``expected`` = the layer's density, the fraction a random choice of
    the same size would keep. ``fraction`` well above ``expected`` means the kept θ0
    values, not chance, brought those weights back. Layers matching ``exclude`` (names or
    globs: the layers the study never prunes, which keep everything) are left out of the
    rows and of ``total``."""
    a, b = _named_leaves(common), _named_leaves(mask)
    out, tot = {}, np.zeros(4)
    for layer in [n for n in a if not any(fnmatch.fnmatchcase(n, e) for e in exclude)]:
        c, m = np.asarray(a[layer], bool), np.asarray(b[layer], bool)
        row = np.array([c.sum(), (c & m).sum(), m.sum(), m.size], np.float64)
        tot += row
        out[layer] = {"common": row[0], "survived": row[1], "fraction": row[1] / row[0] if row[0] else float("nan"),
                      "expected": row[2] / row[3]}
    out["total"] = {"common": tot[0], "survived": tot[1], "fraction": tot[1] / tot[0] if tot[0] else float("nan"),
                    "expected": tot[2] / tot[3]}
    return out
