"""The IMP / LTR study: train → score → prune → rewind, for T tickets at once, each round a round of
the loop every ltjax study runs (:func:`ltjax.loop.run`, the parts in :func:`_imp_rounds`).

Round 0 trains the dense network from θ0 (and snapshots θk when rewinding). Round r ≥ 1
prunes the previous round's trained weights (``iterative``) or round 0's trained weights to
the r-th density (``oneshot``), then starts from:

* ``reset``:    θ0 ⊙ m, trained for ``iterations`` (Frankle & Carbin 2018);
* ``rewind``:   θk ⊙ m, trained from iteration k to ``iterations`` (LTR, Algorithm 1 of the
  layerwise-importance paper; the optimizer state restarts, the learning-rate schedule
  and data order continue at iteration k);
* ``continue``: the previous round's trained weights ⊙ m, trained for ``iterations`` again
  with a fresh optimizer (Han et al. 2015);
* ``lr_rewind``: the previous round's trained weights ⊙ m, trained from iteration k to
  ``iterations`` like ``rewind`` (Renda et al. 2020's learning-rate rewinding);
* ``finetune``: the same weights and iterations at a constant learning rate, the schedule's
  last (iteration ``iterations - 1``'s; Renda et al.'s fine-tuning).

``rewind``, ``lr_rewind`` and ``finetune`` retrain every round r ≥ 1 for the same budget,
``iterations - k`` iterations on the same batches (iterations k … ``iterations - 1`` of each
ticket's data order), with a fresh optimizer.

Beside each ticket of round r ≥ 1, ``config.controls`` networks train in the same program:
the 2018 paper's controls (``reinit``, ``shuffle``), ``reset``, and the LTH-vs-SNIP
report's comparisons ``snip`` / ``isnip`` (θ0 pruned before training to the ticket's exact
size). With ``flip_round = f`` the mask of round f is the complement of round f-1's
(LTH_flip), later rounds prune it as usual, and each round checks it shares no weight
with the flipped mask; rounds before f are copied from the run without the flip if it
exists.

All T tickets (seeds ``seed … seed+T-1``) train in one compiled, vmapped program whose
ticket axis is sharded over the devices (every host's, under :mod:`ltjax.distributed`).
Every round is saved before the next one starts; rerunning the same configuration resumes
after the last complete round and, because each round is a deterministic function of what
is on disk, ends with the same masks as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import data as D
from ltjax import masks as M
from ltjax import distributed, identity, loop, midround, models, rounds, stopping, store
from ltjax.config import Config, ConfigError
from ltjax.devices import replicate, shard_tickets, ticket_mesh, ticket_sharding
from ltjax.distributed import to_host
from ltjax.data.stream import host_data
from ltjax.progress import Progress, resolve as resolve_progress
from ltjax.train import Curves, device_data, loss_and_correct, make_trainer

PyTree = Any


def build_model(config: Config, ds: D.Dataset) -> models.Model:
    """The study's model for dataset ``ds``: the named one built for its inputs and classes (its
    module's attributes set from ``model_args``), your :class:`~ltjax.models.Model` as it is, or
    your Flax module wrapped (:func:`ltjax.models.wrap`) for the data's input shape."""
    num_outputs = 1 if ds.num_classes == 2 else ds.num_classes
    if isinstance(config.model, str):
        model = models.build(
            config.model, widths=config.widths, input_shape=ds.x_train.shape[1:],
            num_outputs=num_outputs, init=config.init, init_std=config.init_std,
        )
        return model._replace(module=model.module.clone(**dict(config.model_args))) if config.model_args else model
    if isinstance(config.model, models.Model):
        return config.model
    if isinstance(config.model, identity.ObjectRef):
        raise ConfigError(f"model={config.model!r} is the record of your own model from a saved run; pass the "
                          f"module itself (config.replace(model=...)) to train it")
    return models.wrap(config.model, input_shape=ds.x_train.shape[1:], num_outputs=num_outputs)


def seed_keys(config: Config) -> tuple[jax.Array, jax.Array]:
    """Per-seed (init key, data-order key), seeds ``config.seed … config.seed + seeds - 1``."""
    keys = jnp.stack([jax.random.PRNGKey(config.seed + i) for i in range(config.seeds)])
    both = jax.vmap(lambda k: jax.random.split(k, 2))(keys)
    return both[:, 0], both[:, 1]


