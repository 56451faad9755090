"""The per-round table of a run: mean ± std over tickets (seeds)."""

from __future__ import annotations

import numpy as np

from ltjax.store import Run


def _ms(a, ok, scale=1.0, digits=2) -> str:
    a = np.asarray(a, np.float64)[ok] * scale
    return f"{a.mean():.{digits}f} ± {a.std():.{digits}f}" if a.size else "diverged"


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
    rule = first.get("early_stop_rule", "min_loss")  # runs from before the rule was recorded: min_loss
    es = f"early-stop iter ({on} loss)" if rule == "min_loss" else f"early-stop iter ({on} acc, patience)"
    head = ["round", "density %", *[f"{l} %" for l in layers], es,
            "val acc @es %", "test acc @es %", "final test acc %", *(["diverged"] if any_diverged else [])]
    c = run.config
    title = (f"{run.path}\n{c.name}: {c.seeds} seed(s) from {c.seed}, {c.strategy}"
             f"{f' to iteration {c.rewind_iteration}' if c.strategy == 'rewind' else ''}, {c.mode} {c.scope} "
             f"pruning, {c.iterations} iterations per round; mean ± std over seeds")
    groups = [(None, np.ones(c.num_tickets(), bool))] if not c.scores else [
        (name, np.asarray([t == name for t in c.ticket_scores()])) for name in c.scores]
    out = [title]
    for name, sel in groups:
        if name is not None:
            out.append(f"\nscore {name} ({int(sel.sum())} tickets):")
        out += _align(head, _rows(run, layers, on, any_diverged, sel))
    if c.controls:
        out += ["", "controls (same mask density, trained in the same program): "
                    "test acc @es % and early-stop iteration, mean ± std over seeds × copies", *_controls_rows(run)]
    return "\n".join(out)


def _rows(run: Run, layers: list[str], on: str, any_diverged: bool, sel: np.ndarray) -> list[list[str]]:
    rows = []
    for rd in run.rounds:
        m = rd.metrics
        ok = ~np.asarray(m["diverged"], bool) & sel
        rows.append([
            str(rd.index),
            f"{100 * np.mean(m['density'][ok] if ok.any() else m['density'][sel]):.2f}",
            *[f"{100 * np.mean(m['layer_density'][l][ok] if ok.any() else m['layer_density'][l][sel]):.2f}" for l in layers],
            _ms(m["early_stop_iteration"], ok, digits=0),
            _ms(m["val_acc_at_es"], ok, 100) if on == "val" else "n/a",
            _ms(m["test_acc_at_es"], ok, 100),
            _ms(m["final_test_acc"], ok, 100),
            *([f"{int((~ok & sel).sum())}/{int(sel.sum())}"] if any_diverged else []),
        ])
    return rows


def _align(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    return ["  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in [head, *rows]]


def _controls_rows(run: Run) -> list[str]:
    names = [n.partition(":")[0] for n in run.config.controls]
    head = ["round", "density %", "ticket acc", "ticket es-iter",
            *[x for n in names for x in (f"{n} acc", f"{n} es-iter")]]
    rows = []
    for rd in run.rounds[1:]:
        m = rd.metrics
        ok = ~np.asarray(m["diverged"], bool)
        row = [str(rd.index), f"{100 * np.mean(m['density']):.2f}", _ms(m["test_acc_at_es"], ok, 100),
               _ms(m["early_stop_iteration"], ok, digits=0)]
        for n in names:
            cm = m["controls"][n]
            cok = ~np.asarray(cm["diverged"], bool)
            row += [_ms(cm["test_acc_at_es"], cok, 100), _ms(cm["early_stop_iteration"], cok, digits=0)]
        rows.append(row)
    return _align(head, rows) if rows else ["(no pruned rounds yet)"]
