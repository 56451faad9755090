"""The XOR study of Frankle & Carbin (2018, section 2): unit pruning of a 2-h-1 network.

The network: 2 inputs, one hidden layer of ``h`` ReLU units (layer ``fc1``, kernel
``[2, h]``), one sigmoid output (layer ``out``, kernel ``[h, 1]``); kernels drawn from
N(0, 0.1²) truncated at ±2 std (±0.2), biases 0 (:func:`network`). Training is plain
full-batch gradient descent on the mean sigmoid binary cross-entropy of the four XOR
points for 10,000 iterations (the paper gives no learning rate; ltjax uses
:data:`LEARNING_RATE`, chosen by the sweep described there).

A *unit* is pruned by masking its whole incoming kernel column ``fc1.kernel[:, j]`` and
its outgoing kernel row ``out.kernel[j, :]``: a unit mask is an ordinary ltjax weight mask
(bool kernels, ``None`` biases) in which every hidden unit is either fully present or fully
absent. The bias ``fc1.bias[j]`` of a removed unit is not masked and cannot matter: the
unit's only path to the output is its outgoing weight, which is exactly 0, so the unit
adds ``0 · relu(b_j) = 0`` to the logit and ``b_j`` receives the gradient
``δ · w_out_j · 1[pre_j > 0] = 0`` (it stays at its θ0 value, 0). A 10-unit network with 8
units pruned therefore computes exactly what a 2-unit network with the surviving weights
computes.

Pruning heuristics (section 2.1), scores of hidden unit ``j`` from trained weights ``W1 =
fc1.kernel`` [2, h] and ``w2 = out.kernel`` [h, 1] (higher = more important):

* ``input_magnitude``:   ``mean_i |W1[i, j]|``   (the paper: "smallest average input weight
  magnitudes"; the mean of 2 entries is half their L1 norm, so it ranks units as the
  L1 norm ``Σ_i |W1[i, j]|`` does),
* ``output_magnitude``:  ``Σ_o |w2[j, o]|`` = ``|w2[j, 0]|`` (one output),
* ``magnitude_product``: ``|w2[j, 0]| · Σ_i |W1[i, j]|`` (the paper: "the product of the
  magnitude of its output weight and the sum of the magnitudes of its input weights").

Success criteria (section 2, Figure 1), functions of the trained network's logits on the
four points: the *decision boundary* is correct when every point is on its label's side of
0.5 (logit > 0 for class 1, logit < 0 for class 0; a logit of exactly 0 counts as wrong);
*zero loss* holds when every point's binary cross-entropy is at most
:data:`ZERO_LOSS_THRESHOLD`, i.e. every output is within about that distance of its hard
0/1 label (see the constant for why this value).

Protocols (section 2.1): *one-shot* trains the 10-unit network from θ0, prunes it to the
target width in one step, resets the survivors to θ0 and retrains; *iterative* repeats
train → prune 2 units → reset to θ0 until the target width and then trains the final
ticket. Every function works on a stack of T trials (leading axis), and each training call
trains all T trials in one compiled, scan-fused program (:func:`make_train_fn`).

The study keeps its results in a run directory of the store, as the IMP and early-ticket studies
do: :func:`open_run` names it by a hash of the :class:`StudySettings` (and refuses one recorded
with other settings), and each result is a part (:func:`ltjax.store.part`) keyed by what decides
it: the trained random networks of a width and learning rate (:func:`dense_part`: Figure 1 and
the learning-rate sweep), each pruning protocol and heuristic (:func:`prune_part`: Figure 2).
A killed study run again computes only the parts it lacks, and one run again with nothing
missing recomputes nothing. The trained ``hidden``-unit networks that every protocol prunes are
kept beside the parts (``dense_010/``, orbax, committed atomically). Each protocol runs on the
round loop of every ltjax study (:func:`ltjax.loop.run`), one round per width reached, with its
own parts: the unit mask (:func:`prune_step`), the reset to θ0 and the full-batch trainer
(:func:`make_train_fn`). The IMP study's parts (:func:`ltjax.lottery.run`) would train these
networks with the general minibatch trainer and in-graph evaluation, equal to
:func:`make_train_fn` only to float rounding and about 20x slower on 2-10-unit networks, and
prune fractions of weights, where a unit protocol removes whole units down to exact widths.
"""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ltjax import data as D
from ltjax import masks as M
from ltjax import loop, models, pruning, store

