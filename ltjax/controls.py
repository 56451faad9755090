"""Control experiments for a ticket: what to train beside it to show what makes it win.

Each control maps one ticket's ``(start params, mask)`` to the ``(params, mask)`` a control
network starts from; all are pure, keyed and vmappable, so controls train in the same
compiled program as the tickets they control for (see ``Config.controls``).

* ``reinit`` (Frankle & Carbin 2018, control 1): the ticket's architecture (mask) with
  its surviving weights drawn afresh from the original initialization distribution.
* ``shuffle`` (control 2): the ticket's starting weights kept, their locations randomized
  within each layer: a new random mask with the same number of survivors per layer,
  carrying a random permutation of the ticket's surviving start values (the multiset of
  values is preserved exactly). The 2018 paper shuffles "each hidden layer"; ``layers``
  selects which layers are shuffled (the others keep the ticket's mask and values).
* ``random`` (random pruning, Frankle & Carbin 2019's random-pruning baseline): a uniformly
  random mask with the ticket's number of survivors in each layer, on the weights the ticket
  starts from (θ0, or θk when rewinding) at those positions.
* ``reset``: the ticket's mask on θ0 itself; with ``strategy=continue`` this is how the
  2018 paper evaluates Han et al.'s continued-training masks (sec. 6.4).
* ``snip`` / ``isnip``: not controls in the 2018 sense but comparisons trained the same
  way (the LTH-vs-SNIP report): θ0 pruned *before training* by SNIP or iterative SNIP to
  exactly the ticket's number of weights (:mod:`ltjax.snip`, built in
  :func:`ltjax.rounds.snip_masks`, since they need a minibatch of the training data).
* ``synflow`` / ``grasp`` / ``magnitude_at_init``: the same for SynFlow, GraSP and |θ0|, and
  ``invert``: θ0 pruned by the study's own score negated (keep the lowest, Frankle et al. 2021's
  sanity check), at the ticket's counts (:mod:`ltjax.at_init`).

The registry of controls by name (what ``Config.controls`` accepts) is
:data:`ltjax.rounds.CONTROLS`.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable

import jax
import jax.numpy as jnp

from ltjax import masks as M

PyTree = Any


def reinit(key: jax.Array, init_fn: Callable[[jax.Array], PyTree], mask: PyTree) -> PyTree:
    """Fresh weights from ``init_fn`` (the original distribution) on the ticket's mask."""
    return M.apply_mask(init_fn(key), mask)


def _random_slots(key: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(perm, first, new_mask)`` for a flat leaf: one uniform permutation sends the k-th
    survivor to position ``perm[k]`` (``first[k]``: k is below the survivor count), so the
    survivors land on a uniformly random set of positions in a uniformly random order."""
    flat_m = mask.reshape(-1)
    n = flat_m.shape[0]
    first = jnp.arange(n) < jnp.sum(flat_m, dtype=jnp.int32)
    perm = jax.random.permutation(key, n)
    return perm, first, jnp.zeros(n, bool).at[perm].set(first)


def _shuffle_leaf(key: jax.Array, values: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    perm, first, new_mask = _random_slots(key, mask)
    survivors = values.reshape(-1)[jnp.argsort(~mask.reshape(-1), stable=True)]  # survivors first, in order
    new_vals = jnp.zeros(perm.shape[0], values.dtype).at[perm].set(
        jnp.where(first, survivors, jnp.zeros((), values.dtype)))
    return new_vals.reshape(values.shape), new_mask.reshape(mask.shape)


def shuffle(key: jax.Array, params: PyTree, mask: PyTree, layers: tuple[str, ...] = ("*",)) -> tuple[PyTree, PyTree]:
    """Randomize the locations of the ticket's surviving ``params`` within each selected layer.

    Returns ``(params, mask)``: per layer the same survivor count and the same multiset of
    surviving values, at uniformly random positions. Unprunable leaves are unchanged.
    """
    flat_m, treedef = jax.tree_util.tree_flatten_with_path(mask, is_leaf=lambda x: x is None)
    flat_p = treedef.flatten_up_to(params)
    keys = jax.random.split(key, len(flat_m))
    new_p, new_m = [], []
    for (path, m), p, k in zip(flat_m, flat_p, keys):
        name = M.layer_name(path)
        if m is None or not any(fnmatch.fnmatchcase(name, g) for g in layers):
            new_p.append(p if m is None else jnp.where(m, p, jnp.zeros((), p.dtype)))
            new_m.append(m)
            continue
        v, nm = _shuffle_leaf(k, p, m)
        new_p.append(v)
        new_m.append(nm)
    return jax.tree_util.tree_unflatten(treedef, new_p), jax.tree_util.tree_unflatten(treedef, new_m)


def random_prune(key: jax.Array, source: PyTree, mask: PyTree) -> tuple[PyTree, PyTree]:
    """Random pruning: per prunable layer, a uniformly random mask with as many survivors as
    ``mask`` has there, and ``source`` (the unmasked weights the ticket starts from) on it.
    Returns ``(params, mask)``; unprunable leaves are ``source``'s."""
    flat_m, treedef = jax.tree_util.tree_flatten_with_path(mask, is_leaf=lambda x: x is None)
    flat_s = treedef.flatten_up_to(source)
    keys = jax.random.split(key, len(flat_m))
    new_p, new_m = [], []
    for (_, m), src, k in zip(flat_m, flat_s, keys):
        if m is None:
            new_p.append(src)
            new_m.append(None)
            continue
        nm = _random_slots(k, m)[2].reshape(m.shape)
        new_p.append(jnp.where(nm, src, jnp.zeros((), src.dtype)))
        new_m.append(nm)
    return jax.tree_util.tree_unflatten(treedef, new_p), jax.tree_util.tree_unflatten(treedef, new_m)
