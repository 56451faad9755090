"""The round loop every ltjax study runs: for each round not yet committed, its mask, the weights
it starts from, their training, and an atomic commit.

A study is a :class:`Rounds`: four parts, each a function of the round's label ``r`` (a round
number, a prune epoch, a learning rate, a unit width: whatever the study's rounds are indexed by):

* ``mask(r)``: round r's masks (a stack, leading ticket axis), read from what earlier rounds
  left (the study keeps that state, on disk or in memory);
* ``start(r, mask) -> (source, begin)``: the unmasked weights round r starts from and the global
  iteration it starts at (the schedule and the data order continue from there);
* ``fit(r, source, mask, begin) -> (params, record)``: the training, every ticket of the round
  in one program; ``record`` is what the commit keeps beside the weights (curves, metrics);
* ``commit(r, mask, params, record) -> result``: saves the round atomically; once it returns,
  the round is done;

and ``done(r)``, a committed round's result or ``None``. :func:`run` is the loop. It runs:

* :func:`ltjax.lottery.run`'s IMP / LTR rounds (each round a ``round_NNN/`` directory of the
  run), with the restart, mask policy, scores and controls of :mod:`ltjax.rounds` inside its
  parts;
* the early-ticket experiments of :mod:`ltjax.early_study` (a grid row per prune epoch, a PPR
  learning rate, a gradual-pruning window, a memorization size: each committed as a store part,
  :func:`ltjax.store.save_part`, on the baseline's run directory);
* the XOR unit-pruning protocols of :mod:`ltjax.xor` (a round per width reached; the study
  commits the protocol's result as one store part).

So every study resumes the same way: a round is done exactly when its commit is, a study run
again skips the rounds it finds done and recomputes only the others, and under a
:class:`ltjax.midround.Watch` a SIGTERM stops it after the round in progress is committed
(:class:`ltjax.midround.Preempted`). ``$LTJAX_FAULT`` can kill the process at
``<name><r>.start`` and ``<name><r>.trained`` (:func:`ltjax.store.fault_point`), as the
interruption tests do.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable, NamedTuple

from ltjax import store
from ltjax.midround import Preempted, Watch

PyTree = Any


class Rounds(NamedTuple):
    """A study's rounds as :func:`run` runs them (see the module docstring); ``name`` labels its
    rounds in fault points, logs and the preemption message ("round", "grid row", "width")."""

    name: str
    mask: Callable[[Hashable], PyTree]
    start: Callable[[Hashable, PyTree], tuple[PyTree, int]]
    fit: Callable[[Hashable, PyTree, PyTree, int], tuple[PyTree, Any]]
    commit: Callable[[Hashable, PyTree, PyTree, Any], Any]
    done: Callable[[Hashable], Any] = lambda r: None


def run(study: Rounds, rounds: Iterable[Hashable], *, watch: Watch | None = None) -> list:
    """Run ``study``'s ``rounds`` in order, each one not done: mask, start, fit, commit. Returns
    every round's result (:attr:`Rounds.commit`'s, or :attr:`Rounds.done`'s when it was kept).

    A SIGTERM seen during a round (by ``watch``, or by a :class:`ltjax.midround.Watch` of its own
    while the loop runs) stops the loop once that round is committed, raising
    :class:`ltjax.midround.Preempted`; running the study again continues after it."""
    if watch is None:
        with Watch() as own:
            return run(study, rounds, watch=own)
    results = []
    for r in rounds:
        kept = study.done(r)
        if kept is not None:
            results.append(kept)
            continue
        tag = study.name.replace(" ", "_") + str(r)
        store.fault_point(f"{tag}.start")
        mask = study.mask(r)
        source, begin = study.start(r, mask)
        params, record = study.fit(r, source, mask, begin)
        store.fault_point(f"{tag}.trained")
        results.append(study.commit(r, mask, params, record))
        if watch.requested:
            raise Preempted(f"stopped on SIGTERM after {study.name} {r} was saved; run the same command again to "
                            f"continue after it")
    return results
