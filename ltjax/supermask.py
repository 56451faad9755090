"""Deconstructing lottery tickets: mask criteria, signed constants and supermasks.

Zhou, Lan, Liu & Yosinski 2019, "Deconstructing Lottery Tickets: Zeros, Signs, and the
Supermask" (NeurIPS), and their public code (uber-research/deconstructing-lottery-tickets:
``get_weight_init.py`` for the criteria, ``masked_networks.py`` for signed constants and the
learned supermask), which this module follows where the paper leaves a detail open.

**Mask criteria** (paper sec. 2, Figure 2): a score of each weight from its initial value
``w_i`` (θ0) and its value ``w_f`` after training; *higher survives*, so
:func:`ltjax.pruning.prune` keeps exactly ``round`` counts per layer (``scope="layerwise"``, as
the paper prunes each layer at its own rate) with deterministic ties. :data:`CRITERIA`:

  large_final              |w_f|                       (Frankle & Carbin's magnitude pruning)
  small_final              −|w_f|
  large_init               |w_i|
  small_init               −|w_i|
  large_init_large_final   min(rank |w_i|, rank |w_f|)
  small_init_small_final   min(rank −|w_i|, rank −|w_f|)
  magnitude_increase       |w_f| − |w_i|
  movement                 |w_f − w_i|
  large_final_same_sign    |w_f| where sign w_f = sign w_i, else 0  (= max(0, w_i w_f / |w_i|))
  random                   uniform draws (:func:`criterion_scores` with a ``key``)

``rank`` is the fractional rank of a value within its tensor (0 the lowest, ``(n−1)/n`` the
highest). Their code keeps, for the two "init & final" criteria, the weights above one common
percentile of both quantities (a binary search for that percentile); keeping the top ``k`` of
``min(rank_i, rank_f)`` is that quadrant rule at an exact count: a weight survives iff both its
ranks reach the threshold. Ranks are taken over the whole tensor, so these two criteria are for
one-shot masks from a dense mask, as in the paper's supermask experiments.

**Signed constant** (sec. 3, "mask-1 actions"): every prunable weight becomes
``sign(w_i) · σ_l``, with ``σ_l`` the standard deviation of layer l's initial weights (their
``make_signed_consts``: the population std of the whole kernel, before masking).

**Supermask** (sec. 5): a mask applied to the *untrained* θ0; :func:`masked_accuracy` measures
it. **Learned supermask** (sec. 5.2): the weights stay at θ0 and only a real-valued logit ``s``
per prunable weight is trained. Each forward pass samples ``m ~ Bernoulli(σ(s))`` and uses
``m + σ(s) − stop_gradient(σ(s))``: the value is the binary sample, the gradient that of
``σ(s)`` (a straight-through estimator). Logits start at a constant (their ``sigmoid_bias``,
default 0: p = ½); biases are frozen and never masked. Their test accuracy is of a sampled mask;
ltjax records it and also the accuracy of the thresholded mask ``s > 0`` (σ(s) > ½).

**A study configuration's supermasks**: :func:`of_config` trains a preset's dense network with its
recipe and measures every criterion's untrained accuracy at the preset's per-layer rates after R
rounds (:func:`config_keeps`), and optionally learned supermasks; ``ltjax supermask PRESET`` prints it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from ltjax import data as D
from ltjax import masks as M
from ltjax import pruning
from ltjax.data.order import batch_indices
from ltjax.train import DeviceData, device_data, evaluate, loss_and_correct, make_trainer

PyTree = Any
__all__ = ["rank", "criterion_scores", "criterion_mask", "signed_constant", "masked_accuracy", "sample_mask",
           "threshold_mask", "init_logits", "make_supermask_trainer", "SupermaskSpec", "SupermaskCurves",
           "SupermaskResult", "check_criteria", "config_keeps", "of_config", "ConfigSupermasks"]


def _is_none(x) -> bool:
    return x is None


def rank(x: jax.Array) -> jax.Array:
    """Fractional rank of each entry within ``x``: ``r/n`` for the r-th smallest (0-based), ties
    in flat order; same shape as ``x``, float32 in ``[0, 1)``."""
    flat = x.reshape(-1)
    n = flat.shape[0]
    r = jnp.zeros(n, jnp.int32).at[jnp.argsort(flat, stable=True)].set(jnp.arange(n, dtype=jnp.int32))
    return (r.astype(jnp.float32) / n).reshape(x.shape)


def _same_sign(wi: jax.Array, wf: jax.Array) -> jax.Array:
    return jnp.where(jnp.sign(wi) == jnp.sign(wf), jnp.abs(wf), 0.0)


CRITERIA: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "large_final": lambda wi, wf: jnp.abs(wf),
    "small_final": lambda wi, wf: -jnp.abs(wf),
    "large_init": lambda wi, wf: jnp.abs(wi),
    "small_init": lambda wi, wf: -jnp.abs(wi),
    "large_init_large_final": lambda wi, wf: jnp.minimum(rank(jnp.abs(wi)), rank(jnp.abs(wf))),
    "small_init_small_final": lambda wi, wf: jnp.minimum(rank(-jnp.abs(wi)), rank(-jnp.abs(wf))),
    "magnitude_increase": lambda wi, wf: jnp.abs(wf) - jnp.abs(wi),
    "movement": lambda wi, wf: jnp.abs(wf - wi),
    "large_final_same_sign": _same_sign,
}
NAMES = (*CRITERIA, "random")


def criterion_scores(name: str, theta0: PyTree, theta_final: PyTree, mask: PyTree,
                     key: jax.Array | None = None) -> PyTree:
    """Scores of criterion ``name`` (:data:`NAMES`) on each prunable leaf of ``mask`` (``None``
    elsewhere), from one ticket's ``theta0`` and trained ``theta_final``, float32 shaped like the
    leaf. ``random`` needs ``key`` (uniform draws, an independent stream per leaf)."""
    if name not in NAMES:
        raise ValueError(f"unknown mask criterion {name!r}; valid criteria: {', '.join(NAMES)}")
    if name == "random" and key is None:
        raise ValueError("the random criterion needs key= (a jax.random key)")
    leaves, treedef = jax.tree_util.tree_flatten(mask, is_leaf=_is_none)
    wi, wf = treedef.flatten_up_to(theta0), treedef.flatten_up_to(theta_final)
    out = []
    for i, (m, a, b) in enumerate(zip(leaves, wi, wf)):
        if m is None:
            out.append(None)
        elif name == "random":
            out.append(jax.random.uniform(jax.random.fold_in(key, i), m.shape))
        else:
            out.append(CRITERIA[name](a.astype(jnp.float32), b.astype(jnp.float32)))
    return jax.tree_util.tree_unflatten(treedef, out)


def criterion_mask(name: str, theta0: PyTree, theta_final: PyTree, mask: PyTree,
                   density: float | Mapping[str, float], *, scope: str = "layerwise",
                   key: jax.Array | None = None) -> PyTree:
    """One ticket's mask: ``mask`` pruned by criterion ``name`` so that a fraction ``density`` of
    its survivors remains (``layerwise``: per layer, a float or ``{layer_or_glob: density}``;
    ``global``: one float for the pool), i.e. ``prune(scores, mask, 1 − density)`` with its exact
    counts and ties. Pure; vmap it over tickets."""
    rate = ({k: 1.0 - v for k, v in density.items()} if isinstance(density, Mapping) else 1.0 - density)
    return pruning.prune(criterion_scores(name, theta0, theta_final, mask, key), mask, rate, scope=scope)


def signed_constant(params: PyTree, mask: PyTree, multiplier: float = 1.0) -> PyTree:
    """Every prunable leaf ``w`` (where ``mask`` is not ``None``) becomes ``sign(w) · σ · multiplier``,
    ``σ = sqrt(mean((w − mean w)²))`` over the whole leaf (zeros stay 0); other leaves unchanged."""
    def const(m, w):
        if m is None:
            return w
        sigma = jnp.std(w.astype(jnp.float32))
        return (jnp.sign(w) * sigma * multiplier).astype(w.dtype)
    return jax.tree.map(const, mask, params, is_leaf=_is_none)


def masked_accuracy(model, params: PyTree, mask: PyTree, data: DeviceData, mean, std,
                    split: str = "test") -> tuple[jax.Array, jax.Array]:
    """``(loss, accuracy)`` of the untrained network ``params ⊙ mask`` on ``split`` (``test`` or
    ``val``) of ``data``; one ticket, vmappable (a stack of params and masks)."""
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    x, y, w = (data.x_test, data.y_test, data.w_test) if split == "test" else (data.x_val, data.y_val, data.w_val)
    forward = lambda p, xb: model.apply(p, D.normalize(xb, mean, std))  # noqa: E731
    return evaluate(forward, M.apply_mask(params, mask), x, y, w)


# -- learned supermask -----------------------------------------------------------------------


def sample_mask(logits: PyTree, key: jax.Array) -> PyTree:
    """Straight-through Bernoulli mask of a logits tree (``None`` leaves stay ``None``): each
    leaf ``b + σ(s) − stop_gradient(σ(s))`` with ``b ~ Bernoulli(σ(s))`` (leaf i keyed by
    ``fold_in(key, i)``); its value is exactly ``b`` in {0, 1} (float32), its gradient ``σ'(s)``."""
    leaves, treedef = jax.tree_util.tree_flatten(logits, is_leaf=_is_none)
    out = []
    for i, s in enumerate(leaves):
        if s is None:
            out.append(None)
            continue
        p = jax.nn.sigmoid(s)
        b = jax.random.bernoulli(jax.random.fold_in(key, i), lax.stop_gradient(p)).astype(p.dtype)
        out.append(b + p - lax.stop_gradient(p))
    return jax.tree_util.tree_unflatten(treedef, out)


