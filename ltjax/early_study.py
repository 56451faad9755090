"""Early-ticket studies: a baseline run watched epoch by epoch, and the experiments built on it.

``baseline(config, out)`` trains ``config.seeds`` dense networks (vmapped) with the config's
recipe for ``config.iterations`` (whole epochs), one compiled call per epoch with the optimizer
state passed on (so it computes what one uninterrupted call computes). After every epoch it
records, per seed: the weights (an orbax snapshot: any epoch can be pruned from or rewound
to), per-layer weight std (Figure 2a), the per-layer rates global magnitude pruning would
choose (Figure 2b), the pooled mask bits (Figure 3 and early-bird) and, for batch-norm models,
the channel mask from the batch-norm scales. The baseline is one round of the loop every ltjax
study runs (:func:`ltjax.loop.run`), the dense network's, and its epochs are the segments of
:func:`ltjax.midround.train`, the IMP rounds' mid-round checkpoints: after each, the state
to continue from (params, optimizer state) is saved as ``partial/``, so a killed or preempted
(SIGTERM) baseline resumes at its last finished epoch and ends where an uninterrupted one ends.

On top of it, each trains many networks in one vmapped program, as rounds of the loop every ltjax
study runs (:func:`ltjax.loop.run`: a round's mask, its start, its training, its commit as a part):

* :func:`grid`: Figure 1, one program per prune epoch s over every rewind epoch v (× seeds);
* :func:`ppr`: Figure 4, pseudo-prune-then-retrain, one program per retraining lr;
* :func:`memorization`: Figure 5 / Table 1, random labels, one program per training-set size;
* :func:`gradual`: Zhu & Gupta's cubic schedule inside the compiled loop (Tables 1 and 2);
* :func:`early_bird`: You et al.'s rule on the recorded masks, and the found ticket's accuracy
  (its retraining a round too).

A killed or SIGTERMed experiment continues with the rounds it lacks. With the configuration's
``checkpoint_every``, the long rounds (a grid row, a gradual window's retraining, the early-bird
retraining: the full schedule each) also train in segments of that many iterations, their state
saved after each as IMP rounds save theirs (:mod:`ltjax.midround`), so a round killed midway
resumes at its last segment and ends where an uninterrupted one with the same setting ends.

Layout of ``<out>/<name>-<hash>/``: ``config.json``, ``early.json`` (the study's pruning
settings), ``epoch_NNN/`` (orbax: params, stats, mask bits of epoch NNN; epoch 0 = θ0),
``partial/`` (while training: :mod:`ltjax.midround`'s resume point of the last finished epoch,
removed when the baseline is done), and ``parts/``: one JSON per finished experiment part (a grid
row, a PPR lr, a gradual window, a memorization size, the early-bird tickets), named by the part's
kind and a hash of every setting that decides it (:func:`ltjax.store.part_path`), each written
atomically, and, with ``checkpoint_every``, ``<kind>-<hash>.partial/`` beside a part whose round is
training (its mid-round state, removed when the part is written).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import data as D
from ltjax import early, identity, loop, lottery, midround, models, store
from ltjax import masks as M
from ltjax.config import Config, ConfigError
from ltjax.devices import replicate, shard_tickets, ticket_mesh
from ltjax.progress import Progress
from ltjax.train import device_data, make_trainer

PyTree = Any


class Study(NamedTuple):
    """A baseline run directory, opened (see :func:`baseline`)."""

    path: Path
    config: Config
    rate: float  # fraction of the pool pruned
    exclude: tuple[str, ...]  # layers left unpruned
    steps_per_epoch: int
    epochs: int

    def params(self, epoch: int) -> PyTree:
        """The weights (all seeds) at the end of ``epoch`` (0 = θ0)."""
        return store.load_once(self.path / f"epoch_{epoch:03d}")["params"]

    def stats(self) -> dict[str, np.ndarray]:
        """Per-epoch records, stacked over epochs 0..E: ``layer_std`` and ``layer_rate``
        ({layer: (E+1, seeds)}), ``bits`` ((E+1, seeds, pooled weights) bool), ``test_acc`` and
        ``val_acc`` ((E+1, seeds)), and ``channel_bits`` for batch-norm models."""
        rows = [store.load_once(self.path / f"epoch_{e:03d}") for e in range(self.epochs + 1)]
        out = {k: {n: np.stack([np.asarray(r[k][n]) for r in rows]) for n in rows[0][k]}
               for k in ("layer_std", "layer_rate")}

        def unpack(key, count):
            return np.stack([np.unpackbits(np.asarray(r[key]), axis=-1, count=count).astype(bool) for r in rows])

        out["pool"] = int(rows[0]["pool"])
        out["bits"] = unpack("bits", out["pool"])
        if "channel_bits" in rows[0]:
            out["channel_bits"] = unpack("channel_bits", int(rows[0]["channels"]))
        for k in ("test_acc", "val_acc"):
            out[k] = np.stack([np.asarray(r[k]) for r in rows])
        return out


def _setup(config: Config, manual_dir):
    config.validate()
    ds = D.load(config.dataset, validation_size=config.validation_size, split_seed=config.split_seed,
                manual_dir=manual_dir)
    model = lottery.build_model(config, ds)
    spe = len(ds.x_train) // config.batch_size
    if spe == 0 or config.iterations % spe:
        raise ConfigError(f"iterations={config.iterations} is not valid for an epoch-based study: give a multiple "
                          f"of the {spe} iterations per epoch ({len(ds.x_train)} training examples at batch "
                          f"{config.batch_size}), e.g. {max(1, config.iterations // max(spe, 1)) * spe}")
    return ds, model, spe


def _bits(masks: dict[str, jax.Array]) -> tuple[np.ndarray, int]:
    """Channel masks ``{layer: (seeds, C)}`` as packed bits (seeds, ⌈ΣC/8⌉) and their count."""
    flat = np.concatenate([np.asarray(masks[k]).reshape(np.shape(masks[k])[0], -1) for k in sorted(masks)], axis=-1)
    return np.packbits(flat, axis=-1), flat.shape[-1]


def baseline(config: Config, out: str | Path = "runs", *, rate: float = 0.8, exclude: tuple[str, ...] | None = None,
             channel: bool = False, manual_dir: str | None = None, progress: bool = True,
             log: Callable[[str], None] = print, ticket_chunk: int | None = None) -> Study:
    """Train (or resume) the baseline of an early-ticket study; returns the opened study.

    ``rate`` is the fraction pruned by the masks recorded every epoch; ``exclude`` the layers
    left unpruned (default: ``config.exclude`` if it names any, else the first and the last
    layer as the early-ticket paper does, :func:`ltjax.early.first_and_last`);
    ``channel`` also records batch-norm channel masks at ``rate`` (early-bird's structured form).
    On SIGTERM it stops once the epoch in training is saved (:class:`ltjax.midround.Preempted`);
    called again, it resumes there.
    """
    ds, model, spe = _setup(config, manual_dir)
    probe = jax.eval_shape(model.init, jax.random.PRNGKey(0))  # shapes: the checks draw no weights
    exclude = _check_settings(config, model, probe, rate, exclude, channel)
    settings = {"rate": rate, "exclude": list(exclude), "channel": channel}
    d = store.init_run(config, out, D.fingerprint(ds),
                       model=identity.model_identity(model, values="model" in config.objects()))
    s_path = d / "early.json"
    if s_path.exists() and json.loads(s_path.read_text()) != settings:
        raise ConfigError(f"{d} holds a study with pruning settings {json.loads(s_path.read_text())}, not "
                          f"{settings}; use another output folder or the same settings")
    epochs = config.iterations // spe
    mesh = ticket_mesh(config.seeds)
    data = replicate(device_data(ds), mesh)
    init_keys, data_keys = shard_tickets(lottery.seed_keys(config), mesh)

    def stats(p):
        dense = M.make_mask(p, model.is_prunable)
        rec = {"layer_std": early.layer_std(p, dense), "layer_rate": early.layer_rates(p, dense, rate, exclude),
               "mask_bits": early.pooled_bits(early.magnitude_mask(p, dense, rate, exclude), exclude)}
        if channel:
            rec["channel_mask"] = early.channel_mask(p, rate)
        return rec

    stats_fn = jax.jit(jax.vmap(stats))
    pool = early.pool_size(M.make_mask(probe, model.is_prunable), exclude)

    def write_epoch(e: int, params, acc: dict) -> None:
        if (d / f"epoch_{e:03d}").exists():  # a resume may train again an epoch whose record was written
            return
        rec = jax.device_get(stats_fn(params))
        rec["bits"] = np.packbits(np.asarray(rec.pop("mask_bits")), axis=-1)
        if channel:
            rec["channel_bits"], n_ch = _bits(rec.pop("channel_mask"))
            rec["channels"] = np.int64(n_ch)
        store.save_once(d / f"epoch_{e:03d}", {"params": params, **rec, "pool": np.int64(pool), **acc})

    with store.RunLock(d), midround.Watch() as watch:
        store.clear_temporaries(d)
        if not s_path.exists():
            store.write_json(s_path, settings)
        if not (d / "epoch_000").exists():
            nan = np.full(config.seeds, np.nan, np.float32)
            write_epoch(0, models.run_init(jax.vmap(model.init), init_keys), {"test_acc": nan, "val_acc": nan})
        study = Study(d, config, rate, exclude, spe, epochs)
        loop.run(_baseline_round(study, model, ds, (mesh, data, data_keys), write_epoch, watch, log, progress,
                                 ticket_chunk), [0], watch=watch)
        midround.discard(d)  # also a resume point left by a run killed after its last epoch's record
    return study


def _baseline_round(study: Study, model, ds: D.Dataset, placed: tuple, write_epoch: Callable, watch, log, progress,
                    ticket_chunk) -> loop.Rounds:
    """The baseline as a round of the loop (:func:`ltjax.loop.run`): the dense mask on θ0 (``epoch_000``),
    trained from iteration 0 in segments of one epoch (:func:`ltjax.midround.train`, ``partial/``
    resuming a killed one), each epoch's record written after it (``write_epoch``); done when every
    epoch's record is there. ``placed``: the mesh, the data on it and the seeds' data-order keys."""
    d, config, spe, epochs = study.path, study.config, study.steps_per_epoch, study.epochs
    mesh, data, data_keys = placed
    missing = lambda: [e for e in range(1, epochs + 1) if not (d / f"epoch_{e:03d}").exists()]  # noqa: E731
    now: dict[str, Any] = {}

    def mask(_) -> PyTree:
        log(f"{d}: {len(missing())} of {epochs} epochs to train, {config.seeds} seed(s) in one program")
        if (d / "resume").exists():  # an ltjax before 2026-12 kept its own resume point there
            log(f"{d / 'resume'} (an earlier ltjax's resume point) is not read: the epochs missing are trained "
                f"again from θ0 (the same weights); delete it when the baseline is done")
        now["theta0"] = shard_tickets(store.load_once(d / "epoch_000")["params"], mesh)
        return jax.jit(jax.vmap(lambda p: M.make_mask(p, model.is_prunable)))(now["theta0"])

    def fit(_, theta0: PyTree, dense: PyTree, begin: int):
        bar = Progress(progress)
        trainer = make_trainer(model, config.train_spec()._replace(eval_every=spe), ds.mean, ds.std,
                               progress=bar if bar.enabled else None, ticket_chunk=ticket_chunk, mesh=mesh)

        def start_epoch(done: int) -> None:  # also where a resumed baseline starts
            bar.close()
            if done < epochs * spe:
                bar.start(f"epoch {done // spe + 1}/{epochs}", spe)
            now["t0"] = time.perf_counter()

        def after_epoch(done: int, params, curves) -> None:
            e = done // spe
            acc = {"test_acc": np.asarray(curves.test_acc[:, -1]), "val_acc": np.asarray(curves.val_acc[:, -1])}
            write_epoch(e, params, acc)
            log(f"epoch {e:3d}  test-acc {np.nanmean(acc['test_acc']):.4f}  ({time.perf_counter() - now['t0']:.1f}s)")
            start_epoch(done)

        start_epoch(0)
        return midround.train(trainer, theta0, dense, data_keys, data, begin, epochs * spe, every=spe, d=d, round_=0,
                              watch=watch, place=lambda t: shard_tickets(t, mesh), bar_at=start_epoch, log=log,
                              after_segment=after_epoch)

    return loop.Rounds("baseline", mask, lambda _, m: (now["theta0"], 0), fit, lambda *_: True,
                       lambda _: None if missing() else True)


def _check_settings(config: Config, model, probe: PyTree, rate: float, exclude, channel: bool) -> tuple[str, ...]:
    """The baseline's pruning settings checked before any training; returns ``exclude`` resolved."""
    if not 0 < rate < 1:
        raise ConfigError(f"rate={rate!r} is not valid: the fraction of weights pruned, in (0, 1)")
    if config.sweep:
        raise ConfigError(f"sweep={config.sweep!r} is not valid for an early-ticket study, which trains one network "
                          f"per seed; run one study per value (sweeps are lottery.run's)")
    names = M.layer_names(M.make_mask(probe, model.is_prunable))
    if exclude is None:
        exclude = tuple(config.exclude) or early.first_and_last(names)
    exclude = tuple(exclude)
    unknown = [e for e in exclude if not any(early.pruning.excluded(n, (e,)) for n in names)]
    if unknown:
        raise ConfigError(f"exclude={list(exclude)}: {unknown} match no layer; the model's prunable layers are {names}")
    if channel:
        jax.eval_shape(lambda p: early.channel_mask(p, rate), probe)  # a model without batch norm: a clear error now
    return exclude


def open_study(config: Config, out: str | Path = "runs", *, manual_dir: str | None = None) -> Study:
    """A finished (or partly finished) baseline, for analysis without training; the experiments on
    it train the model, so a model that differs from the baseline's is refused here."""
    d = store.run_dir(config, out)
    if not (d / "early.json").exists():
        raise FileNotFoundError(f"no early-ticket baseline of this configuration in {d}: run baseline() first")
    s = json.loads((d / "early.json").read_text())
    _, model, spe = _setup(config, manual_dir)
    store.check_model(d, identity.model_identity(model, values="model" in config.objects()))
    epochs = max(e for e in range(config.iterations // spe + 1) if (d / f"epoch_{e:03d}").exists())
    return Study(d, config, s["rate"], tuple(s["exclude"]), spe, epochs)


# ---------------------------------------------------------------------------- experiments


def _train_program(study: Study, model, ds, spec_changes: dict, ticket_chunk, mesh):
    spec = study.config.train_spec()._replace(**spec_changes)
    return make_trainer(model, spec, ds.mean, ds.std, ticket_chunk=ticket_chunk, mesh=mesh)


def _partial_dir(study: Study, kind: str, key: dict) -> Path:
    """Where the round of part ``(kind, key)`` keeps its mid-round state while it trains:
    ``parts/<kind>-<hash>.partial/``, beside the part it will be."""
    p = store.part_path(study.path, kind, key)
    return p.with_name(p.stem + ".partial")


def _fit_part(study: Study, kind: str, key: dict, train, args: tuple, begin: int, n: int, mesh,
              watch: midround.Watch, log: Callable[[str], None]) -> tuple:
    """``train(*args, begin, n)`` (args: starts, masks, keys, data) for the round of part ``(kind,
    key)``: one call, or with the configuration's ``checkpoint_every`` in segments of that many
    iterations whose state is saved after each (:func:`ltjax.midround.train`, in
    :func:`_partial_dir`), so a killed or SIGTERMed round resumes at its last segment and ends
    where an uninterrupted one with the same setting ends. :func:`_keep_part` removes the state."""
    every = study.config.checkpoint_every
    if not every or every >= n:
        return train(*args, begin, n)
    d = _partial_dir(study, kind, key)
    d.mkdir(parents=True, exist_ok=True)
    return midround.train(train, *args, begin, n, every=every, d=d, round_=0, watch=watch,
                          place=lambda t: shard_tickets(t, mesh), log=log, label=f"{kind} {key}")


def _keep_part(study: Study, kind: str, key: dict, result: dict) -> dict:
    """Commit part ``(kind, key)`` (:func:`ltjax.store.save_part`), then drop its mid-round state."""
    row = store.save_part(study.path, kind, key, result)
    shutil.rmtree(_partial_dir(study, kind, key), ignore_errors=True)
    return row


def _placed(ds: D.Dataset, num_tickets: int):
    """The mesh for a program of ``num_tickets`` tickets and the dataset replicated on it."""
    mesh = ticket_mesh(num_tickets)
    return mesh, replicate(device_data(ds), mesh)


def _tile(tree: PyTree, n: int) -> PyTree:
    """Repeat a (seeds, ...) stack n times along the ticket axis: ticket i·seeds + seed."""
    return jax.tree.map(lambda a: jnp.concatenate([a] * n), tree)


def data_and_model(study: Study, manual_dir: str | None = None):
    """The study's dataset and model, as its baseline built them."""
    ds, model, _ = _setup(study.config, manual_dir)
    return ds, model


def _stack(trees: Sequence[PyTree]) -> PyTree:
    """Concatenate (seeds, ...) stacks along the ticket axis."""
    return jax.tree.map(lambda *a: jnp.concatenate(a), *trees)


def ticket_masks(study: Study, model, params: PyTree, rate: float | None = None) -> PyTree:
    """One-shot global magnitude masks (the study's pool) of a (seeds, ...) stack of weights."""
    r = study.rate if rate is None else rate
    return jax.jit(jax.vmap(lambda p: early.magnitude_mask(p, M.make_mask(p, model.is_prunable), r,
                                                           study.exclude)))(params)


def mask_from_bits(study: Study, model, packed: np.ndarray) -> PyTree:
    """The (seeds, ...) mask stack whose pooled layers hold ``packed`` (np.packbits of
    :func:`ltjax.early.pooled_bits`, one row per seed) and whose other layers are dense."""
    dense = jax.vmap(lambda p: M.make_mask(p, model.is_prunable))(study.params(0))
    pool = early.pool_size(jax.tree.map(lambda a: a[0], dense), study.exclude)
    bits = np.unpackbits(np.asarray(packed, np.uint8), axis=-1, count=pool).astype(bool)
    flat, treedef = jax.tree_util.tree_flatten_with_path(dense, is_leaf=lambda x: x is None)
    out, at = [], 0
    for path, m in flat:
        if m is not None and not early.pruning.excluded(M.layer_name(path), study.exclude):
            n = int(np.prod(m.shape[1:]))
            m = jnp.asarray(bits[:, at:at + n].reshape(m.shape))
            at += n
        out.append(m)
    return jax.tree_util.tree_unflatten(treedef, out)


def grid(study: Study, prune_epochs: Sequence[int], rewind_epochs: Sequence[int], *, manual_dir=None,
         log: Callable[[str], None] = print, ticket_chunk: int | None = None) -> dict:
    """Figure 1: for each prune epoch s, the mask of the epoch-s weights (one-shot, the study's
    rate and pool) on the weights of every rewind epoch v, retrained with the baseline's full
    schedule from iteration 0 (fresh optimizer; each seed's own data order). The v's of a row
    (× seeds) train in one vmapped program; a finished row is kept as a part (s, rewind epochs).

    Returns ``{"prune_epochs", "rewind_epochs", "final_test_acc": [s][v] mean over seeds,
    "per_seed": [s][v][seed], "best_val_acc": ...}``."""
    _check_epochs(study, [*prune_epochs, *rewind_epochs])
    ds, model = data_and_model(study, manual_dir)
    cfg, S, V = study.config, list(prune_epochs), list(rewind_epochs)
    _, data_keys = lottery.seed_keys(cfg)
    mesh, data = _placed(ds, len(V) * cfg.seeds)
    key = lambda s: {"s": s, "rewind_epochs": V}  # noqa: E731
    done = lambda s: store.load_part(study.path, "grid", key(s))  # noqa: E731
    todo, first = [s for s in S if done(s) is None], {}

    def mask(s: int) -> PyTree:  # the study's mask of the epoch-s weights
        if not first:  # every pending row's mask in one call; the rewind weights, shared by all rows, loaded once
            first.update(masks=ticket_masks(study, model, _stack([study.params(q) for q in todo])),
                         starts=_stack([study.params(v) for v in V]),
                         train=_train_program(study, model, ds, {}, ticket_chunk, mesh))
        first["t0"], i = time.perf_counter(), todo.index(s)
        return jax.tree.map(lambda a: a[i * cfg.seeds:(i + 1) * cfg.seeds], first["masks"])

    def fit(s: int, starts: PyTree, mask: PyTree, begin: int):  # every rewind epoch v × seed in one program
        args = (starts, _tile(mask, len(V)), _tile(data_keys, len(V)), data)
        return _fit_part(study, "grid", key(s), first["train"], args, begin, cfg.iterations, mesh, watch, log)

    def commit(s: int, mask: PyTree, params: PyTree, curves) -> dict:
        fin = np.asarray(curves.test_acc[:, -1]).reshape(len(V), cfg.seeds)
        val = np.asarray(curves.val_acc).max(axis=1).reshape(len(V), cfg.seeds) if len(ds.x_val) else None
        row = _keep_part(study, "grid", key(s), {
            "s": s, "rewind_epochs": V, "final_test_acc": fin.tolist(),
            "best_val_acc": None if val is None else val.tolist(),
            "density": float(np.mean(jax.vmap(M.global_density)(mask))), "seconds": time.perf_counter() - first["t0"]})
        log(f"grid s={s:3d}: final test acc over v={V}: "
            + " ".join(f"{100 * x:.2f}" for x in fin.mean(axis=1)) + f"  ({row['seconds']:.0f}s)")
        return row

    with midround.Watch() as watch:
        rows = loop.run(loop.Rounds("grid row", mask, lambda s, m: (first["starts"], 0), fit, commit, done), S,
                        watch=watch)
    return {"prune_epochs": S, "rewind_epochs": V,
            "final_test_acc": [np.mean(r["final_test_acc"], axis=1).tolist() for r in rows],
            "per_seed": [r["final_test_acc"] for r in rows],
            "density": [r["density"] for r in rows]}


def _check_epochs(study: Study, epochs: Sequence[int]) -> None:
    bad = sorted({e for e in epochs if not 0 <= e <= study.epochs})
    if bad:
        raise ConfigError(f"epochs {bad} are not in the baseline, which has epochs 0..{study.epochs} "
                          f"(0 = θ0; {study.steps_per_epoch} iterations per epoch)")


def ppr(study: Study, epochs: Sequence[int], lrs: Sequence[float] = (0.1, 0.01), *, manual_dir=None,
        log: Callable[[str], None] = print, ticket_chunk: int | None = None) -> dict:
    """Figure 4, pseudo-prune-then-retrain: a copy of the weights of each epoch e, pruned
    (one-shot, the study's rate and pool), retrained for one epoch at a constant learning rate
    (fresh optimizer of the baseline's kind, no drops or warmup; the data order of the seed's
    key folded with e), then evaluated. One program per lr trains every (e, seed) copy.

    Returns ``{"epochs", "lrs", "val_acc"/"test_acc": [lr][e] mean over seeds, "per_seed"}``."""
    _check_epochs(study, epochs)
    ds, model = data_and_model(study, manual_dir)
    cfg, E, spe = study.config, list(epochs), study.steps_per_epoch
    _, data_keys = lottery.seed_keys(cfg)
    keys = jnp.concatenate([jax.vmap(lambda k, e=e: jax.random.fold_in(k, e))(data_keys) for e in E])
    mesh, data = _placed(ds, len(E) * cfg.seeds)
    starts = _stack([study.params(e) for e in E])
    masks = ticket_masks(study, model, starts)
    key = lambda lr: {"lr": lr, "epochs": E}  # noqa: E731
    t0 = {}

    def fit(lr: float, starts: PyTree, masks: PyTree, begin: int):  # one epoch at a constant lr, every (e, seed)
        t0[lr] = time.perf_counter()
        train = _train_program(study, model, ds, {"lr": lr, "lr_drops": (), "warmup_iterations": 0,
                                                  "eval_every": spe}, ticket_chunk, mesh)
        return train(starts, masks, keys, data, begin, spe)

    def commit(lr: float, masks: PyTree, params: PyTree, curves) -> dict:
        test = np.asarray(curves.test_acc[:, -1]).reshape(len(E), cfg.seeds)
        val = np.asarray(curves.val_acc[:, -1]).reshape(len(E), cfg.seeds)
        row = store.save_part(study.path, "ppr", key(lr), {
            "lr": lr, "epochs": E, "test_acc": test.tolist(), "val_acc": val.tolist(),
            "seconds": time.perf_counter() - t0[lr]})
        log(f"ppr lr={lr:g}: test acc over epochs {E}: " + " ".join(f"{100 * x:.2f}" for x in test.mean(1))
            + f"  ({row['seconds']:.0f}s)")
        return row

    rows = loop.run(loop.Rounds("ppr lr", lambda lr: masks, lambda lr, m: (starts, 0), fit, commit,
                                lambda lr: store.load_part(study.path, "ppr", key(lr))), lrs)
    return {"epochs": E, "lrs": list(lrs),
            "val_acc": [np.nanmean(r["val_acc"], axis=1).tolist() if len(ds.x_val) else None for r in rows],
            "test_acc": [np.mean(r["test_acc"], axis=1).tolist() for r in rows],
            "per_seed_test_acc": [r["test_acc"] for r in rows]}


def gradual(study: Study, windows: Sequence[tuple[int, int]], *, steps: int = 4, s_i: float = 0.0,
            manual_dir=None, log: Callable[[str], None] = print, ticket_chunk: int | None = None) -> dict:
    """Zhu & Gupta gradual pruning (Tables 1 and 2): for each window [a, b] (epochs), train from
    θ0 with the baseline's schedule up to epoch b while the mask follows the cubic schedule
    from sparsity ``s_i`` at epoch a to the study's rate at epoch b in ``steps`` mask updates
    (Δt = (b − a)·epoch / steps), inside the compiled loop; then retrain the epoch-b weights under
    the final mask with the full schedule (as one-shot tickets at s = v are). One program per
    window trains every seed.

    Returns ``{"windows", "final_test_acc": [w] mean, "per_seed", "masks": [w] flat bits}``."""
    ds, model = data_and_model(study, manual_dir)
    cfg, spe = study.config, study.steps_per_epoch
    _check_epochs(study, [e for w in windows for e in w])
    _, data_keys = lottery.seed_keys(cfg)
    mesh, data = _placed(ds, cfg.seeds)
    theta0 = study.params(0)
    dense = jax.jit(jax.vmap(lambda p: M.make_mask(p, model.is_prunable)))(theta0)
    one_dense = jax.tree.map(lambda a: a[0], dense)
    for a, b in windows:
        if not 0 <= a < b or (b - a) * spe < steps:
            raise ConfigError(f"window ({a}, {b}) is not valid: epochs 0 ≤ a < b with at least steps={steps} "
                              f"iterations between them")
    key = lambda w: {"window": list(w), "steps": steps, "s_i": s_i}  # noqa: E731  (all that decides the result)
    now: dict[str, Any] = {}

    def mask(w: tuple[int, int]) -> PyTree:  # the pruning run: θ0 trained to epoch b under the cubic schedule
        (a, b), now["t0"] = w, time.perf_counter()
        dt = (b - a) * spe // steps  # Δt; the last update falls on a·spe + steps·Δt ≤ b·spe
        update = early.gradual_mask_update(one_dense, s_i, study.rate, a * spe, steps, dt, study.exclude)
        spec = cfg.train_spec()._replace(eval_every=spe)
        prune_run = make_trainer(model, spec, ds.mean, ds.std, mask_update=update, ticket_chunk=ticket_chunk,
                                 mesh=mesh)
        # updates fall on t = a·spe + j·Δt (j = 0..steps); when the last is t = b·spe (the first
        # iteration after epoch b) it is applied to the epoch-b weights here (else a no-op)
        o = prune_run.stateful(theta0, dense, data_keys, data, 0, b * spe)
        last = jnp.int32(a * spe + steps * dt)
        now["trained"] = o.params
        return jax.jit(jax.vmap(lambda p, m: update(last, p, m)))(o.params, o.mask)

    def fit(w, source: PyTree, mask: PyTree, begin: int):  # the epoch-b weights under the final mask, retrained
        if "retrain" not in now:
            now["retrain"] = _train_program(study, model, ds, {}, ticket_chunk, mesh)
        args = (jax.jit(jax.vmap(M.apply_mask))(source, mask), mask, data_keys, data)
        return _fit_part(study, "gradual", key(w), now["retrain"], args, begin, cfg.iterations, mesh, watch, log)

    def commit(w, mask: PyTree, params: PyTree, curves) -> dict:
        fin = np.asarray(curves.test_acc[:, -1])
        bits = jax.vmap(lambda m: early.pooled_bits(m, study.exclude))(mask)
        row = _keep_part(study, "gradual", key(w), {
            **key(w), "final_test_acc": fin.tolist(), "density": np.asarray(jax.vmap(M.global_density)(mask)),
            "bits": np.packbits(np.asarray(bits), axis=-1), "seconds": time.perf_counter() - now["t0"]})
        log(f"gradual {w[0]}-{w[1]}: final test acc {100 * fin.mean():.2f}  ({row['seconds']:.0f}s)")
        return row

    with midround.Watch() as watch:
        rows = loop.run(loop.Rounds("gradual window", mask, lambda w, m: (now["trained"], 0), fit, commit,
                                    lambda w: store.load_part(study.path, "gradual", key(w))),
                        [tuple(w) for w in windows], watch=watch)
    return {"windows": [list(w) for w in windows], "final_test_acc": [float(np.mean(r["final_test_acc"])) for r in rows],
            "per_seed": [r["final_test_acc"] for r in rows], "bits": [r["bits"] for r in rows]}


def memorization(study: Study, masks: dict[str, PyTree], sizes: Sequence[int], iterations: int, *, manual_dir=None,
                 log: Callable[[str], None] = print, ticket_chunk: int | None = None) -> dict:
    """Memorization capacity (Figure 5, Table 1; Boo et al.): each mask (a (seeds, ...) stack,
    e.g. one-shot masks of different prune epochs, or gradual ones) on the seeds' θ0, trained
    for ``iterations`` steps whatever N (the baseline's optimizer and lr, no drops) on the first N training
    images with random labels (:func:`ltjax.early.random_labels`, one labelling per N from the
    config's seed, shared by all networks); reported: accuracy on those N examples. One
    program per N trains every (mask, seed).

    Returns ``{"labels", "sizes", "train_acc": [label][N] mean over seeds, "per_seed"}``."""
    ds, model = data_and_model(study, manual_dir)
    cfg = study.config
    labels = list(masks)
    theta0 = study.params(0)
    _, data_keys = lottery.seed_keys(cfg)
    all_masks = _stack([masks[k] for k in labels])
    starts = _tile(theta0, len(labels))
    keys = _tile(data_keys, len(labels))
    for n in sizes:
        if not cfg.batch_size <= n <= len(ds.x_train):
            raise ConfigError(f"memorization size {n} is not valid: between the batch size {cfg.batch_size} and "
                              f"the {len(ds.x_train)} training examples")
    key = lambda n: {"n": n, "iterations": iterations, "labels": labels}  # noqa: E731
    t0 = {}

    def fit(n: int, starts: PyTree, masks: PyTree, begin: int):  # every (mask, seed) on the first n, relabelled
        t0[n] = time.perf_counter()
        y = early.random_labels(ds.y_train[:n], ds.num_classes, cfg.seed)
        x = ds.x_train[:n]
        empty = (x[:0], y[:0])
        sub = D.Dataset(ds.name, x, y, *empty, x, y, ds.mean, ds.std, ds.num_classes)
        spec = cfg.train_spec()._replace(lr_drops=(), warmup_iterations=0, eval_every=iterations)
        mesh, data = _placed(sub, len(labels) * cfg.seeds)
        train = make_trainer(model, spec, ds.mean, ds.std, ticket_chunk=ticket_chunk, mesh=mesh)
        return train(starts, masks, keys, data, begin, iterations)

    def commit(n: int, masks: PyTree, params: PyTree, curves) -> dict:
        acc = np.asarray(curves.test_acc[:, -1]).reshape(len(labels), cfg.seeds)
        log(f"memorization N={n}: train acc on random labels "
            + " ".join(f"{k} {100 * a:.2f}" for k, a in zip(labels, acc.mean(1)))
            + f"  ({time.perf_counter() - t0[n]:.0f}s)")
        return store.save_part(study.path, "memorization", key(n), {**key(n), "train_acc": acc.astype(np.float64),
                                                                    "seconds": time.perf_counter() - t0[n]})

    rows = loop.run(loop.Rounds("memorization size", lambda n: all_masks, lambda n, m: (starts, 0), fit, commit,
                                lambda n: store.load_part(study.path, "memorization", key(n))), sizes)
    acc = (np.stack([np.asarray(r["train_acc"], np.float64) for r in rows], axis=1) if rows  # (labels, sizes, seeds)
           else np.zeros((len(labels), 0, cfg.seeds)))
    return {"labels": labels, "sizes": list(sizes), "iterations": iterations,
            "train_acc": acc.mean(axis=2).tolist(), "per_seed": acc.tolist()}


def early_bird(study: Study, *, window: int = 5, threshold: float = 0.1, channel: bool = False,
               retrain: bool = True, manual_dir=None, log: Callable[[str], None] = print,
               ticket_chunk: int | None = None) -> dict:
    """You et al.'s early-bird detection on the baseline's per-epoch masks: for each seed the
    first epoch whose mask is within ``threshold`` (normalized Hamming distance) of each of the
    ``window − 1`` previous epochs' masks. Weight-level masks by default (the study's rate and
    pool); ``channel=True`` uses the batch-norm channel masks recorded with ``channel`` in
    :func:`baseline`. With ``retrain``, each seed's ticket (its weight-level mask at the found
    epoch on that epoch's weights, i.e. the grid cell s = v = the found epoch) is retrained with
    the full schedule, all seeds in one program.

    Returns ``{"epoch": [seed] (None if never), "distances": [seed][epoch][j],
    "final_test_acc": [seed] (None if not found)}``."""
    st = study.stats()
    key = "channel_bits" if channel else "bits"
    if key not in st:
        raise ConfigError("channel=True needs a baseline recorded with channel=True (batch-norm channel masks)")
    bits = st[key]  # (E+1, seeds, n)
    cfg = study.config
    found, dists = [], []
    for seed in range(cfg.seeds):
        # epoch 0 (θ0) is a mask too: the rule may compare with it, as the papers' per-epoch masks start there
        dd = early.distances_to_previous([bits[e, seed] for e in range(bits.shape[0])], window)
        found.append(early.early_bird(dd, window, threshold))
        dists.append(dd)
    out = {"window": window, "threshold": threshold, "channel": channel, "epoch": found, "distances": dists,
           "final_test_acc": [None] * cfg.seeds}
    if retrain and any(e is not None for e in found):
        out["final_test_acc"] = _early_bird_retrain(study, found, {k: out[k] for k in ("window", "threshold", "channel")},
                                                    manual_dir, ticket_chunk, log)
        log(f"early-bird: epochs {found}, retrained final test acc "
            + " ".join("n/a" if a is None else f"{100 * a:.2f}" for a in out["final_test_acc"]))
    return out


def _early_bird_retrain(study: Study, found: list, rule: dict, manual_dir, ticket_chunk, log) -> list:
    """Each seed's early-bird ticket (its mask at the found epoch on that epoch's weights) retrained
    with the full schedule, the seeds in one program, as a round of the loop kept as a part;
    returns the final test accuracy per seed (None where none was found)."""
    cfg, seeds = study.config, [i for i, e in enumerate(found) if e is not None]
    ds, model = data_and_model(study, manual_dir)
    pick = lambda tree, i: jax.tree.map(lambda a: a[i:i + 1], tree)  # noqa: E731
    starts = _stack([pick(study.params(found[i]), i) for i in seeds])
    _, data_keys = lottery.seed_keys(cfg)
    mesh, data = _placed(ds, len(seeds))
    key = {**rule, "epoch": found}

    def fit(_, starts: PyTree, mask: PyTree, begin: int):
        train = _train_program(study, model, ds, {}, ticket_chunk, mesh)
        args = (starts, mask, data_keys[np.asarray(seeds)], data)
        return _fit_part(study, "early_bird", key, train, args, begin, cfg.iterations, mesh, watch, log)

    def commit(_, mask: PyTree, params: PyTree, curves) -> dict:
        acc = [None] * cfg.seeds
        for i, a in zip(seeds, np.asarray(curves.test_acc[:, -1])):
            acc[i] = float(a)
        return _keep_part(study, "early_bird", key, {**key, "final_test_acc": acc})

    with midround.Watch() as watch:
        [row] = loop.run(loop.Rounds("early-bird ticket", lambda _: ticket_masks(study, model, starts),
                                     lambda _, m: (starts, 0), fit, commit,
                                     lambda _: store.load_part(study.path, "early_bird", key)), [0], watch=watch)
    return row["final_test_acc"]
