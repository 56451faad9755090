"""Tables of runs: one run's rounds, the runs under a folder, runs side by side.

Values are mean ± std over a run's tickets (seeds) that have not diverged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ltjax import store
from ltjax.store import Run

MISSING = "—"


def _ms(a, ok, scale=1.0, digits=2) -> str:
    a = np.asarray(a, np.float64)[ok] * scale
    return f"{a.mean():.{digits}f} ± {a.std():.{digits}f}" if a.size else "diverged"


def ticket_groups(c) -> list[tuple[str | None, np.ndarray]]:
    """``(label, which tickets)`` of a study's kinds of ticket: one per score and sweep value
    (``"score l1, lr=0.1"``), or a single ``(None, all)`` when all tickets are alike."""
    keys = list(zip(c.ticket_scores(), c.ticket_sweep() or [None] * c.num_tickets()))
    kinds = list(dict.fromkeys(keys))
    if len(kinds) == 1:
        return [(None, np.ones(c.num_tickets(), bool))]

    def label(score, value):
        parts = [f"score {score}"] if len(c.scores) > 1 else []
        return ", ".join(parts + ([f"{c.sweep}={value:g}"] if value is not None else []))

    return [(label(*k), np.asarray([t == k for t in keys])) for k in kinds]


def round_table(run: Run) -> str:
    """One line per completed round.

    Columns: density (% of prunable weights remaining, global and per layer), early-stop
    iteration (minimum validation loss; test loss when the run has no validation set),
    validation and test accuracy (%) at that iteration, and test accuracy (%) at the last
    iteration. Values are mean ± std over the run's tickets that have not diverged; a
    ``diverged`` column counts the others (NaN or infinite loss or weights).
    """
    if not run.rounds:
        return f"{run.path}: no completed rounds yet"
    first = run.rounds[0].metrics
    layers = list(first["layer_density"])
    on = first["early_stop_on"]
    any_diverged = any(np.any(rd.metrics["diverged"]) for rd in run.rounds)
    es = early_stop_name(run, "early-stop iter")
    head = ["round", "density %", *[f"{l} %" for l in layers], es,
            "val acc @es %", "test acc @es %", "final test acc %", *(["diverged"] if any_diverged else [])]
    c = run.config
    title = (f"{run.path}\n{c.name}: {c.seeds} seed(s) from {c.seed}, {c.strategy}"
             f"{f' to iteration {c.rewind_iteration}' if c.strategy == 'rewind' else ''}, {c.mode} {c.scope} "
             f"pruning, {c.iterations} iterations per round; mean ± std over seeds")
    out = [title]
    for name, sel in ticket_groups(c):
        if name is not None:
            out.append(f"\n{name} ({int(sel.sum())} tickets):")
        out += _align(head, _rows(run, layers, on, any_diverged, sel))
    if c.controls:
        out += ["", "controls (same mask density, trained in the same program): "
                    "test acc @es % and early-stop iteration, mean ± std over seeds × copies", *_controls_rows(run)]
    return "\n".join(out)


def early_stop_name(run: Run, name: str = "early-stop iteration") -> str:
    """``name`` with the rule that chose the run's early-stop iteration: ``(val loss)``, ..."""
    first = run.rounds[0].metrics
    on, rule = first["early_stop_on"], first.get("early_stop_rule", "min_loss")  # older runs: min_loss
    return f"{name} ({on} loss)" if rule == "min_loss" else f"{name} ({on} acc, patience)"


def _ok(m: dict, sel: np.ndarray | None = None) -> np.ndarray:
    ok = ~np.asarray(m["diverged"], bool)
    return ok if sel is None else ok & sel


def _density(a, ok: np.ndarray, sel: np.ndarray | None) -> float:
    """% remaining, mean over the tickets that did not diverge (over all of ``sel`` if none)."""
    a = np.asarray(a, np.float64)
    if not ok.any():
        ok = np.ones(a.shape, bool) if sel is None else sel
    return 100 * float(np.mean(a[ok]))