def threshold_mask(logits: PyTree) -> PyTree:
    """The deterministic mask of a logits tree: ``s > 0`` (σ(s) > ½), bool; ``None`` stays."""
    return jax.tree.map(lambda s: None if s is None else s > 0, logits, is_leaf=_is_none)


def _times(params: PyTree, m: PyTree) -> PyTree:
    return jax.tree.map(lambda k, w: w if k is None else w * k.astype(w.dtype), m, params, is_leaf=_is_none)


class SupermaskSpec(NamedTuple):
    """How a learned supermask trains. ``tx``: the optax optimizer of the logits (default
    ``optax.sgd(100.0)``, the learning rate of the authors' MNIST command); ``init_logit``: the
    logits' start (0: p = ½); ``signed_constant``: train the mask on :func:`signed_constant`
    weights instead of θ0 (the paper's best supermasks); ``steps`` a multiple of ``eval_every``."""

    steps: int = 1000
    batch_size: int = 100
    eval_every: int = 100
    init_logit: float = 0.0
    signed_constant: bool = False
    tx: optax.GradientTransformation | None = None


class SupermaskCurves(NamedTuple):
    """Recorded every ``eval_every`` steps (leading axis: evaluations)."""

    step: jax.Array
    train_loss: jax.Array  # mean minibatch loss of the last eval_every steps
    test_acc_sampled: jax.Array  # one Bernoulli mask sampled for the whole test set (the paper's)
    test_acc_threshold: jax.Array  # the mask s > 0
    density: jax.Array  # fraction of prunable weights with s > 0


