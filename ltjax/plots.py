"""Figures of a run (matplotlib; imported lazily so the library never needs a display)."""

from __future__ import annotations

import numpy as np

from ltjax.store import Run


def accuracy_vs_density(run: Run, path: str | None = None):
    """Test accuracy at the early-stop iteration, and that iteration, against density (log x).

    Mean over tickets with ± std error bars, as in Frankle & Carbin's figures. Density is
    the percentage of prunable weights remaining. Returns the figure; saves it if ``path``.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = [rd.metrics for rd in run.rounds]
    dens = np.array([100 * np.mean(m["density"]) for m in ms])
    acc = np.array([100 * m["test_acc_at_es"] for m in ms])
    es = np.array([m["early_stop_iteration"] for m in ms], np.float64)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.errorbar(dens, acc.mean(1), yerr=acc.std(1), marker="o", capsize=3)
    a1.set_ylabel("test accuracy at early stop (%)")
    a2.errorbar(dens, es.mean(1), yerr=es.std(1), marker="o", capsize=3, color="C1")
    a2.set_ylabel(f"early-stop iteration (min {ms[0]['early_stop_on']} loss)")
    from matplotlib.ticker import FormatStrFormatter

    for a in (a1, a2):
        a.set_xscale("log")
        a.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        a.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
        a.invert_xaxis()
        a.set_xlabel("weights remaining (%)")
        a.grid(alpha=0.3)
    fig.suptitle(f"{run.config.name}: {run.config.strategy}, {run.config.seeds} seed(s)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