def densities(run: Run, sel: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Density of each round (% of prunable weights remaining): of the whole network, and of
    each prunable layer, shapes ``[len(run.rounds)]``.

    Mean over the tickets (of the boolean ``sel``, default all) that have not diverged, over
    all of them in a round where every one has. Read from ``metrics["density"]`` and
    ``metrics["layer_density"]``, which the round loop computes from the round's mask (the
    fraction of True in each prunable kernel), so no checkpoint is loaded.
    """
    ms = [rd.metrics for rd in run.rounds]
    layers = list(ms[0]["layer_density"]) if ms else []
    total = np.array([_density(m["density"], _ok(m, sel), sel) for m in ms])
    return total, {l: np.array([_density(m["layer_density"][l], _ok(m, sel), sel) for m in ms]) for l in layers}


def by_round(run: Run, key: str, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of ``metrics[key] * scale`` of each round over the tickets that have not
    diverged (NaN in a round where all have), shapes ``[len(run.rounds)]``."""
    stats = []
    for rd in run.rounds:
        a = np.asarray(rd.metrics[key], np.float64)[_ok(rd.metrics)] * scale
        stats.append((a.mean(), a.std()) if a.size else (np.nan, np.nan))
    mean, std = np.array(stats).reshape(-1, 2).T
    return mean, std


def _rows(run: Run, layers: list[str], on: str, any_diverged: bool, sel: np.ndarray) -> list[list[str]]:
    total, per_layer = densities(run, sel)
    rows = []
    for i, rd in enumerate(run.rounds):
        m = rd.metrics
        ok = _ok(m, sel)
        rows.append([
            str(rd.index),
            f"{total[i]:.2f}",
            *[f"{per_layer[l][i]:.2f}" for l in layers],
            _ms(m["early_stop_iteration"], ok, digits=0),
            _ms(m["val_acc_at_es"], ok, 100) if on == "val" else "n/a",
            _ms(m["test_acc_at_es"], ok, 100),
            _ms(m["final_test_acc"], ok, 100),
            *([f"{int((~ok & sel).sum())}/{int(sel.sum())}"] if any_diverged else []),
        ])
    return rows


def _align(head: list[str], rows: list[list[str]], left: Sequence[int] = (),
           groups: Sequence[tuple[str, int]] = ()) -> list[str]:
    """Columns padded to their widest cell, right-aligned but the columns in ``left``.

    ``groups``: ``(label, number of columns)`` from the first column on, for a line above the
    header with each label over its columns (widened to fit it).
    """
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    start = 0
    for label, n in groups:
        short = max(0, len(label) - sum(widths[start:start + n]) - 2 * (n - 1))
        for i in range(n):  # spread over the group's columns, the rest to its last
            widths[start + i] += short // n + (i == n - 1) * (short % n)
        start += n
    lines = ["  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
             for cells in [head, *rows]]
    if groups:
        spans, start = [], 0
        for label, n in groups:
            spans.append(label.rjust(sum(widths[start:start + n]) + 2 * (n - 1)))
            start += n
        lines.insert(0, "  ".join(spans).rstrip())
    return lines


def _controls_rows(run: Run) -> list[str]:
    names = [n.partition(":")[0] for n in run.config.controls]
    head = ["round", "density %", "ticket acc", "ticket es-iter",
            *[x for n in names for x in (f"{n} acc", f"{n} es-iter")]]
    rows = []
    for rd in run.rounds[1:]:
        m = rd.metrics
        ok = _ok(m)
        row = [str(rd.index), f"{100 * np.mean(m['density']):.2f}", _ms(m["test_acc_at_es"], ok, 100),
               _ms(m["early_stop_iteration"], ok, digits=0)]
        for n in names:
            cm = m["controls"][n]
            cok = ~np.asarray(cm["diverged"], bool)
            row += [_ms(cm["test_acc_at_es"], cok, 100), _ms(cm["early_stop_iteration"], cok, digits=0)]
        rows.append(row)
    return _align(head, rows) if rows else ["(no pruned rounds yet)"]