def ticket_keys(config: Config) -> tuple[jax.Array, jax.Array]:
    """Per-ticket (init key, data-order key); ticket ``s·seeds + i`` uses seed ``config.seed + i``
    (with several ``scores`` or ``sweep_values``, the tickets of one seed share θ0's draws and
    the data order)."""
    init, order = seed_keys(config)
    reps = len(config.scores) * config.variants()
    return jnp.tile(init, (reps, 1)), jnp.tile(order, (reps, 1))


def preflight(config: Config, ds: D.Dataset, model: models.Model) -> None:
    """Checks that need the data and the model, done before anything is written or trained."""
    n = len(ds.x_train)
    if config.batch_size > n:
        raise ConfigError(f"batch_size={config.batch_size} is not valid: must be ≤ the {n} training examples "
                          f"left after validation_size={config.validation_size}")
    try:
        shapes = jax.eval_shape(lambda: M.make_mask(model.init(jax.random.PRNGKey(0)), model.is_prunable))
    except (ValueError, TypeError, ZeroDivisionError) as e:
        raise ConfigError(f"model={config.model!r} cannot be built for dataset={config.dataset!r} (inputs "
                          f"{model.input_shape}, {ds.num_classes} classes): {type(e).__name__}: {e}") from None
    names = M.layer_names(shapes)
    patterns = [("exclude", p) for p in config.exclude]
    if config.scope == "layerwise":
        patterns += [("layer_rates", p) for p, _ in config.layer_rates]
    for field, p in patterns:
        if not any(fnmatch.fnmatchcase(n_, p) for n_ in names):
            raise ConfigError(f"{field} names {p!r}, which matches no prunable layer of model={config.model!r}; "
                              f"its layers: {', '.join(names)}")
    if config.partial_reinit_from:
        _partial_reinit_source(config)
    if all(any(fnmatch.fnmatchcase(n_, p) for p in config.exclude) for n_ in names):
        raise ConfigError(f"exclude={','.join(config.exclude)!r} is not valid: it excludes every prunable layer "
                          f"({', '.join(names)}), so nothing would be pruned")


def round_start(config: Config, r: int, theta0: PyTree, theta_k: PyTree, prev_params: PyTree, mask: PyTree):
    """Weights and global iteration round r starts from: ``(source ⊙ mask, start_step)``, the
    source by the study's restart (:data:`ltjax.rounds.RESTARTS`) given θ0, θk and the previous
    round's trained weights (round 0: θ0 at iteration 0)."""
    ctx = rounds.Context(config, None, theta0, theta_k, None, None, None, None, None,
                         lambda q: (None, prev_params, None))
    return _apply_mask(_round_source(ctx, r), mask), rounds.start_step(config, r)


def _round_source(ctx: rounds.Context, r: int) -> PyTree:
    return ctx.theta0 if r == 0 else rounds.RESTARTS[ctx.config.strategy].source(ctx, r)


_apply_mask = jax.jit(jax.vmap(M.apply_mask))
_compare = jax.jit(jax.vmap(M.compare))


def early_stop_spec(config: Config, early_on: str) -> dict:
    """How the round's early-stop iteration is chosen: see :func:`ltjax.stopping.early_stop`."""
    return {"on": early_on, "rule": config.early_stop, "every": config.patience_every, "patience": config.patience}


def round_metrics(r: int, mask: PyTree, params: PyTree, curves: Curves, stop: dict, seconds: float,
                  diverged_before: np.ndarray) -> dict:
    """Per-ticket metrics of a round (``stop``: :func:`early_stop_spec`).

    ``diverged`` is cumulative: a ticket whose training loss or weights became NaN or
    infinite in this or an earlier round. Its mask stays frozen from then on and reports
    leave it out of means.
    """
    curves = {k: to_host(v) for k, v in curves._asdict().items()}
    curves["step"] = curves["step"][0]  # identical for every ticket
    per_ticket = {k: v for k, v in curves.items() if k != "step"}
    es = stopping.early_stop({**per_ticket, "step": curves["step"]}, **stop)
    es["convergence_iteration"] = stopping.convergence_iteration(curves["step"], curves["test_acc"])
    bad_loss = ~np.isfinite(curves["train_loss"])
    now = bad_loss.any(axis=1) | ~to_host(jax.vmap(rounds.all_finite)(params))
    first_bad = np.where(bad_loss.any(axis=1), curves["step"][np.argmax(bad_loss, axis=1)], -1)
    return {
        "round": r,
        "density": to_host(jax.vmap(M.global_density)(mask)),
        "layer_density": to_host(jax.vmap(M.density)(mask)),
        "remaining": to_host(jax.vmap(M.count)(mask)),
        "early_stop_on": stop["on"],
        "early_stop_rule": stop["rule"],
        **es,
        "diverged": np.asarray(diverged_before, bool) | now,
        "diverged_iteration": np.where(now, first_bad, -1),
        "seconds": seconds,
        "curves": curves,
    }