PyTree = Any
TrainFn = Callable[[PyTree, PyTree], PyTree]

HEURISTICS = ("input_magnitude", "output_magnitude", "magnitude_product")
PROTOCOLS = ("one_shot", "iterative")

ITERATIONS = 10_000
"""Full-batch training iterations per training run (section 2.1 and footnote 3)."""

LEARNING_RATE = 1.0
"""Plain (full-batch) SGD step size. The paper gives none. Chosen by a sweep over
{0.01, 0.03, 0.1, 0.3, 0.5, 1, 1.5, 2, 3} on 1000 dense 10-unit and 1000 dense 2-unit
networks (10,000 iterations; ``experiments/frankle2018_xor.py --sweep``, table in
``docs/results/frankle2018_xor.md``). The fraction that finds the decision boundary does not
depend on the step size from 0.01 to 1 (10 units: 94.0-94.1%, 2 units: 15.9-17.7%; the
failures are plateaus, not slow convergence) and falls from 1.5 on. Within that flat range
1.0 is the only step size at which (nearly) every network that found the boundary also
drove all four per-point losses below :data:`ZERO_LOSS_THRESHOLD` within the 10,000
iterations (all 940 of the 10-unit networks, 169 of the 170 2-unit ones; at 0.5: 919 of
940 and 100 of 176), so zero loss measures where training ends up rather than the
iteration budget. No step size reaches the paper's dense decision-boundary rate (98.5%)."""

ZERO_LOSS_THRESHOLD = 1e-3
"""Largest per-point binary cross-entropy (nats) that still counts as "zero loss": every
output is within ~1e-3 of its hard 0/1 label (BCE ≤ t ⇔ |σ(z) − y| ≤ 1 − e^(−t) ≈ t).
An exact 0 is not reachable in float32 (``log σ(z)`` is nonzero until |z| > ~103), so the
paper's "loss reached 0 (a hard 0 or 1)" needs a threshold; see the results page for the
distribution of final losses that this value separates."""


# -- network and data --------------------------------------------------------------------

def network(hidden: int = 10) -> models.Model:
    """The 2-``hidden``-1 XOR network: ReLU hidden layer ``fc1``, one logit ``out`` (sigmoid
    applied by the loss); kernels N(0, 0.1²) truncated at ±0.2, biases 0 (footnote 3)."""
    return models.mlp((hidden,), input_shape=(2,), num_outputs=1, init="trunc_normal", init_std=0.1)


def xor_data() -> tuple[jax.Array, jax.Array]:
    """The four XOR points (4, 2) float32 and their labels (4,) int32, as device arrays."""
    x, y = D.xor()
    return jnp.asarray(x), jnp.asarray(y)


def init_trials(model: models.Model, key: jax.Array, trials: int) -> tuple[PyTree, PyTree, jax.Array]:
    """θ0, all-ones mask and per-trial keys for ``trials`` independent networks.

    Returns ``(theta0, mask, keys)`` with a leading trial axis ``T = trials``; trial ``t``'s
    weights are ``model.init(split(key, trials)[t])``.
    """
    keys = jax.random.split(key, trials)
    theta0 = models.run_init(jax.vmap(model.init), keys)
    # all ones on the kernels, None on the biases (M.make_mask's rule), built on the host
    mask = jax.tree_util.tree_map_with_path(
        lambda p, a: np.ones(a.shape, bool) if model.is_prunable(p, jax.ShapeDtypeStruct(a.shape[1:], a.dtype)) else None,
        theta0)
    return theta0, mask, keys


