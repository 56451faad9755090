"""The per-round table of a run: mean ± std over tickets (seeds)."""

from __future__ import annotations

import numpy as np

from ltjax.store import Run


def _ms(a, scale=1.0, digits=2) -> str:
    a = np.asarray(a, np.float64) * scale
    return f"{a.mean():.{digits}f} ± {a.std():.{digits}f}"


def round_table(run: Run) -> str:
    """One line per completed round.

    Columns: density (% of prunable weights remaining, global and per layer), early-stop
    iteration (minimum validation loss; test loss when the run has no validation set),
    validation and test accuracy (%) at that iteration, and test accuracy (%) at the last
    iteration. Values are mean ± std over the run's tickets.
    """
    if not run.rounds:
        return f"{run.path}: no completed rounds yet"
    first = run.rounds[0].metrics
    layers = list(first["layer_density"])
    on = first["early_stop_on"]
    head = ["round", "density %", *[f"{l} %" for l in layers], f"early-stop iter ({on} loss)",
            "val acc @es %", "test acc @es %", "final test acc %"]
    rows = []
    for rd in run.rounds:
        m = rd.metrics
        rows.append([
            str(rd.index),
            f"{100 * np.mean(m['density']):.2f}",
            *[f"{100 * np.mean(m['layer_density'][l]):.2f}" for l in layers],
            _ms(m["early_stop_iteration"], digits=0),
            _ms(m["val_acc_at_es"], 100) if on == "val" else "n/a",
            _ms(m["test_acc_at_es"], 100),
            _ms(m["final_test_acc"], 100),
        ])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    c = run.config
    title = (f"{run.path}\n{c.name}: {c.seeds} seed(s) from {c.seed}, {c.strategy}"
             f"{f' to iteration {c.rewind_iteration}' if c.strategy == 'rewind' else ''}, {c.mode} {c.scope} "
             f"pruning, {c.iterations} iterations per round; mean ± std over seeds")
    return "\n".join([title, fmt(head), *map(fmt, rows)])