class SupermaskResult(NamedTuple):
    """What :func:`make_supermask_trainer`'s program returns (leading seed axis on each)."""

    params: PyTree  # the weights the mask was applied to: θ0 (or its signed constant), never changed
    logits: PyTree  # trained logits, ``None`` on unprunable leaves
    curves: SupermaskCurves


def init_logits(mask: PyTree, value: float = 0.0) -> PyTree:
    """Logits ``value`` (float32) on every prunable leaf of ``mask``, ``None`` elsewhere."""
    return jax.tree.map(lambda m: None if m is None else jnp.full(m.shape, value, jnp.float32), mask,
                        is_leaf=_is_none)


def _global_density(mask: PyTree) -> jax.Array:
    leaves = [m for _, m in M.leaves_with_names(mask)]
    return sum(jnp.sum(m, dtype=jnp.float32) for m in leaves) / sum(m.size for m in leaves)


def make_supermask_trainer(model, spec: SupermaskSpec, mean, std) -> Callable:
    """``learn(theta0, key, data) -> SupermaskResult``: learned supermasks for a stack of T seeds,
    one compiled program (``jax.jit`` of ``jax.vmap``; T leading on ``theta0`` and ``key``,
    ``data`` a shared :class:`~ltjax.train.DeviceData`).

    Per seed: ``split(key, 3)`` gives a data-order key (batch t: :func:`ltjax.data.order.batch_indices`),
    a sampling key (step t's mask: ``fold_in(k, t)``) and an evaluation key (evaluation c's sampled
    mask: ``fold_in(k, c)``). Step t minimizes the mean softmax
    cross-entropy of ``apply(W ⊙ sample_mask(s), x)`` over the logits ``s`` only with ``spec.tx``;
    ``W`` (θ0, or its signed constant) is carried through the loop untouched and returned as
    ``params``. Model state (batch norm) is not supported.
    """
    if model.stateful:
        raise ValueError("learned supermasks need a model without batch norm (model.stateful is True)")
    if spec.steps % spec.eval_every:
        raise ValueError(f"steps={spec.steps} must be a multiple of eval_every={spec.eval_every}")
    tx = spec.tx if spec.tx is not None else optax.sgd(100.0)
    B, E = spec.batch_size, spec.eval_every
    forward = lambda p, x: model.apply(p, D.normalize(x, mean, std))  # noqa: E731

    def one(theta0, key, data: DeviceData):
        mask = M.make_mask(theta0, model.is_prunable)
        weights = signed_constant(theta0, mask) if spec.signed_constant else theta0
        order_key, sample_key, eval_key = jax.random.split(key, 3)
        n = data.x_train.shape[0]

        def loss_fn(s, w, t):
            idx = batch_indices(order_key, n, B, t)
            logits = forward(_times(w, sample_mask(s, jax.random.fold_in(sample_key, t))), data.x_train[idx])
            return jnp.mean(loss_and_correct(logits, data.y_train[idx])[0])

        def step(carry, t):
            w, s, opt_state = carry
            loss, g = jax.value_and_grad(loss_fn)(s, w, t)
            updates, opt_state = tx.update(g, opt_state, s)
            return (w, optax.apply_updates(s, updates), opt_state), loss

        def segment(carry, c):
            carry, losses = lax.scan(step, carry, c * E + jnp.arange(E, dtype=jnp.int32))
            w, s, _ = carry
            test = (data.x_test, data.y_test, data.w_test)
            sampled = evaluate(forward, _times(w, sample_mask(s, jax.random.fold_in(eval_key, c))), *test)[1]
            hard = threshold_mask(s)
            rounded = evaluate(forward, M.apply_mask(w, hard), *test)[1]
            return carry, SupermaskCurves((c + 1) * E, jnp.mean(losses), sampled, rounded, _global_density(hard))

        s0 = init_logits(mask, spec.init_logit)
        (w, s, _), curves = lax.scan(segment, (weights, s0, tx.init(s0)), jnp.arange(spec.steps // E))
        return SupermaskResult(w, s, curves)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))