def make_train_fn(model: models.Model, *, lr: float = LEARNING_RATE, iterations: int = ITERATIONS) -> TrainFn:
    """``train(params, mask) -> trained params`` for a stack of trials (leading axis T).

    Full-batch SGD: each of the ``iterations`` steps subtracts ``lr`` times the exact gradient
    of the mean binary cross-entropy of the four XOR points, multiplied by the mask, so pruned
    weights stay exactly 0 (params enter masked). This is what :func:`ltjax.train.make_trainer`
    computes with ``batch_size=4`` (tested against it to float rounding), written for a
    network of 2-10 units, where the general trainer's cost is all per-step overhead:

    * the trials are the *last* axis of every array (``W1`` [2, h, T], ...), so every
      operation is a vector operation over T trials instead of T tiny [4, h] products;
    * the forward and backward pass are written out (ReLU hidden layer, sigmoid output; the
      ReLU's derivative at 0 is 0, as in JAX) and the four points are unrolled;
    * a unit mask with the same number ``w`` of units alive in every trial (what
      :func:`prune_step` makes) trains only the ``w`` alive units, gathered per trial and
      scattered back: a removed unit adds exactly 0 to the output and receives exactly 0
      gradient (module docstring), so the ticket is the ``w``-unit network of its survivors.
      Its bias keeps its input value; its kernel entries stay exactly 0. Any other mask
      trains all ``h`` units with the gradient masked.

    All T trials run in one compiled program. The sum over the four points is taken in
    ``xor()`` order, so the result does not depend on a data order (there is no key).
    """
    def train(params: PyTree, mask: PyTree) -> PyTree:
        _check_structure(params)
        mk, mo = np.asarray(mask["fc1"]["kernel"]), np.asarray(mask["out"]["kernel"])[..., 0]
        alive = mk.any(axis=1)  # (T, h)
        w = alive.sum(1)
        whole_units = (mk == alive[:, None, :]).all() and (mo == alive).all()
        no_bias_masks = mask["fc1"].get("bias") is None and mask["out"].get("bias") is None
        if whole_units and no_bias_masks and (w == w[0]).all():
            idx = np.argsort(~alive, axis=1, kind="stable")[:, :w[0]]  # each trial's alive units, in order
            return _train_units(params, mask, idx, lr, iterations)
        return _train_masked(params, mask, lr, iterations)

    return train


def _plus(acc: jax.Array, c: float, v: jax.Array) -> jax.Array:
    """``acc + c·v`` for a data constant ``c``; for XOR's 0/1 inputs the product is dropped or
    skipped, which is exact (``b + 0·w = b`` and ``1·w = w`` for finite ``w``)."""
    return acc if c == 0 else acc + (v if c == 1 else c * v)


def _grads(W1, b1, W2, b2):
    """Gradient of the mean BCE of the four XOR points w.r.t. (W1 [2,w,T], b1 [w,T], W2 [w,T],
    b2 [T]): the trials are the last axis; points unrolled, summed in ``xor()`` order."""
    x, y = D.xor()
    gW1, gb1, gW2, gb2 = [jnp.zeros_like(W1[0]), jnp.zeros_like(W1[1])], jnp.zeros_like(b1), jnp.zeros_like(W2), 0.0
    for p in range(len(x)):
        pre = _plus(_plus(b1, float(x[p, 0]), W1[0]), float(x[p, 1]), W1[1])
        a = jnp.maximum(pre, 0.0)
        z = jnp.sum(a * W2, axis=0) + b2
        dz = (jax.nn.sigmoid(z) - float(y[p])) / len(x)
        da = jnp.where(pre > 0, dz * W2, 0.0)  # ReLU'(0) = 0, as in JAX
        gW1 = [_plus(g, float(x[p, i]), da) for i, g in enumerate(gW1)]
        gb1, gW2, gb2 = gb1 + da, gW2 + a * dz, gb2 + dz
    return jnp.stack(gW1), gb1, gW2, gb2


@partial(jax.jit, static_argnums=(2, 3))
def _sgd(arrays, masks, lr: float, iterations: int):
    """``iterations`` full-batch SGD steps on trial-last arrays; gradients times ``masks`` if given.
    Compiled once per (units, trials) shape: a w-unit ticket reuses the w-unit network's program."""
    def step(c, _):
        g = _grads(*c)
        if masks is not None:
            g = [gi * mi for gi, mi in zip(g, masks)]
        return tuple(ci - lr * gi for ci, gi in zip(c, g)), None

    return lax.scan(step, arrays, None, length=iterations)[0]


def _trial_last(params):
    return (jnp.moveaxis(params["fc1"]["kernel"], 0, -1), params["fc1"]["bias"].T,
            params["out"]["kernel"][..., 0].T, params["out"]["bias"][:, 0])


def _trial_first(W1, b1, W2, b2):
    return {"fc1": {"kernel": jnp.moveaxis(W1, -1, 0), "bias": b1.T}, "out": {"kernel": W2.T[..., None], "bias": b2[:, None]}}