def make_loss(model: models.Model, mean: tuple[float, ...], std: tuple[float, ...],
              loss: Callable | None = None) -> Callable:
    """``(params, x, y, temperature=1.0) -> mean training loss`` on raw (uint8) inputs, as the
    trainer computes it (``loss``: your per-example loss, default softmax cross-entropy), on the
    logits divided by ``temperature`` (GraSP's, :mod:`ltjax.at_init`)."""
    def mean_loss(params, x, y, temperature=1.0):
        logits, _ = model.apply_train(params, D.normalize(x, mean, std))  # batch statistics, as in training
        if temperature != 1.0:
            logits = logits / temperature
        per_example, _ = loss_and_correct(logits, y, loss)
        return jnp.mean(per_example)

    return mean_loss


def _control_metrics(r, c_mask, c_params, c_curves, labels, T, stop, ticket_mask) -> dict:
    """Metrics of the control networks, grouped ``{name: {metric: array (copies, T, ...)}}``.

    ``vs_ticket`` compares each control's mask with its ticket's (:func:`ltjax.masks.compare`
    with the ticket as ``a``): per layer and total, kept, overlap and one-sided differences.
    """
    keep = ("density", "remaining", "early_stop_iteration", "stop_iteration", "train_acc_at_es", "val_acc_at_es",
            "test_acc_at_es", "final_test_acc", "convergence_iteration", "diverged")
    out: dict[str, dict[str, list]] = {}
    for b, (name, _) in enumerate(labels):
        sl = lambda t: jax.tree.map(lambda a: a[b * T:(b + 1) * T], t)  # noqa: E731
        m = round_metrics(r, sl(c_mask), sl(c_params), Curves(*sl(tuple(c_curves))), stop, 0.0, np.zeros(T, bool))
        group = out.setdefault(name, {k: [] for k in (*keep, "test_acc_curve", "vs_ticket")})
        for k in keep:
            group[k].append(m[k])
        group["vs_ticket"].append(to_host(_compare(ticket_mask, sl(c_mask))))
        group["test_acc_curve"].append(m["curves"]["test_acc"])
    stack = lambda v: jax.tree.map(lambda *xs: np.stack(xs), *v)  # noqa: E731
    return {name: {k: stack(v) for k, v in g.items()} for name, g in out.items()}


def format_round(m: dict) -> str:
    ok = ~np.asarray(m["diverged"], bool)
    ms = lambda a: f"{np.mean(a[ok]):.4f}±{np.std(a[ok]):.4f}" if ok.any() else "n/a"  # noqa: E731
    on_val = m["early_stop_on"] == "val"
    div = f"  DIVERGED {int((~ok).sum())}/{ok.size}" if not ok.all() else ""
    return (
        f"round {m['round']:2d}  density {100 * np.mean(m['density']):7.3f}%  "
        f"es-iter {np.mean(m['early_stop_iteration'][ok]) if ok.any() else float('nan'):8.0f}  "
        + (f"val-acc@es {ms(m['val_acc_at_es'])}  " if on_val else "")  # without validation, es is on test
        + f"test-acc@es {ms(m['test_acc_at_es'])}  "
        + f"final-test-acc {ms(m['final_test_acc'])}  ({m['seconds']:.0f}s){div}"
    )