# -- a study configuration's supermasks ------------------------------------------------------


class ConfigSupermasks(NamedTuple):
    """What :func:`of_config` returns: test accuracies (all test images), seeds on the last axis."""

    dense_test_acc: Any  # (T,) the trained dense network
    densities: list[dict[str, float]]  # per target: each layer's remaining fraction ("pool" for global scope)
    overall: list[float]  # per target: the fraction of all prunable weights remaining
    theta0: dict[str, Any]  # criterion -> (targets, T): θ0 ⊙ mask, untrained
    signed: dict[str, Any]  # criterion -> (targets, T): signed_constant(θ0) ⊙ mask, untrained
    learned: dict[str, SupermaskCurves] | None  # "theta0" / "signed_constant" -> curves (T leading), or None


def check_criteria(names) -> tuple[str, ...]:
    """``names`` as a tuple, or a ValueError naming the first unknown one, a close valid name and all
    valid ones."""
    from ltjax.config import did_you_mean

    names = tuple(names)
    if not names:
        raise ValueError(f"no mask criteria given; valid criteria: {', '.join(NAMES)}")
    for n in names:
        if n not in NAMES:
            raise ValueError(f"unknown mask criterion {n!r}{did_you_mean(n, NAMES)}; valid criteria: {', '.join(NAMES)}")
    return names