def _train_units(params, mask, idx: np.ndarray, lr: float, iterations: int):
    """Train only the alive units ``idx`` (T, w) of unit-masked trials; the rest keep params ⊙ mask.

    Gathering and scattering the few hundred numbers per trial is done in NumPy: as XLA
    programs they would cost ~0.25 s of compilation each per shape, more than the training."""
    k, b = np.asarray(params["fc1"]["kernel"]), np.asarray(params["fc1"]["bias"])    # [T,2,h], [T,h]
    ko, bo = np.asarray(params["out"]["kernel"])[..., 0], np.asarray(params["out"]["bias"])[:, 0]  # [T,h], [T]
    t = np.arange(len(idx))[:, None]
    part = (np.ascontiguousarray(np.transpose(k[t, :, idx], (2, 1, 0))), np.ascontiguousarray(b[t, idx].T),
            np.ascontiguousarray(ko[t, idx].T), bo)  # k[t, :, idx] is [T, w, 2]
    W1, b1, W2, b2 = (np.asarray(a) for a in _sgd(part, None, lr, iterations))
    k = np.where(np.asarray(mask["fc1"]["kernel"]), k, 0)
    ko = np.where(np.asarray(mask["out"]["kernel"])[..., 0], ko, 0)
    b = b.copy()  # np.where made fresh k and ko; b is still a view of the input
    k[t, :, idx], b[t, idx], ko[t, idx] = np.transpose(W1, (2, 1, 0)), b1.T, W2.T
    return {"fc1": {"kernel": jnp.asarray(k), "bias": jnp.asarray(b)},
            "out": {"kernel": jnp.asarray(ko[..., None]), "bias": jnp.asarray(b2[:, None])}}


@partial(jax.jit, static_argnums=(2, 3))
def _train_masked(params, mask, lr: float, iterations: int):
    """Train all units with the gradient of every leaf multiplied by its mask (``None``: all kept)."""
    full = jax.tree.map(lambda p, m: jnp.ones(p.shape, bool) if m is None else m, params, mask)
    masks = tuple(m.astype(jnp.float32) for m in _trial_last(full))
    return _trial_first(*_sgd(_trial_last(M.apply_mask(params, mask)), masks, lr, iterations))


def _check_structure(params: PyTree) -> None:
    """The fast trainer's network: ``fc1`` kernel [T, 2, h] and bias [T, h], ``out`` kernel [T, h, 1]
    and bias [T, 1], as :func:`network` makes (stacked over T trials)."""
    shapes = jax.tree.map(jnp.shape, params)
    try:
        T, i, h = shapes["fc1"]["kernel"]
        ok = (i == 2 and shapes["fc1"]["bias"] == (T, h) and shapes["out"]["kernel"] == (T, h, 1)
              and shapes["out"]["bias"] == (T, 1) and sorted(params) == ["fc1", "out"])
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"the XOR trainer trains stacks of network(h) params: fc1 kernel [T, 2, h], bias [T, h]; "
                         f"out kernel [T, h, 1], bias [T, 1]; got {shapes}")


def logits_on_xor(model: models.Model, params: PyTree) -> jax.Array:
    """Logits of a stack of trials on the four XOR points, shape (T, 4), in ``xor()`` order."""
    return _logits(model, params)


@partial(jax.jit, static_argnums=0)
def _logits(model: models.Model, params: PyTree) -> jax.Array:
    x, _ = D.xor()
    return jax.vmap(lambda p: model.apply(p, jnp.asarray(x))[:, 0])(params)


# -- success criteria ---------------------------------------------------------------------