def run(
    config: Config,
    out: str | Path = "runs",
    *,
    manual_dir: str | None = None,
    data_dir: str | None = None,
    progress: bool | str = True,
    repair: bool = False,
    log: Callable[[str], None] = print,
    ticket_chunk: int | None = None,
    devices_per_ticket: int | str = 1,
    stream: bool | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> store.Run:
    """Run (or resume) the study described by ``config``; returns the loaded run.

    ``devices_per_ticket=k`` splits each ticket's minibatch over k devices (a ``tickets × data``
    mesh, :func:`ltjax.devices.ticket_mesh`; the gradient and batch-norm statistics are those of
    the whole batch) and the tickets over the rest, for networks too large for one device;
    ``"auto"`` picks the fewest devices whose share fits a device's memory
    (:func:`auto_devices_per_ticket`). Like
    ``ticket_chunk`` it schedules the same computation (the same masks; weights equal to float32
    rounding), so it is not part of the configuration's hash.

    ``ticket_chunk`` trains the tickets (and controls) of a round in sequential chunks of that
    many inside the one program instead of all at once (see :func:`ltjax.train.make_trainer`):
    for studies that do not fit in device memory together, and for convolutional networks on
    XLA:CPU. It changes how the work is scheduled, not what is computed, so it is not part of
    the configuration or its hash.

    ``stream=True`` keeps the data on the host and feeds the trainer batch by batch in the
    in-memory path's order (:mod:`ltjax.data.stream`), for datasets that do not fit on the
    device; ``None`` (the default) streams exactly when the dataset is a streamed source (an
    ImageNet-scale dataset), ``False`` refuses one. It schedules the same computation (the
    same masks; weights equal to float32 rounding), so it is not part of the hash.

    ``progress``: ``True`` shows a bar on a terminal or in a notebook and a plain line at most
    every ``LTJAX_PROGRESS_SECONDS`` (60) elsewhere (a log file, a batch job); ``"bar"`` or
    ``"lines"`` force one; ``False`` reports nothing (see :mod:`ltjax.progress`).

    ``devices``: the devices of the mesh, by default ``jax.devices()``: this process's, or under
    ``jax.distributed`` (:func:`ltjax.distributed.initialize`) every process's, all running this
    study together (call ``run`` in each, with the same arguments; see ``docs/scale.md``).

    Resuming verifies every committed part of the run directory against its manifest. A
    damaged part raises :class:`~ltjax.store.CorruptRunError` naming it; with
    ``repair=True`` it is moved aside and recomputed from the last good state instead.
    """
    config.validate().require_objects()
    resolve_progress(progress)  # a bad value fails here, before any work
    if ticket_chunk is not None and (isinstance(ticket_chunk, bool) or not isinstance(ticket_chunk, int)
                                     or ticket_chunk < 1):
        raise ConfigError(f"ticket_chunk={ticket_chunk!r} is not valid: give a positive number of tickets "
                          f"per chunk, or None to train all tickets at once")
    auto = devices_per_ticket == "auto"
    if not auto:
        _check_mesh(config, devices, devices_per_ticket)
    ds = D.load(config.dataset, validation_size=config.validation_size, split_seed=config.split_seed,
                data_dir=data_dir, manual_dir=manual_dir)
    lazy = D.is_lazy(ds.x_train)
    if stream is False and lazy:
        raise ConfigError(f"dataset={config.dataset!r} is read from disk as it trains ({ds.x_train!r}); it cannot "
                          f"be put on the device whole, so stream=False is not valid: leave stream unset or True")
    stream = lazy if stream is None else bool(stream)
    model = build_model(config, ds)
    preflight(config, ds, model)
    if auto:
        devices_per_ticket = auto_devices_per_ticket(config, model, ds, devices, stream, log)
        _check_mesh(config, devices, devices_per_ticket)
    model_id = identity.model_identity(model, values="model" in config.objects())
    d = store.init_run(config, out, D.fingerprint(ds), model=model_id)
    distributed.barrier("run directory created")  # by process 0, which keeps the directory and the log
    primary = distributed.is_primary()
    log = log if primary else (lambda s: None)
    with store.RunLock(d) if primary else contextlib.nullcontext():
        if primary:
            store.clear_temporaries(d)
        _check_integrity(d, repair, log)
        if config.flip_round and primary:
            _adopt_parent_rounds(config, out, d, model_id, log)
        distributed.barrier("run directory ready")
        done = set(store.completed_rounds(d))
        todo = [r for r in range(config.rounds) if r not in done]
        if not todo:
            log(f"{d}: all {config.rounds} rounds already complete")
        else:
            verb = "resuming at" if done else "starting at"
            log(f"{d}: {verb} round {todo[0]} of {config.rounds}, {config.num_tickets()} ticket(s) in one program")
            _execute(config, d, ds, model, todo, progress, log, ticket_chunk, devices_per_ticket, stream, devices)
    return store.load_run(d)


def _check_mesh(config: Config, devices, devices_per_ticket: int) -> None:
    """The tickets × data mesh of ``devices_per_ticket`` can be built and gives every process work."""
    try:
        mesh = ticket_mesh(config.num_tickets(), devices, data=devices_per_ticket)
    except ValueError as e:
        raise ConfigError(f"devices_per_ticket: {e}") from None
    owners = {dev.process_index for dev in mesh.devices.flat}
    if len(owners) < jax.process_count():
        n = len(devices if devices is not None else jax.devices())
        raise ConfigError(f"{config.num_tickets()} ticket(s) with devices_per_ticket={devices_per_ticket} use "
                          f"{mesh.devices.size} of the {n} devices, on {len(owners)} of the {jax.process_count()} "
                          f"processes of this jax.distributed job, which run one study on all their devices: give "
                          f"at least {jax.device_count() // devices_per_ticket} tickets (ideally a multiple). For "
                          f"each host its own block of seeds, start each host's process without "
                          f"jax.distributed (see docs/scale.md)")
    if config.batch_size % devices_per_ticket:
        raise ConfigError(f"devices_per_ticket={devices_per_ticket} must divide batch_size={config.batch_size}: "
                          f"each device of a ticket gets an equal part of its minibatch")


def auto_devices_per_ticket(config: Config, model: models.Model, ds: D.Dataset, devices=None, stream: bool = False,
                            log: Callable[[str], None] = print) -> int:
    """``devices_per_ticket="auto"``: the fewest devices per ticket whose share of the minibatch
    fits a device (:func:`ltjax.memory.choose_devices_per_ticket`, from XLA's memory analysis of
    the training step; the in-memory dataset counted on every device), 1 on a CPU."""
    from ltjax.memory import choose_devices_per_ticket

    n = len(devices if devices is not None else jax.devices())
    data_bytes = 0 if stream else sum(np.asarray(a).nbytes for a in (ds.x_train, ds.x_val, ds.x_test))
    try:
        k = choose_devices_per_ticket(model, config.train_spec(), n, extra=data_bytes)
    except ValueError as e:
        raise ConfigError(f"devices_per_ticket=auto: {e}") from None
    log(f"devices_per_ticket=auto: {k} device(s) per ticket (of {n})")
    return k


def _adopt_parent_rounds(config: Config, out, d: Path, model_id: dict, log: Callable[[str], None]) -> None:
    """An LTH_flip run's rounds before the flip are its parent's (the same configuration
    without ``flip_round``): copy the ones the parent already has instead of retraining,
    unless the parent was trained with another model (``model_id``: the model given now)."""
    parent = store.run_dir(config.replace(flip_round=0), out)
    if not parent.is_dir():
        return
    differs = store.model_mismatch(parent, model_id)
    if differs:
        log(f"{d}: not reusing the rounds of the run without the flip, {parent.name}: it was trained with {differs}")
        return
    k = _theta_k_step(config)
    parts = ["theta0", *(["theta_k"] if k else []), *(store.round_path(d, r).name for r in range(config.flip_round))]
    copied = store.adopt(parent, d, parts)
    if copied:
        log(f"{d}: reused {', '.join(copied)} from the run without the flip, {parent.name}")


def common_mask(config: Config, masks: PyTree) -> PyTree:
    """Per ticket, the weights kept by every ticket of its seed (all of a study's scores, within
    its sweep value): the "overlapping connections" of one initialization's tickets."""
    V, S, n = config.variants(), len(config.scores), config.seeds

    def common(a):
        per = a.reshape(V, S, n, *a.shape[1:]).all(axis=1, keepdims=True)
        return jnp.broadcast_to(per, (V, S, n, *a.shape[1:])).reshape(a.shape)

    return jax.tree.map(lambda a: None if a is None else common(a), masks, is_leaf=lambda x: x is None)


def _partial_reinit_source(config: Config) -> store.Run:
    """The run ``partial_reinit_from`` names, checked to fit this study (called in preflight)."""
    try:
        src = store.load_run(config.partial_reinit_from)
    except (OSError, ValueError) as e:
        raise ConfigError(f"partial_reinit_from={config.partial_reinit_from!r} is not a readable ltjax run "
                          f"directory ({e})") from None
    layout = lambda c: (c.seeds, list(c.scores), c.sweep, list(c.sweep_values))  # noqa: E731
    if layout(src.config) != layout(config):
        raise ConfigError(f"partial_reinit_from={config.partial_reinit_from!r} has (seeds, scores, sweep, sweep_values)"
                          f" = {layout(src.config)}; this study needs the same tickets: {layout(config)}")
    if config.partial_reinit_round >= len(src.rounds):
        raise ConfigError(f"partial_reinit_round={config.partial_reinit_round} is not valid: {src.path} has "
                          f"completed rounds 0..{len(src.rounds) - 1}")
    return src


def partial_reinit_theta0(config: Config, model: models.Model, init_keys: jax.Array) -> PyTree:
    """θ0 of a partial reinitialization test (layerwise-importance paper, sec. 4): the source
    run's θ0 on the weights all tickets of a seed kept in round ``partial_reinit_round``, a
    fresh draw from the same initializer everywhere else (unprunable leaves too, which
    keeps biases and batch-norm parameters at their initial constants)."""
    src = _partial_reinit_source(config)
    r = config.partial_reinit_round
    keep = common_mask(config, jax.tree.map(jnp.asarray, src.rounds[r].mask))
    fresh = models.run_init(jax.vmap(model.init), jax.vmap(lambda k: jax.random.fold_in(k, 0x9E37))(init_keys))
    old = jax.tree.map(jnp.asarray, src.theta0)
    return jax.tree.map(lambda m, a, b: b if m is None else jnp.where(m, a, b), keep, old, fresh,
                        is_leaf=lambda x: x is None)


def _check_integrity(d: Path, repair: bool, log: Callable[[str], None]) -> None:
    problems = store.Run(d).verify()
    if not problems:
        return
    listing = "; ".join(f"{part}: {', '.join(p)}" for part, p in problems.items())
    if not repair:
        raise store.CorruptRunError(
            f"{d} has damaged parts — {listing}. Rerun with --repair (repair=True) to move them aside "
            "and recompute them from the last good round; nothing else is changed."
        )
    for part in problems if distributed.is_primary() else ():
        path = d / (part if part.startswith("theta") else f"round_{int(part.split()[1]):03d}")
        log(f"{d}: {part} is damaged; moved to {store.move_aside(path).name}, recomputing it")


class _Study(NamedTuple):
    """What every round of one call of :func:`_execute` shares."""

    ctx: rounds.Context
    trainer: Callable
    bar: Progress
    mesh: Any
    stop: dict
    passes: Callable[[int], int]  # training passes of n tickets (chunks)
    hyper: dict | None  # per-ticket lr / weight_decay of a sweep (see Config.sweep), else None
    d: Path  # the run directory
    watch: midround.Watch | None = None  # SIGTERM seen: stop where the state is saved
    log: Callable[[str], None] = print


def _setup(config: Config, d: Path, ds: D.Dataset, model: models.Model, progress, ticket_chunk, states,
           devices_per_ticket: int = 1, stream: bool = False, devices=None) -> _Study:
    """θ0 (made and saved, or loaded), θk if on disk, the data on the device and the trainer."""
    mesh = ticket_mesh(config.num_tickets(), devices, data=devices_per_ticket)
    data = host_data(ds) if stream else replicate(device_data(ds), mesh)
    init_keys, data_keys = shard_tickets(ticket_keys(config), mesh)
    on_mesh = lambda shape: ticket_sharding(shape, mesh)  # noqa: E731  (restored as shard_tickets puts them)
    if (d / "theta0").exists():
        theta0 = store.load_once(d / "theta0", on_mesh)
    else:
        theta0 = init_theta0(config, model, init_keys)
        if config.partial_reinit_from:
            theta0 = partial_reinit_theta0(config, model, init_keys)
        theta0 = shard_tickets(theta0, mesh)
        store.save_once(d / "theta0", theta0)
    dense = jax.jit(jax.vmap(lambda p: M.make_mask(p, model.is_prunable)))(theta0)
    theta_k = theta0 if _theta_k_step(config) == 0 else (
        store.load_once(d / "theta_k", on_mesh) if (d / "theta_k").exists() else None)

    def state(r: int):
        """(mask, trained params, cumulative diverged flags) of round r, from memory or disk."""
        if r not in states:
            st = store.load_round_state(d, r, on_mesh)
            diverged = store.Round(store.round_path(d, r)).metrics["diverged"]
            states[r] = (st["mask"], st["params"], diverged)
        return states[r]

    loss_fn = make_loss(model, ds.mean, ds.std, config.train_spec().loss)
    ctx = rounds.Context(config, model, theta0, theta_k, dense, init_keys, data_keys, data, loss_fn, state)
    bar = Progress(progress)
    # No bar, no host callback: a program without one can be kept in JAX's persistent
    # compilation cache (the callback changes nothing it computes)
    trainer = make_trainer(model, config.train_spec(), ds.mean, ds.std, progress=bar if bar.enabled else None,
                           ticket_chunk=ticket_chunk, mesh=mesh)
    passes = lambda n: -(-n // ticket_chunk) if ticket_chunk else 1  # noqa: E731
    hyper = ({config.sweep: shard_tickets(jnp.asarray(config.ticket_sweep(), jnp.float32), mesh)}
             if config.sweep in ("lr", "weight_decay") else None)
    return _Study(ctx, trainer, bar, mesh, early_stop_spec(config, "val" if len(ds.x_val) else "test"), passes, hyper, d)


def init_theta0(config: Config, model: models.Model, init_keys: jax.Array) -> PyTree:
    """θ0 of every ticket: ``model.init`` of its key, or with ``sweep=init_std`` the same unit
    draws scaled to the ticket's std (:func:`ltjax.models.init_with_std`), all in one program."""
    if config.sweep != "init_std":
        return models.run_init(jax.vmap(model.init), init_keys)
    stds = jnp.asarray(config.ticket_sweep(), jnp.float32)
    return models.run_init(jax.vmap(lambda k, s: models.init_with_std(model, k, s)), init_keys, stds)


def _theta_k_step(config: Config) -> int:
    """k of θk when the restart rewinds to it (else 0: θk is θ0)."""
    return config.rewind_iteration if rounds.RESTARTS[config.strategy].rewinds else 0


def _theta_k(st: _Study) -> tuple[_Study, Curves | None]:
    """``st`` with θk in its context, trained (with its curves) and saved on first need: only when
    rewinding to k > 0 and θk is not on disk yet."""
    ctx, k = st.ctx, _theta_k_step(st.ctx.config)
    if ctx.theta_k is not None:
        return st, None
    st.bar.start(f"theta_k (iteration {k})", k, passes=st.passes(ctx.config.num_tickets()))
    theta_k, c_k = _fit(st, 0, ctx.theta0, ctx.dense, ctx.data_keys, 0, k, st.hyper, None)
    st.bar.close()
    store.save_once(st.d / "theta_k", theta_k)
    return st._replace(ctx=ctx._replace(theta_k=theta_k)), c_k


def _train_round(st: _Study, r: int, source: PyTree, mask: PyTree, begin: int, c_k: Curves | None):
    """Train round r's tickets from ``source ⊙ mask`` at iteration ``begin``, and its controls in the
    same program: ``(params, curves, control metrics or None)``. Round 0 of a study rewinding to
    k > 0 continues from θk, its curves from iteration 0 (``c_k``: θk's, retrained when θk was on disk)."""
    ctx, T, k, iters = st.ctx, st.ctx.config.num_tickets(), _theta_k_step(st.ctx.config), st.ctx.config.iterations
    if r == 0 and k > 0:
        if c_k is None:
            _, c_k = _fit(st, 0, ctx.theta0, ctx.dense, ctx.data_keys, 0, k, st.hyper, None)
        st.bar.start("round 0", iters - k, passes=st.passes(T))
        params, c2 = _fit(st, 0, ctx.theta_k, mask, ctx.data_keys, k, iters - k, st.hyper, None)
        return params, jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=1), c_k, c2), None
    start = _apply_mask(source, mask)
    p_in, m_in, k_in, h_in, labels = start, mask, ctx.data_keys, st.hyper, []
    if r > 0 and ctx.config.controls:  # controls train in the tickets' program, on their data order
        c_start, c_mask, labels = rounds.control_starts(ctx, r, start, mask, source)
        p_in, m_in = rounds.concat(start, c_start), rounds.concat(mask, c_mask)
        k_in = jnp.concatenate([ctx.data_keys] * (len(labels) + 1))
        h_in = None if st.hyper is None else {n: jnp.concatenate([v] * (len(labels) + 1)) for n, v in st.hyper.items()}
    st.bar.start(f"round {r}", iters - begin, passes=st.passes(len(k_in)))
    params, curves = _fit(st, r, *(shard_tickets(a, st.mesh) for a in (p_in, m_in, k_in)), begin, iters - begin,
                          None if h_in is None else shard_tickets(h_in, st.mesh), rounds.held_lr_step(ctx.config, r))
    if not labels:
        return params, curves, None
    head, tail = (lambda t: jax.tree.map(lambda a: a[:T], t)), (lambda t: jax.tree.map(lambda a: a[T:], t))
    c_metrics = _control_metrics(r, tail(m_in), tail(params), tail(curves), labels, T, st.stop, mask)
    return head(params), head(curves), c_metrics