def config_keeps(config, sizes: Mapping[str, int], rounds=None, densities=None) -> list:
    """Survivor targets of a dense mask with layer ``sizes`` (``{layer: weights}``), one per entry of
    ``rounds`` (IMP's exact counts after r rounds at ``prune_rate`` / ``layer_rates``: 0.8^r and
    0.9^r remaining for the paper's LeNet) or of ``densities`` (the preset's one-shot rates for that
    density, :func:`ltjax.rounds.round_rates`). Layerwise scope: ``{layer: count}`` per target;
    global: the pool's count (layers in ``exclude`` stay dense)."""
    from ltjax import rounds as R

    if (rounds is None) == (densities is None):
        raise ValueError("give exactly one of rounds and densities")
    if not (rounds if rounds is not None else densities):
        raise ValueError("no pruning targets: give at least one round or density")
    pool = {n: s for n, s in sizes.items() if not pruning.excluded(n, config.exclude)}
    cut = lambda n, rate: n - pruning.static_prune_count(n, rate)  # noqa: E731
    if densities is not None:
        for d in densities:
            if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d <= 1:
                raise ValueError(f"density {d!r} is not valid: a fraction of weights remaining, in (0, 1]")
        # round_rates of a one-shot study with this one density (its fields only, so not validated)
        rates = [R.round_rates(dataclasses.replace(config, mode="oneshot", densities=(d,)), list(pool), 1)
                 for d in densities]
        if config.scope == "global":
            return [cut(sum(pool.values()), r) for r in rates]
        return [{n: cut(s, r[n]) for n, s in pool.items()} for r in rates]
    out = []
    for r in rounds:
        if r < 0:
            raise ValueError(f"rounds must be >= 0, got {r}")
        if config.scope == "global":
            keep = sum(pool.values())
            for _ in range(r):
                keep = cut(keep, config.prune_rate)
        else:
            q = pruning.layer_rates(list(pool), config.prune_rate, dict(config.layer_rates))
            keep = dict(pool)
            for _ in range(r):
                keep = {n: cut(k, q[n]) for n, k in keep.items()}
        out.append(keep)
    return out


def _describe_keeps(config, keeps: list, sizes: Mapping[str, int]) -> tuple[list[dict[str, float]], list[float]]:
    total = sum(sizes.values())
    kept_dense = {n: 1.0 for n in sizes if pruning.excluded(n, config.exclude)}
    pool = total - sum(sizes[n] for n in kept_dense)
    dens, overall = [], []
    for k in keeps:
        if isinstance(k, Mapping):
            dens.append({n: k.get(n, s) / s for n, s in sizes.items()})
            overall.append(sum(k.get(n, s) for n, s in sizes.items()) / total)
        else:
            dens.append({"pool": k / pool, **kept_dense})
            overall.append((k + total - pool) / total)
    return dens, overall