def per_point_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Binary cross-entropy of each point, ``-y log σ(z) - (1-y) log(1-σ(z))``, computed
    stably from logits ``z`` (shape (..., 4)); labels ``y`` (4,) in {0, 1}."""
    y = jnp.asarray(y, logits.dtype)
    return -y * jax.nn.log_sigmoid(logits) - (1 - y) * jax.nn.log_sigmoid(-logits)


def decision_boundary_correct(logits: jax.Array, y: jax.Array) -> jax.Array:
    """True where all four points are classified correctly: ``z > 0`` exactly for ``y == 1``.

    ``logits`` (..., 4); returns bool (...). A logit of exactly 0 (output 0.5) is on neither
    side and counts as wrong.
    """
    y = jnp.asarray(y)
    right = jnp.where(y == 1, logits > 0, logits < 0)
    return jnp.all(right, axis=-1)


def zero_loss(logits: jax.Array, y: jax.Array, threshold: float = ZERO_LOSS_THRESHOLD) -> jax.Array:
    """True where the largest per-point BCE is ``<= threshold`` (every output a hard 0/1 up to
    ~``threshold``). Zero loss implies a correct decision boundary whenever
    ``threshold < log 2``. ``logits`` (..., 4); returns bool (...)."""
    return jnp.max(per_point_loss(logits, y), axis=-1) <= threshold


class Success(NamedTuple):
    """Per-trial outcome of training: decision boundary correct, zero loss reached (bool (T,))."""

    db: jax.Array
    zl: jax.Array


def success(model: models.Model, params: PyTree, threshold: float = ZERO_LOSS_THRESHOLD) -> Success:
    """Both success criteria for a stack of trained trials."""
    logits = logits_on_xor(model, params)
    _, y = xor_data()
    return Success(decision_boundary_correct(logits, y), zero_loss(logits, y, threshold))


# -- unit scores and unit pruning ---------------------------------------------------------

def unit_scores(params: PyTree, heuristic: str) -> jax.Array:
    """Score of each hidden unit of one network (shape (h,)); see the module docstring.

    ``input_magnitude``: ``mean_i |fc1.kernel[i, j]|``; ``output_magnitude``:
    ``Σ_o |out.kernel[j, o]|``; ``magnitude_product``: ``Σ_o |out.kernel[j, o]| ·
    Σ_i |fc1.kernel[i, j]|``. Pass trained, masked params (pruned weights are 0).
    """
    w_in = jnp.abs(params["fc1"]["kernel"])   # [inputs, h]
    w_out = jnp.abs(params["out"]["kernel"])  # [h, outputs]
    if heuristic == "input_magnitude":
        return jnp.mean(w_in, axis=0)
    if heuristic == "output_magnitude":
        return jnp.sum(w_out, axis=1)
    if heuristic == "magnitude_product":
        return jnp.sum(w_out, axis=1) * jnp.sum(w_in, axis=0)
    raise ValueError(f"unknown unit-pruning heuristic {heuristic!r}; valid heuristics: {', '.join(HEURISTICS)}")


def alive_units(mask: PyTree) -> jax.Array:
    """Hidden units present in a unit mask of one network: bool (h,), unit ``j`` alive iff any
    of its incoming weights survives (in a unit mask all its weights agree)."""
    return jnp.any(mask["fc1"]["kernel"], axis=0)


def unit_mask(mask: PyTree, alive: jax.Array) -> PyTree:
    """The weight mask with exactly the units ``alive`` (bool (h,)) present: ``fc1.kernel[:, j]``
    and ``out.kernel[j, :]`` are ``alive[j]``; ``None`` leaves (biases) stay ``None``."""
    fc1, out = mask["fc1"]["kernel"], mask["out"]["kernel"]
    new = {
        "fc1": {**mask["fc1"], "kernel": jnp.broadcast_to(alive[None, :], fc1.shape)},
        "out": {**mask["out"], "kernel": jnp.broadcast_to(alive[:, None], out.shape)},
    }
    return {**mask, **new}


def prune_units(scores: jax.Array, alive: jax.Array, k: int) -> jax.Array:
    """Remove the ``k`` lowest-scoring alive units; returns the new ``alive`` (bool (h,)).

    Units are ranked by (score, index) ascending among the alive ones, so ties remove the
    lower index first; removed units never come back. ``k`` must not exceed the number of
    alive units (checked when ``alive`` is concrete; under ``jit`` an excess ``k`` removes
    every unit).
    """
    if not isinstance(alive, jax.core.Tracer) and k > int(np.sum(alive)):
        raise ValueError(f"cannot prune {k} units: only {int(np.sum(alive))} are alive")
    return pruning.remove_lowest(scores, alive, k)  # the weights' own ordering rule, on units


def prune_step(params: PyTree, mask: PyTree, heuristic: str, k: int) -> PyTree:
    """One pruning step on a stack of trials: score the trained ``params`` with ``heuristic``
    and remove the ``k`` lowest-scoring surviving units of each trial; returns the new mask.

    Raises if a trial has fewer than ``k`` units alive."""
    fewest = int(num_alive(mask).min())
    if k > fewest:
        raise ValueError(f"cannot prune {k} units: a trial has only {fewest} alive")
    if heuristic not in HEURISTICS:
        raise ValueError(f"unknown unit-pruning heuristic {heuristic!r}; valid heuristics: {', '.join(HEURISTICS)}")
    return _prune_step(params, mask, jnp.int32(HEURISTICS.index(heuristic)), jnp.int32(k))


@jax.jit
def _prune_step(params: PyTree, mask: PyTree, heuristic: jax.Array, k: jax.Array) -> PyTree:
    # heuristic and k are traced: one compiled program serves every step of every strategy
    def one(p, m):
        masked = M.apply_mask(p, m)
        scores = jnp.stack([unit_scores(masked, h) for h in HEURISTICS])[heuristic]
        return unit_mask(m, prune_units(scores, alive_units(m), k))

    return jax.vmap(one)(params, mask)


def num_alive(mask: PyTree) -> np.ndarray:
    """Number of hidden units present in each trial's mask, int (T,)."""
    return np.asarray(mask["fc1"]["kernel"]).any(axis=-2).sum(axis=-1)