def _fit(st: _Study, r: int, params, mask, keys, begin: int, n: int, hyper, hold_lr) -> tuple[PyTree, Curves]:
    """Round r's training of ``n`` iterations from ``begin``: one trainer call, or with
    ``checkpoint_every`` segments with a resumable state saved after each (:mod:`ltjax.midround`)."""
    every, data = st.ctx.config.checkpoint_every, st.ctx.data
    if not every or every >= n:
        return st.trainer(params, mask, keys, data, begin, n, hyper=hyper, hold_lr=hold_lr)
    passes = st.passes(keys.shape[0])

    def bar_at(done: int) -> None:  # a resumed round's bar starts where its checkpoint is
        st.bar.close()
        st.bar.start(f"round {r}", n, offset=done * passes, passes=passes)

    return midround.train(st.trainer, params, mask, keys, data, begin, n, every=every, d=st.d, round_=r,
                          watch=st.watch, hyper=hyper, hold_lr=hold_lr, place=lambda t: shard_tickets(t, st.mesh),
                          bar_at=bar_at, log=st.log)


def _execute(config: Config, d: Path, ds: D.Dataset, model: models.Model, todo: list[int],
             progress: bool | str, log: Callable[[str], None], ticket_chunk: int | None = None,
             devices_per_ticket: int = 1, stream: bool = False, devices=None) -> None:
    """The rounds of ``todo`` on the round loop (:func:`ltjax.loop.run`, parts :func:`_imp_rounds`); on
    SIGTERM it stops where the state is saved (:class:`ltjax.midround.Preempted`), after the round or mid-round."""
    states: dict[int, tuple[PyTree, PyTree, np.ndarray]] = {}
    with midround.Watch() as watch:
        st = _setup(config, d, ds, model, progress, ticket_chunk, states, devices_per_ticket, stream, devices)
        loop.run(_imp_rounds(st._replace(watch=watch, log=log), states), todo, watch=watch)


