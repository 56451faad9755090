"""Figures of a run (matplotlib; imported lazily so the library never needs a display)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ltjax import report
from ltjax.store import Run


def accuracy_vs_density(run: Run, path: str | None = None):
    """Test accuracy at the early-stop iteration, and that iteration, against density (log x).

    Mean over tickets with ± std error bars, as in Frankle & Carbin's figures (tickets that
    diverged left out, as in :func:`ltjax.report.round_table`). Density is the percentage of
    prunable weights remaining. Returns the figure; saves it if ``path``.
    """
    plt = _pyplot(path)
    dens = report.densities(run)[0]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    _errorbars(a1, dens, report.by_round(run, "test_acc_at_es", 100), "test accuracy at early stop (%)", "C0")
    _errorbars(a2, dens, report.by_round(run, "early_stop_iteration"), report.early_stop_name(run), "C1")
    return _finish(fig, f"{run.config.name}: {run.config.strategy}, {run.config.seeds} seed(s)", path)


def early_stop_vs_density(run: Run, path: str | None = None):
    """The early-stop iteration against density (log x), mean ± std over tickets: how much
    sooner (or later) sparser tickets learn. Returns the figure; saves it if ``path``."""
    plt = _pyplot(path)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    _errorbars(ax, report.densities(run)[0], report.by_round(run, "early_stop_iteration"),
               report.early_stop_name(run), "C1")
    return _finish(fig, f"{run.config.name}: early-stop iteration", path)


def layer_density_by_round(run: Run, path: str | None = None):
    """Density of each prunable layer and of the whole network (% of weights remaining, log y)
    by round, from each round's mask (see :func:`ltjax.report.densities`). Returns the
    figure; saves it if ``path``."""
    from matplotlib.ticker import MaxNLocator

    from ltjax.analysis import display_order

    plt = _pyplot(path)
    total, layers = report.densities(run)
    rounds = [rd.index for rd in run.rounds]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, name in enumerate(display_order(list(layers))):
        ax.plot(rounds, layers[name], marker="o", ms=3, color=f"C{i}", label=name)
    ax.plot(rounds, total, "k--", label="all prunable weights")
    ax.set_yscale("log")
    _percent_ticks(ax.yaxis)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("weights remaining (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, f"{run.config.name}: density per layer", path)


def compare_accuracy(runs: Sequence[Run], path: str | None = None):
    """Test accuracy at the early-stop iteration against density (log x, decreasing to the
    right) for several runs: one line per run, labeled with its name (see
    :func:`ltjax.report.run_labels`), with a ± std band over its tickets. Returns the figure;
    saves it if ``path``."""
    plt = _pyplot(path)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (run, label) in enumerate(zip(runs, report.run_labels(runs))):
        dens = report.densities(run)[0]
        mean, std = report.by_round(run, "test_acc_at_es", 100)
        ax.plot(dens, mean, marker="o", ms=3, color=f"C{i}", label=label)
        ax.fill_between(dens, mean - std, mean + std, color=f"C{i}", alpha=0.2, linewidth=0)
    _density_axis(ax)
    ax.set_ylabel("test accuracy at early stop (%)")
    ax.legend(fontsize=8)
    return _finish(fig, "test accuracy at early stop, mean ± std over tickets", path)


FIGURES = {"accuracy_vs_density": accuracy_vs_density, "early_stop_vs_density": early_stop_vs_density,
           "layer_density": layer_density_by_round}


def standard_figures(run: Run, out: str | os.PathLike | None = None) -> list[Path]:
    """Write :data:`FIGURES` of ``run`` as ``<name>.png`` into ``out`` (default
    ``<run>/figures``, created if missing); returns the paths written. Reads only the run's
    ``config.json`` and metrics: no model is built, no checkpoint loaded."""
    if not run.rounds:
        raise ValueError(f"{run.path} has no completed rounds yet: nothing to plot")
    out = Path(out) if out is not None else run.path / "figures"
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot(out)
    paths = []
    for name, figure in FIGURES.items():
        paths.append(out / f"{name}.png")
        plt.close(figure(run, str(paths[-1])))
    return paths


def _errorbars(ax, dens, mean_std, ylabel: str, color: str) -> None:
    ax.errorbar(dens, mean_std[0], yerr=mean_std[1], marker="o", capsize=3, color=color)
    ax.set_ylabel(ylabel)
    _density_axis(ax)


def _density_axis(ax) -> None:
    """Density on a log x axis, decreasing from left to right as in the papers."""
    ax.set_xscale("log")
    _percent_ticks(ax.xaxis)
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.grid(alpha=0.3)


def _percent_ticks(axis) -> None:
    from matplotlib.ticker import FormatStrFormatter

    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(FormatStrFormatter("%g"))


def _finish(fig, title: str, path: str | None):
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def _pyplot(path):
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def survivor_init_histograms(run: Run, densities=(1.0, 0.512, 0.168, 0.055), path: str | None = None,
                             on: str = "hidden", bins: int = 60, rtol: float | None = 0.05,
                             layer_order=None):
    """Figure 9 of Frankle & Carbin (2018): initial values of the weights that survive pruning.

    One panel per target density (the round closest to it, see
    :func:`ltjax.analysis.select_rounds`; ``on="hidden"`` matches the paper's "pruned to
    51.2%"), one line per layer: the histogram of ``theta0`` at the round's surviving
    positions, pooled over all tickets, normalized to a probability density so that layers
    of different size share an axis. Bin edges are common to all panels (the range of
    ``theta0``'s kernels). Returns the figure; saves it if ``path``.
    """
    from ltjax import analysis as A

    plt = _pyplot(path)
    rounds = A.select_rounds(run, densities, on, rtol, layer_order)
    dens = A.round_densities(run, on, layer_order)
    full = A.survivor_init_values(run.theta0, run.rounds[0].mask)
    order = list(layer_order) if layer_order is not None else A.mlp_layer_order(list(full))
    lo = min(float(v.min()) for v in full.values() if v.size)
    hi = max(float(v.max()) for v in full.values() if v.size)
    edges = np.linspace(lo, hi, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    fig, axes = plt.subplots(1, len(rounds), figsize=(3.6 * len(rounds), 3.2), sharex=True, squeeze=False)
    for ax, r in zip(axes[0], rounds):
        vals = A.survivor_init_values(run.theta0, run.rounds[r].mask)
        for i, name in enumerate(order):
            v = vals[name]
            h = np.histogram(v, edges, density=True)[0] if v.size else np.zeros(bins)
            ax.plot(centers, h, color=f"C{i}", label=f"{name} ({v.size})")
        ax.set_title(f"{100 * dens[r]:.3g}% remaining (round {r})", fontsize=10)
        ax.set_xlabel("initial weight")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("density of survivors")
    return _finish(fig, f"{run.config.name}: initial values of surviving weights ({on} density)", path)


def incoming_connectivity(run: Run, densities=(0.8, 0.168, 0.055), path: str | None = None,
                          on: str = "hidden", aggregate: str = "mean", remove_dead: bool = True,
                          rtol: float | None = 0.05, layer_order=None):
    """Figure 10 of Frankle & Carbin (2018): surviving incoming connections per unit, sorted.

    One panel per layer (input to output), one line per target density (the round closest
    to it, see :func:`ltjax.analysis.select_rounds`). Each ticket's mask first loses the
    edges with no path to an output unit (``remove_dead``, the paper's footnote 7; see
    :func:`ltjax.analysis.prune_dead_edges`), then each unit's incoming connections are
    counted and sorted in descending order; ``aggregate="mean"`` averages the sorted curves
    over tickets rank by rank, ``"pool"`` sorts all tickets' units together (plotted at
    x = position / T so the axis stays in units of one network). Returns the figure; saves
    it if ``path``.
    """
    from ltjax import analysis as A
    from ltjax import masks as M

    plt = _pyplot(path)
    rounds = A.select_rounds(run, densities, on, rtol, layer_order)
    dens = A.round_densities(run, on, layer_order)
    first = run.rounds[0].mask
    order = list(layer_order) if layer_order is not None else A.mlp_layer_order(M.layer_names(first))
    fig, axes = plt.subplots(1, len(order), figsize=(3.8 * len(order), 3.2), squeeze=False)
    for k, r in enumerate(rounds):
        mask = run.rounds[r].mask
        if remove_dead:
            mask = A.prune_dead_edges(mask, order)
        counts = A.incoming_counts(mask)
        for ax, name in zip(axes[0], order):
            c = np.asarray(counts[name])
            t = c.shape[0] if c.ndim == 2 else 1
            y = A.aggregate_counts(c, aggregate)
            ax.plot(np.arange(y.size) / (t if aggregate == "pool" else 1), y, color=f"C{k}",
                    label=f"{100 * dens[r]:.3g}% (round {r})")
    for ax, name in zip(axes[0], order):
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("unit (sorted by connections)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("incoming connections")
    return _finish(fig, f"{run.config.name}: surviving incoming connections per unit ({aggregate} over tickets)", path)