# -- protocols -----------------------------------------------------------------------------

class Ticket(NamedTuple):
    """A pruned ticket after its final training: mask and trained params (leading axis T)."""

    mask: PyTree
    params: PyTree


def _protocol(train: TrainFn, theta0: PyTree, widths: list[int], prune: Callable[[int, dict], PyTree]) -> list:
    """A unit-pruning protocol on the round loop (:func:`ltjax.loop.run`), one round per width
    reached: the mask ``prune(width, last)`` (``last``: the previous round's mask and trained
    weights, or the trained dense network's), reset to θ0 (the survivors keep their θ0 values)
    and trained; each round's :class:`Ticket` is kept in memory, the protocol's result is one part."""
    last: dict[str, PyTree] = {}

    def commit(width, mask, params, _):
        last.update(mask=mask, params=params)
        return Ticket(mask, params)

    rounds = loop.Rounds("width", lambda w: prune(w, last), lambda w, mask: (theta0, 0),
                         lambda w, source, mask, begin: (train(source, mask), None), commit)
    return loop.run(rounds, widths)


def one_shot(
    train: TrainFn, theta0: PyTree, mask0: PyTree, trained_dense: PyTree, heuristic: str,
    targets: tuple[int, ...],
) -> dict[int, Ticket]:
    """One-shot pruning: prune the trained dense network straight to each target width,
    reset the survivors to θ0 and retrain. Returns ``{target: Ticket}``."""
    h = int(num_alive(mask0)[0])
    tickets = _protocol(train, theta0, list(targets), lambda w, _: prune_step(trained_dense, mask0, heuristic, h - w))
    return dict(zip(targets, tickets))


def iterative(
    train: TrainFn, theta0: PyTree, mask0: PyTree, trained_dense: PyTree, heuristic: str,
    targets: tuple[int, ...], per_round: int = 2,
) -> dict[int, Ticket]:
    """Iterative pruning: starting from the trained dense network, repeatedly prune
    ``per_round`` units, reset the survivors to θ0 and train, down to ``min(targets)`` units.
    Every round's trained ticket whose width is in ``targets`` is returned as
    ``{target: Ticket}``. Widths visited: h - per_round, h - 2·per_round, ...; each target
    must be one of them."""
    h = int(num_alive(mask0)[0])
    widths = list(range(h - per_round, min(targets) - 1, -per_round))
    missing = sorted(set(targets) - set(widths))
    if missing:
        raise ValueError(f"targets {missing} are not reached from {h} units by removing {per_round} per round")

    def prune(width: int, last: dict) -> PyTree:
        return prune_step(last.get("params", trained_dense), last.get("mask", mask0), heuristic, per_round)

    tickets = _protocol(train, theta0, widths, prune)
    return {w: t for w, t in zip(widths, tickets) if w in targets}


def prune_study(
    train: TrainFn, theta0: PyTree, mask0: PyTree, trained_dense: PyTree, protocol: str,
    heuristic: str, targets: tuple[int, ...] = (4, 2), per_round: int = 2,
) -> dict[int, Ticket]:
    """:func:`one_shot` or :func:`iterative` (``per_round`` units per round) by name."""
    if protocol == "one_shot":
        return one_shot(train, theta0, mask0, trained_dense, heuristic, targets)
    if protocol == "iterative":
        return iterative(train, theta0, mask0, trained_dense, heuristic, targets, per_round)
    raise ValueError(f"unknown pruning protocol {protocol!r}; valid protocols: {', '.join(PROTOCOLS)}")