def _imp_rounds(st: _Study, states: dict) -> loop.Rounds:
    """IMP / LTR as the round loop's parts: round r's mask (:func:`ltjax.rounds.round_mask`), its
    restart (:data:`ltjax.rounds.RESTARTS`; θk trained on first need), its training with the
    controls beside the tickets (:func:`_train_round`), and its commit: metrics, then an atomic
    :func:`ltjax.store.save_round`. ``states`` keeps the finished rounds the next ones read."""
    config, flip = st.ctx.config, st.ctx.config.flip_round
    now: dict[str, Any] = {"st": st}  # the study (with θk once trained), the round's clock, θk's curves

    def frozen(r: int) -> np.ndarray:  # tickets that diverged before round r keep their mask
        return np.zeros(config.num_tickets(), bool) if r == 0 else now["st"].ctx.state(r - 1)[2]

    def mask(r: int) -> PyTree:
        now["t0"] = time.perf_counter()
        return shard_tickets(rounds.round_mask(now["st"].ctx, r, frozen(r)), now["st"].mesh)

    def start(r: int, mask: PyTree) -> tuple[PyTree, int]:
        now["st"], now["c_k"] = _theta_k(now["st"])
        return (now["st"].ctx.theta0, 0) if r == 0 else (_round_source(now["st"].ctx, r), rounds.start_step(config, r))

    def fit(r: int, source: PyTree, mask: PyTree, begin: int):
        params, curves, c_metrics = _train_round(now["st"], r, source, mask, begin, now.pop("c_k"))
        jax.block_until_ready(params)
        now["st"].bar.close()
        return params, (curves, c_metrics)

    def commit(r: int, mask: PyTree, params: PyTree, record) -> dict:
        (curves, c_metrics), st_ = record, now["st"]
        metrics = round_metrics(r, mask, params, curves, st_.stop, time.perf_counter() - now["t0"], frozen(r))
        if len(config.scores) > 1:
            metrics["ticket_score"] = config.ticket_scores()
        if config.sweep:
            metrics["ticket_" + config.sweep] = config.ticket_sweep()
        if c_metrics is not None:
            metrics["controls"] = c_metrics
        if flip and r >= flip:
            metrics["shared_with_flipped"] = _check_flip(mask, st_.ctx.state(flip - 1)[0], r, flip)
        store.save_round(st_.d, r, mask, params, metrics)
        midround.discard(st_.d)
        st_.log(format_round(metrics))
        states[r] = (mask, params, metrics["diverged"])
        # Only round r (next round's input), round 0 (one-shot's source) and the flipped
        # mask's round (LTH_flip's disjointness check) are needed again.
        for old in [q for q in states if q not in (0, r, flip - 1)]:
            del states[old]
        return metrics

    return loop.Rounds("round", mask, start, fit, commit)


def _check_flip(mask: PyTree, flipped: PyTree, r: int, flip: int) -> np.ndarray:
    """LTH_flip: every mask from the flip on stays disjoint from the mask that was flipped."""
    shared = to_host(jax.vmap(lambda a, b: M.overlap(a, b)["total"])(mask, flipped))
    if shared.any():
        raise RuntimeError(f"LTH_flip invariant broken in round {r}: tickets share {shared.tolist()} "
                           f"weights with the round-{flip - 1} mask they were flipped from")
    return shared
