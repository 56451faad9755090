"""The round loop of IMP / LTR: train → score → prune → rewind, for T tickets at once.

Round 0 trains the dense network from θ0 (and snapshots θk when rewinding). Round r ≥ 1
prunes the previous round's trained weights (``iterative``) or round 0's trained weights to
the r-th density (``oneshot``), then starts from:

* ``reset``:    θ0 ⊙ m, trained for ``iterations`` (Frankle & Carbin 2018);
* ``rewind``:   θk ⊙ m, trained from iteration k to ``iterations`` (LTR, Algorithm 1 of the
  layerwise-importance paper; the optimizer state restarts, the learning-rate schedule
  and data order continue at iteration k);
* ``continue``: the previous round's trained weights ⊙ m, trained for ``iterations`` again
  with a fresh optimizer (Han et al. 2015).

All T tickets (seeds ``seed … seed+T-1``) train in one compiled, vmapped program whose
ticket axis is sharded over the local devices. Every round is saved before the next one
starts; rerunning the same configuration resumes after the last complete round and,
because each round is a deterministic function of what is on disk, ends with the same
masks as an uninterrupted run.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import data as D
from ltjax import masks as M
from ltjax import models, pruning, scores, stopping, store
from ltjax.config import Config
from ltjax.devices import replicate, shard_tickets, ticket_mesh
from ltjax.train import Curves, device_data, make_trainer

PyTree = Any


def build_model(config: Config, ds: D.Dataset) -> models.Model:
    num_outputs = 1 if ds.num_classes == 2 else ds.num_classes
    return models.build(
        config.model, widths=config.widths, input_shape=ds.x_train.shape[1:],
        num_outputs=num_outputs, init=config.init, init_std=config.init_std,
    )


def ticket_keys(config: Config) -> tuple[jax.Array, jax.Array]:
    """Per-ticket (init key, data-order key); ticket i uses seed ``config.seed + i``."""
    keys = jnp.stack([jax.random.PRNGKey(config.seed + i) for i in range(config.seeds)])
    both = jax.vmap(lambda k: jax.random.split(k, 2))(keys)
    return both[:, 0], both[:, 1]


def round_rates(config: Config, layer_names: list[str], r: int) -> float | dict[str, float]:
    """What ``prune`` removes in round r ≥ 1, as fractions of the mask it is applied to.

    Iterative: ``prune_rate`` of the survivors each round (layerwise: per-layer overrides).
    One-shot from the dense mask: a fraction ``1 - d_r`` where ``d_r`` is ``densities[r-1]``
    or ``(1 - prune_rate)^r``; a layer with an override rate q is pruned by
    ``(1 - d_r) · q / prune_rate`` (the 2018 paper prunes the output at half the rate).
    """
    if config.mode == "iterative":
        if config.scope == "global":
            return config.prune_rate
        return pruning.layer_rates(layer_names, config.prune_rate, dict(config.layer_rates))
    d = config.densities[r - 1] if config.densities else (1 - config.prune_rate) ** r
    if config.scope == "global":
        return 1 - d
    rates = pruning.layer_rates(layer_names, config.prune_rate, dict(config.layer_rates))
    return {n: min(1.0, (1 - d) * q / config.prune_rate) for n, q in rates.items()}


@functools.lru_cache(maxsize=None)
def _pruner(score: str, scope: str, exclude: tuple[str, ...], rates: Any) -> Callable:
    score_fn = scores.get(score)
    rate = dict(rates) if isinstance(rates, tuple) else rates

    def one(params, mask):
        return pruning.prune(score_fn(params, mask), mask, rate, scope=scope, exclude=exclude)

    return jax.jit(jax.vmap(one))


def next_mask(config: Config, params: PyTree, mask: PyTree, r: int) -> PyTree:
    """Mask of round r ≥ 1 from trained ``params`` and the ``mask`` they were trained with."""
    rates = round_rates(config, M.layer_names(mask), r)
    key = tuple(sorted(rates.items())) if isinstance(rates, dict) else rates
    return _pruner(config.score, config.scope, tuple(config.exclude), key)(params, mask)


def round_start(config: Config, r: int, theta0: PyTree, theta_k: PyTree, prev_params: PyTree, mask: PyTree):
    """Weights and global iteration round r starts from: ``(start ⊙ mask, start_step)``.

    Round 0 starts from θ0. Later rounds: ``reset`` → θ0, ``rewind`` → θk at iteration k,
    ``continue`` → the previous round's trained weights.
    """
    if r == 0 or config.strategy == "reset":
        start, step = theta0, 0
    elif config.strategy == "rewind":
        start, step = theta_k, config.rewind_iteration
    else:
        start, step = prev_params, 0
    return _apply_mask(start, mask), step


_apply_mask = jax.jit(jax.vmap(M.apply_mask))


def round_metrics(r: int, mask: PyTree, curves: Curves, early_on: str, seconds: float) -> dict:
    curves = {k: np.asarray(v) for k, v in curves._asdict().items()}
    curves["step"] = curves["step"][0]  # identical for every ticket
    per_ticket = {k: v for k, v in curves.items() if k != "step"}
    es = stopping.early_stop({**per_ticket, "step": np.broadcast_to(curves["step"], per_ticket["val_loss"].shape)}, early_on)
    return {
        "round": r,
        "density": np.asarray(jax.vmap(M.global_density)(mask)),
        "layer_density": {k: np.asarray(v) for k, v in jax.vmap(M.density)(mask).items()},
        "remaining": {k: np.asarray(v) for k, v in jax.vmap(M.count)(mask).items()},
        "early_stop_on": early_on,
        **es,
        "seconds": seconds,
        "curves": curves,
    }


class _Bar:
    """A tqdm bar the compiled program updates through ``jax.debug.callback``."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar, self.offset = enabled, None, 0

    def start(self, desc: str, total: int, offset: int = 0):
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="it", leave=False, dynamic_ncols=True)
        self.offset = offset

    def __call__(self, done):
        if self.bar is not None:
            self.bar.n = min(self.offset + int(done), self.bar.total)
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_round(m: dict) -> str:
    ms = lambda a: f"{np.mean(a):.4f}±{np.std(a):.4f}"  # noqa: E731
    return (
        f"round {m['round']:2d}  density {100 * np.mean(m['density']):7.3f}%  "
        f"es-iter {np.mean(m['early_stop_iteration']):8.0f}  "
        f"{m['early_stop_on']}-acc@es {ms(m['val_acc_at_es'] if m['early_stop_on'] == 'val' else m['test_acc_at_es'])}  "
        f"test-acc@es {ms(m['test_acc_at_es'])}  final-test-acc {ms(m['final_test_acc'])}  ({m['seconds']:.0f}s)"
    )


