"""Mid-round checkpoints: a round trained in segments of ``checkpoint_every`` iterations, the
training state saved after each, so a killed or preempted run loses at most one segment.

A segment is one call of the trainer's ``stateful`` form, which takes the optimizer state back
and continues exactly where the last call stopped (the data order is indexed by the global
iteration, so no data-loader state exists). After each segment but the last, the state every
ticket needs to continue (params, optimizer state, the curves so far, the iteration reached) is
written with :func:`ltjax.store.save_latest` as ``<run>/partial`` (only the newest is kept: the
previous one is replaced atomically), on a background thread while the next segment trains; the
round's own commit removes it. A run resumed in the middle of a round starts from it, and since
an uninterrupted run with the same ``checkpoint_every`` trains the very same segment programs,
the resumed run ends bitwise where the uninterrupted one ends.

Under :class:`Watch` (``lottery.run`` holds one), ``SIGTERM`` (a preemption notice) stops the run
at the end of the segment being trained, once its state is saved, or after the round being
committed, by raising :class:`Preempted`; running the same command again resumes there.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import distributed, store
from ltjax.train import Curves

PyTree = Any
PARTIAL = "partial"


class Preempted(RuntimeError):
    """The run stopped on SIGTERM after saving its mid-round state; run it again to resume."""


class Watch:
    """While active (in the main thread only: elsewhere it never triggers), SIGTERM sets
    ``requested`` instead of ending the process, so the run can stop where its state is saved."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self) -> "Watch":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._on_term)
        return self

    def _on_term(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


class _Writer:
    """Saves one resume point at a time on a background thread; ``stall_s`` is the training time
    it cost (copying the state to the host and waiting for the previous write)."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.stall_s = 0.0

    def save(self, path: Path, tree: PyTree, fault: str = "") -> None:
        jax.block_until_ready(tree)  # the segment's own compute is not a stall
        t = time.perf_counter()
        self.join()
        host = distributed.to_host(tree)  # the copy training must wait for; the files are written beside it

        def write():
            try:
                store.save_latest(path, host)
                store.fault_point(fault)  # a test's kill lands here: after the save, mid-training
            except BaseException as e:  # re-raised on the training thread at the next join
                self._error = e

        if distributed.spans_processes():  # the processes save together: keep their steps in one order
            write()
        else:
            self._thread = threading.Thread(target=write, name="ltjax-midround-save", daemon=True)
            self._thread.start()
        self.stall_s += time.perf_counter() - t

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            e, self._error = self._error, None
            raise e


def _resume_point(path: Path, tag: dict, template: Callable[[], Any],
                  log, what: str) -> tuple[int, PyTree, PyTree, list[Curves]]:
    """``(iterations done, params, opt_state, curves)`` saved for this round (``tag``), or a start
    from scratch when nothing, another round's state or a damaged one (moved aside) is there.
    ``template()`` gives the trees' structure (traced only when a saved state is read)."""
    store.recover_latest(path)
    if not path.exists():
        return 0, None, None, []
    try:
        saved = store.load_once(path)
    except store.CorruptRunError as e:
        log(f"{e}; moved it to {store.move_aside(path).name} and training {what} from its start")
        return 0, None, None, []
    if {k: int(saved[k]) for k in tag} != tag:  # another round's (killed after its commit): stale
        return 0, None, None, []
    curves = Curves(**{k: jnp.asarray(v) for k, v in saved["curves"].items()})
    out = template()
    params, opt_state = (jax.tree.map(jnp.asarray, store.unflat_leaves(saved[k], getattr(out, k)))
                         for k in ("params", "opt_state"))
    return int(saved["done"]), params, opt_state, [curves]


def train(trainer: Callable, params: PyTree, mask: PyTree, keys: jax.Array, data, begin: int, n: int, *,
          every: int, d: Path, round_: int, watch: Watch | None = None, hyper=None, hold_lr: int | None = None,
          bar_at: Callable[[int], None] = lambda done: None, log: Callable[[str], None] = lambda s: None,
          place: Callable[[PyTree], PyTree] = lambda t: t,
          after_segment: Callable[[int, PyTree, Curves], None] | None = None, label: str = "") -> tuple[PyTree, Curves]:
    """Train ``n`` iterations from iteration ``begin`` in segments of ``every`` (the last may be
    shorter), saving the state after each, and resuming from ``d/partial`` when it holds this
    round's; returns ``(params, curves)`` as one call of ``trainer`` would. ``bar_at(done)``
    moves a progress display to a resumed round's iteration; ``place`` puts restored arrays on the mesh;
    ``label`` names what trains in messages (default "round <round_>").

    ``after_segment(done, params, curves)``, if given, is called after each segment (``done``:
    iterations trained so far, ``curves``: the segment's own) for a record of its own (the
    early-ticket baseline's per-epoch snapshots), once the previous state is written and before
    this segment's is: a resume never starts past a segment whose record is missing, and a kill
    between the two trains that segment again, so ``after_segment`` must skip a record it finds."""
    path, tag = d / PARTIAL, {"round": round_, "begin": begin}
    run = lambda p, steps, at, opt: trainer.stateful(  # noqa: E731
        p, mask, keys, data, begin + at, steps, opt_state=opt, origin=None if opt is None else begin, hyper=hyper,
        hold_lr=hold_lr)
    template = lambda: jax.eval_shape(lambda: run(params, min(every, n), 0, None))  # noqa: E731
    what = label or f"round {round_}"
    done, p, opt, curves = _resume_point(path, tag, template, log, what)
    if done:
        log(f"{what}: resuming at iteration {begin + done} from its mid-round checkpoint")
        params, opt = place(p), place(opt)
        bar_at(done)
    writer = _Writer()
    while done < n:
        steps = min(every, n - done)
        out = run(params, steps, done, opt)
        params, opt, done = out.params, out.opt_state, done + steps
        curves.append(out.curves)
        if after_segment is not None:
            writer.join()  # one orbax write at a time
            after_segment(done, params, out.curves)
        if done < n:
            so_far = jax.tree.map(lambda *a: jnp.concatenate(a, axis=1), *curves)
            curves = [so_far]
            writer.save(path, {**tag, "done": np.int64(done), "params": store.flat_leaves(params),
                               "opt_state": store.flat_leaves(opt),
                               "curves": so_far._asdict()}, fault=f"round{round_}.at{begin + done}")
            if watch is not None and watch.requested:
                writer.join()
                raise Preempted(f"stopped on SIGTERM at iteration {begin + done} of {what}, with the "
                                f"state saved in {path}; run the same command again to resume there")
    writer.join()
    if writer.stall_s:
        log(f"{what}: mid-round checkpoints stalled training {writer.stall_s:.2f} s in all")
    return params, jax.tree.map(lambda *a: jnp.concatenate(a, axis=1), *curves)


def discard(d: Path) -> None:
    """Remove the mid-round state once its round is committed."""
    for p in (d / PARTIAL, d / (PARTIAL + ".new")) if distributed.is_primary() else ():
        shutil.rmtree(p, ignore_errors=True)