def run_status(run: Run) -> str:
    """``complete`` (all ``config.rounds`` done), ``incomplete`` (fewer, and no process holds the
    run), ``running (pid N on HOST)`` (a live process holds its :class:`~ltjax.store.RunLock`),
    or ``damaged (round 2, ...)`` (committed parts that fail :meth:`~ltjax.store.Run.verify`).

    ``config.json`` keeps the rounds of the first ``ltjax run`` of the directory: a later run
    with more rounds extends it without changing that number.
    """
    damaged = run.verify()
    if damaged:
        return f"damaged ({', '.join(damaged)})"
    holder = store.lock_holder(run.path)
    if holder is not None:
        return f"running ({holder.partition(' since ')[0]})"
    return "complete" if len(run.rounds) >= run.config.rounds else "incomplete"


def _summary_row(d: Path) -> list[str]:
    try:
        run = Run(d)
    except (OSError, ValueError) as e:  # config.json unreadable or no longer a valid configuration
        return [d.name, MISSING, MISSING, MISSING, MISSING, MISSING,
                f"damaged (config.json cannot be read: {type(e).__name__})"]
    c, status = run.config, run_status(run)
    cells = [MISSING, MISSING]
    if run.rounds:
        try:
            m = run.rounds[-1].metrics
        except store.CorruptRunError:
            pass
        else:
            ok = _ok(m)
            cells = [f"{_density(m['density'], ok, None):.2f}",
                     f"{100 * np.mean(m['test_acc_at_es'][ok]):.2f}" if ok.any() else "diverged"]
    return [d.name, c.name, c.hash(), f"{len(run.rounds)}/{c.rounds}", *cells, status]


def runs_table(parent: str | os.PathLike = "runs") -> str:
    """One line per run directory directly under ``parent`` (see :func:`ltjax.store.find_runs`).

    Columns: the directory, the configuration's name (its preset) and hash, rounds done of
    rounds configured, density (% of prunable weights remaining) and test accuracy (%) at the
    early-stop iteration of the last completed round (means over the tickets that have not
    diverged), and :func:`run_status`. Loads no checkpoint, but hashes every committed file
    to check it. Raises ``FileNotFoundError`` if ``parent`` is not a directory.
    """
    p = Path(parent)
    if not p.is_dir():
        kind = NotADirectoryError if p.exists() else FileNotFoundError
        raise kind(f"{p} is not a directory: give the folder `ltjax run --out` wrote to (default ./runs)")
    found = store.find_runs(p)
    if not found:
        return f"no ltjax runs under {p}"
    head = ["run", "config", "hash", "rounds", "density %", "test acc @es %", "status"]
    return "\n".join([f"{p}: {len(found)} run(s); density and test accuracy of the last completed round, "
                      f"mean over tickets", *_align(head, [_summary_row(d) for d in found], left=(0, 1, 2, 6))])


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Names for runs shown together: their directory names, or paths where names repeat."""
    names = [r.path.name for r in runs]
    return names if len(set(names)) == len(names) else [str(r.path) for r in runs]


def compare_table(runs: Sequence[Run]) -> str:
    """Runs side by side, one line per round index: for each run the density (% of prunable
    weights remaining) and the test accuracy (%) at the early-stop iteration, mean ± std over
    its tickets that have not diverged; ``—`` where a run has no such round."""
    head, groups = ["round"], [("", 1)]
    for label in run_labels(runs):
        head += ["density %", "test acc @es %"]
        groups.append((label, 2))
    rows = []
    for i in range(max(len(r.rounds) for r in runs)):
        row = [str(i)]
        for r in runs:
            if i < len(r.rounds):
                m = r.rounds[i].metrics
                row += [f"{_density(m['density'], _ok(m), None):.2f}", _ms(m["test_acc_at_es"], _ok(m), 100)]
            else:
                row += [MISSING, MISSING]
        rows.append(row)
    if not rows:
        return "no completed rounds in any of these runs yet"
    title = "test accuracy at early stop by round: mean ± std over each run's tickets"
    return "\n".join([title, *_align(head, rows, groups=groups)])