def run(
    config: Config,
    out: str | Path = "runs",
    *,
    manual_dir: str | None = None,
    data_dir: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> store.Run:
    """Run (or resume) the study described by ``config``; returns the loaded run."""
    config.validate()
    d = store.init_run(config, out)
    done = store.completed_rounds(d)
    if len(done) >= config.rounds:
        log(f"{d}: all {config.rounds} rounds already complete")
        return store.load_run(d)

    ds = D.load(config.dataset, validation_size=config.validation_size, split_seed=config.split_seed,
                data_dir=data_dir, manual_dir=manual_dir)
    early_on = "val" if len(ds.x_val) else "test"
    model = build_model(config, ds)
    mesh = ticket_mesh(config.seeds)
    data = replicate(device_data(ds), mesh)
    init_keys, data_keys = shard_tickets(ticket_keys(config), mesh)

    if (d / "theta0").exists():
        theta0 = shard_tickets(store.load_tree(d / "theta0"), mesh)
    else:
        theta0 = shard_tickets(jax.jit(jax.vmap(model.init))(init_keys), mesh)
        store.save_once(d / "theta0", theta0)
    dense = jax.jit(jax.vmap(lambda p: M.make_mask(p, model.is_prunable)))(theta0)

    bar = _Bar(progress)
    trainer = make_trainer(model, config.train_spec(), ds.mean, ds.std, progress=bar)
    k = config.rewind_step()
    iters = config.iterations
    theta_k = shard_tickets(store.load_tree(d / "theta_k"), mesh) if (d / "theta_k").exists() else theta0
    prev_mask = prev_params = dense_params = None
    if done:
        last = store.load_tree(d / f"round_{done[-1]:03d}" / "state")
        prev_mask, prev_params = shard_tickets(last["mask"], mesh), shard_tickets(last["params"], mesh)
        if config.mode == "oneshot":
            dense_params = shard_tickets(store.load_tree(d / "round_000" / "state")["params"], mesh)
        log(f"{d}: resuming after round {done[-1]}")
    else:
        log(f"{d}: starting {config.rounds} rounds, {config.seeds} ticket(s) in one program")

    for r in range(len(done), config.rounds):
        t0 = time.perf_counter()
        if r == 0:
            mask = dense
        elif config.mode == "oneshot":
            mask = next_mask(config, dense_params, dense, r)
        else:
            mask = next_mask(config, prev_params, prev_mask, r)

        bar.start(f"round {r}", iters - (0 if r == 0 or config.strategy != "rewind" else k))
        if r == 0 and k > 0:
            theta_k, c1 = trainer(theta0, mask, data_keys, data, 0, k)
            if not (d / "theta_k").exists():  # a killed round 0 may have saved it already
                store.save_once(d / "theta_k", theta_k)
            bar.offset = k
            params, c2 = trainer(theta_k, mask, data_keys, data, k, iters - k)
            curves = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=1), c1, c2)
        else:
            start, begin = round_start(config, r, theta0, theta_k, prev_params, mask)
            start, mask = shard_tickets((start, mask), mesh)
            params, curves = trainer(start, mask, data_keys, data, begin, iters - begin)
        jax.block_until_ready(params)
        bar.close()

        metrics = round_metrics(r, mask, curves, early_on, time.perf_counter() - t0)
        store.save_round(d, r, mask, params, metrics)
        log(format_round(metrics))
        prev_mask, prev_params = mask, params
        if r == 0:
            dense_params = params
    return store.load_run(d)