# -- the study's run directory and parts ------------------------------------------------------

class StudySettings(NamedTuple):
    """What decides every result of an XOR study, hashed into its run directory's name:
    ``trials`` networks per configuration, each trained ``iterations`` full-batch steps at ``lr``;
    θ0 of width h from :func:`trial_key` ``(seed, h)``; the ``hidden``-unit networks are the ones
    pruned; success by the zero-loss ``zero_loss_threshold``."""

    trials: int = 1000
    iterations: int = ITERATIONS
    lr: float = LEARNING_RATE
    seed: int = 0
    hidden: int = 10
    zero_loss_threshold: float = ZERO_LOSS_THRESHOLD


def trial_key(seed: int, width: int) -> jax.Array:
    """Trials of width ``h`` draw θ0 from ``fold_in(PRNGKey(seed), h)``."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), width)


def max_point_loss(model: models.Model, params: PyTree) -> np.ndarray:
    """Each trial's largest per-point binary cross-entropy on the four points, float32 (T,)."""
    _, y = xor_data()
    return np.asarray(jnp.max(per_point_loss(logits_on_xor(model, params), y), axis=-1))


def open_run(settings: StudySettings, out: str | os.PathLike = "runs") -> Path:
    """The study's run directory ``<out>/frankle2018_xor-<hash of settings>/``, created or reopened
    (:func:`ltjax.store.init_study`: a directory recorded with other settings raises)."""
    return store.init_study(out, "frankle2018_xor", settings._asdict())


def outcomes(model: models.Model, params: PyTree, threshold: float = ZERO_LOSS_THRESHOLD) -> dict:
    """What a part keeps of a stack of trained trials: ``db`` / ``zl`` (% of trials), each trial's
    outcome as a '0'/'1' string (``db_trials``, ``zl_trials``, trial order) and its
    :func:`max_point_loss` (``max_point_loss``, float32 values as JSON numbers)."""
    ok = success(model, params, threshold)
    as_bits = lambda a: "".join("1" if v else "0" for v in np.asarray(a))  # noqa: E731
    return {"db": 100.0 * float(np.mean(np.asarray(ok.db))), "zl": 100.0 * float(np.mean(np.asarray(ok.zl))),
            "db_trials": as_bits(ok.db), "zl_trials": as_bits(ok.zl),
            "max_point_loss": max_point_loss(model, params).tolist()}


def _trials(settings: StudySettings, width: int) -> tuple[models.Model, PyTree, PyTree]:
    model = network(width)
    theta0, mask, _ = init_trials(model, trial_key(settings.seed, width), settings.trials)
    return model, theta0, mask


def _dense_path(d: Path, settings: StudySettings) -> Path:
    return d / f"dense_{settings.hidden:03d}"


def _train_dense(d: Path, settings: StudySettings, width: int, lr: float) -> tuple[models.Model, PyTree]:
    """Random ``width``-unit networks trained at ``lr``; the pruned width at the study's lr is kept
    (``dense_NNN/``) for the protocols to prune."""
    model, theta0, mask = _trials(settings, width)
    trained = jax.block_until_ready(make_train_fn(model, lr=lr, iterations=settings.iterations)(theta0, mask))
    if width == settings.hidden and lr == settings.lr and not _dense_path(d, settings).exists():
        store.save_once(_dense_path(d, settings), trained)
    return model, trained


def dense_part(d: Path, settings: StudySettings, width: int, lr: float | None = None) -> dict:
    """The part ``dense`` ``{width, lr}`` of run ``d``: ``settings.trials`` random ``width``-unit
    networks trained ``settings.iterations`` steps at ``lr`` (default ``settings.lr``): their
    :func:`outcomes` and ``seconds``. Figure 1 is these parts at the study's lr; the learning-rate
    sweep, at others."""
    lr = settings.lr if lr is None else lr

    def compute():
        t0 = time.perf_counter()
        model, trained = _train_dense(d, settings, width, lr)
        return {**outcomes(model, trained, settings.zero_loss_threshold), "seconds": time.perf_counter() - t0}

    return store.part(d, "dense", {"width": width, "lr": lr}, compute)