def _criteria_accuracy(model, ds, data, theta0, final, keys, keeps, criteria, config):
    """``({criterion: (targets, T)}, same for signed constants)``: one program per criterion, the
    targets one after another in it (``lax.map``), the seeds vmapped."""
    dense = jax.vmap(lambda p: M.make_mask(p, model.is_prunable))(theta0)
    stacked = ({n: jnp.array([k[n] for k in keeps], jnp.int32) for n in keeps[0]} if isinstance(keeps[0], Mapping)
               else jnp.array(keeps, jnp.int32))
    plain, signed = {}, {}
    for name in criteria:
        def one(p0, pf, m, k, data, keep, name=name):
            score = criterion_scores(name, p0, pf, m, k)
            mask, _ = pruning.prune_in_steps(lambda _: score, m, 1, keep=keep, scope=config.scope,
                                             exclude=tuple(config.exclude))
            acc = lambda w: masked_accuracy(model, w, mask, data, ds.mean, ds.std)[1]  # noqa: E731
            return acc(p0), acc(signed_constant(p0, m))

        per_seed = jax.vmap(one, in_axes=(0, 0, 0, 0, None, None))
        run = jax.jit(lambda p0, pf, m, k, data: lax.map(lambda keep: per_seed(p0, pf, m, k, data, keep), stacked))
        plain[name], signed[name] = map(np.asarray, run(theta0, final, dense, keys, data))
    return plain, signed


def of_config(config, criteria=NAMES, *, rounds=None, densities=None, learn_steps: int = 0,
              learn_tx: optax.GradientTransformation | None = None, manual_dir: str | None = None,
              data_dir: str | None = None) -> ConfigSupermasks:
    """Supermasks of a study configuration's dense network: its θ0 for all ``config.seeds`` (as
    ``lottery.run`` draws them) trained with its recipe for ``config.iterations`` in one program;
    then each of ``criteria`` prunes the dense mask one-shot to each target of ``rounds`` or
    ``densities`` (:func:`config_keeps`; the config's scope and ``exclude``), and the test
    accuracy of the *untrained* θ0 ⊙ mask and signed-constant ⊙ mask is measured. ``random``
    draws from ``fold_in(init key, 1)`` per seed. With ``learn_steps > 0`` also learned
    supermasks on θ0 and on its signed constant (:func:`make_supermask_trainer`; the config's
    batch size, each seed's data-order key, ``learn_tx`` default ``optax.adam(0.1)``). Models with
    batch norm are refused."""
    from ltjax import lottery  # the study driver sits above this module

    criteria = check_criteria(criteria)
    if isinstance(learn_steps, bool) or not isinstance(learn_steps, int) or learn_steps < 0:
        raise ValueError(f"learn_steps must be an integer >= 0 (0: no learned supermask), got {learn_steps!r}")
    config.validate().require_objects()
    ds = D.load(config.dataset, validation_size=config.validation_size, split_seed=config.split_seed,
                data_dir=data_dir, manual_dir=manual_dir)
    model = lottery.build_model(config, ds)
    if model.stateful:
        raise ValueError(f"supermasks need a model without batch norm; {config.model!r} has model state")
    init_keys, data_keys = lottery.seed_keys(config)
    theta0 = lottery.init_theta0(config, model, init_keys)
    dense = jax.vmap(lambda p: M.make_mask(p, model.is_prunable))(theta0)
    sizes = M.size(jax.tree.map(lambda a: a[0], dense))
    keeps = config_keeps(config, sizes, rounds, densities)
    data = device_data(ds)
    final, curves = make_trainer(model, config.train_spec(), ds.mean, ds.std)(theta0, dense, data_keys, data, 0,
                                                                              config.iterations)
    keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(init_keys)
    plain, signed = _criteria_accuracy(model, ds, data, theta0, final, keys, keeps, criteria, config)
    learned = None
    if learn_steps:
        learned = {}
        for w in ("theta0", "signed_constant"):
            spec = SupermaskSpec(steps=learn_steps, batch_size=config.batch_size, eval_every=learn_steps,
                                 signed_constant=w == "signed_constant", tx=learn_tx or optax.adam(0.1))
            res = make_supermask_trainer(model, spec, ds.mean, ds.std)(theta0, data_keys, data)
            learned[w] = jax.tree.map(np.asarray, res.curves)
    dens, overall = _describe_keeps(config, keeps, sizes)
    return ConfigSupermasks(np.asarray(curves.test_acc[:, -1]), dens, overall, plain, signed, learned)