def prune_part(d: Path, settings: StudySettings, protocol: str, heuristic: str, targets: tuple[int, ...],
               per_round: int = 2) -> dict:
    """The part ``prune`` ``{protocol, heuristic, targets, per_round}`` of run ``d``: the trained
    ``settings.hidden``-unit networks (those of :func:`dense_part`) pruned by :func:`prune_study`,
    each ticket retrained from θ0. Returns ``{"tickets": {"<width>": outcomes}, "seconds"}``,
    the tickets in the order the protocol reaches them."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown pruning protocol {protocol!r}; valid protocols: {', '.join(PROTOCOLS)}")

    def compute():
        t0 = time.perf_counter()
        model, theta0, mask0 = _trials(settings, settings.hidden)
        path = _dense_path(d, settings)
        train = make_train_fn(model, lr=settings.lr, iterations=settings.iterations)
        trained = store.load_once(path) if path.exists() else train(theta0, mask0)  # the same networks either way
        tickets = prune_study(train, theta0, mask0, trained, protocol, heuristic, tuple(targets), per_round)
        out = {}
        for width, ticket in tickets.items():
            alive = num_alive(ticket.mask)
            if not (alive == width).all():
                raise AssertionError(f"{protocol}/{heuristic}: expected {width} units, got {sorted(set(alive))}")
            out[str(width)] = outcomes(model, ticket.params, settings.zero_loss_threshold)
        return {"tickets": out, "seconds": time.perf_counter() - t0}

    key = {"protocol": protocol, "heuristic": heuristic, "targets": list(targets), "per_round": per_round}
    return store.part(d, "prune", key, compute)


# -- the paper's tables ----------------------------------------------------------------------

FIGURE1_PAPER = {10: (98.5, 92.9), 8: (96.8, 87.5), 6: (92.5, 76.8), 4: (78.3, 55.3), 2: (49.1, 17.6)}
"""Figure 1 of the paper: {hidden units: (DB %, ZL %)} over 1000 random networks each."""

FIGURE2_PAPER = {
    ("one_shot", "magnitude_product"): {10: (99.2, 93.3), 4: (98.0, 90.3), 2: (82.4, 65.3)},
    ("iterative", "input_magnitude"): {10: (98.9, 93.5), 4: (97.9, 92.2), 2: (83.8, 76.5)},
    ("iterative", "output_magnitude"): {10: (99.0, 93.3), 4: (96.9, 85.9), 2: (78.6, 56.1)},
    ("iterative", "magnitude_product"): {10: (98.5, 92.9), 4: (97.6, 90.3), 2: (91.5, 79.4)},
}
"""Figure 2 of the paper: {(protocol, heuristic): {units: (DB %, ZL %)}}, 1000 trials per row.
Pruned columns (4, 2) count a trial only when both the 10-unit network and the pruned
ticket succeed by that criterion, as a percentage of all trials."""


def joint_rate(dense: jax.Array, pruned: jax.Array) -> float:
    """Figure 2's pruned-column rate: percent of all trials where the dense network and the
    pruned ticket both succeed (bool (T,) each)."""
    return 100.0 * float(np.mean(np.asarray(dense) & np.asarray(pruned)))


def conditional_rate(dense: jax.Array, pruned: jax.Array) -> float:
    """Percent of the trials whose dense network succeeded in which the pruned ticket also
    succeeded (the paper's text: "of the 93.5% ... 84.9% had a winning ticket"); NaN if none."""
    dense, pruned = np.asarray(dense), np.asarray(pruned)
    return 100.0 * float(np.mean(pruned[dense])) if dense.any() else float("nan")


__all__ = [
    "FIGURE1_PAPER", "FIGURE2_PAPER", "HEURISTICS", "ITERATIONS", "LEARNING_RATE", "PROTOCOLS",
    "StudySettings", "Success", "Ticket", "ZERO_LOSS_THRESHOLD", "alive_units", "conditional_rate",
    "decision_boundary_correct", "dense_part", "init_trials", "iterative", "joint_rate", "logits_on_xor",
    "make_train_fn", "max_point_loss", "network", "num_alive", "one_shot", "open_run", "outcomes",
    "per_point_loss", "prune_part", "prune_step", "prune_study", "prune_units", "success", "trial_key",
    "unit_mask", "unit_scores", "xor_data", "zero_loss",
]
