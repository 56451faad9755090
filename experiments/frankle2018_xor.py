"""XOR study of Frankle & Carbin (2018, section 2): Figures 1 and 2, paper vs ltjax.

Figure 1: success rates of random 2-h-1 networks, h = 2, 4, 6, 8, 10. Figure 2: 10-unit
networks pruned to 4 and to 2 hidden units by the three unit heuristics, one-shot and
iterative (2 units per round), survivors reset to θ0 and retrained. All trials of a
configuration train together in one vmapped program (:mod:`ltjax.xor`).

    python experiments/frankle2018_xor.py            # full: 1000 trials, 10,000 iterations (8-10 s here)
    python experiments/frankle2018_xor.py --quick    # 200 trials, 5000 iterations
    python experiments/frankle2018_xor.py --sweep    # also the learning-rate sweep (dense 10 and 2 units)

The study runs in a run directory of the store, ``<--runs>/frankle2018_xor-<hash of the
settings>/`` (:func:`ltjax.xor.open_run`): every configuration's result (the random networks of a
width and learning rate, each protocol and heuristic; one-shot per target width) is a part kept
there as it finishes, so a killed run continues with the parts it lacks, and a finished one run
again recomputes nothing. ``results.json``, the figures ``figure1.png``, ``figure2.png``,
``tickets_vs_random.png``, ``final_loss.png`` (and ``lr_sweep.png`` with ``--sweep``) are
made from the parts and written to ``--out`` (full: ``docs/results/frankle2018_xor``, quick:
``runs/frankle2018_xor_quick``), and both tables are printed as Markdown with the paper's
numbers beside ltjax's.

Counting (Figure 2's caption): a pruned column counts a trial only when both the 10-unit
network and the pruned ticket succeed by that criterion, as a percentage of *all* trials;
the conditional rate (pruned success among trials whose 10-unit network succeeded, as in
the paper's text) and the ticket's own rate are recorded too. Every strategy prunes the
same 1000 trained 10-unit networks (those of Figure 1's 10-unit column), so the rows
differ only in how they prune.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np

from ltjax import store
from ltjax import xor as X

WIDTHS = (2, 4, 6, 8, 10)
SWEEP_LRS = (0.01, 0.03, 0.1, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0)
PAPER_ROW_NAMES = {
    ("one_shot", "magnitude_product"): "One-shot Product",
    ("iterative", "input_magnitude"): "Input Magnitude",
    ("iterative", "output_magnitude"): "Output Magnitude",
    ("iterative", "magnitude_product"): "Product",
}
STRATEGIES = [(p, h) for p in X.PROTOCOLS for h in X.HEURISTICS]


def pct(a) -> float:
    return 100.0 * float(np.mean(np.asarray(a)))


def se(p: float, n: int) -> float:
    """Binomial standard error, in percentage points, of a rate ``p`` (%) over ``n`` trials."""
    return 100.0 * math.sqrt(max(p / 100 * (1 - p / 100), 0.0) / n)


def mcnemar(x: np.ndarray, y: np.ndarray) -> dict:
    """Paired comparison of two bool outcome arrays over the same trials: discordant counts and
    the exact two-sided McNemar p-value (binomial test of the discordant pairs at 1/2)."""
    n10, n01 = int(np.sum(x & ~y)), int(np.sum(~x & y))
    n, m = n10 + n01, min(n10, n01)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(m + 1)) / 2**n) if n else 1.0
    return {"only_first": n10, "only_second": n01, "p_value": p}


def _in_threads(fn, items):
    """``[fn(x) for x in items]`` on one thread per CPU core: the configurations are independent,
    JAX compiles and runs with the GIL released, and a 2-unit network cannot fill two cores."""
    with ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


def losses_of(part: dict) -> np.ndarray:
    """A part's per-trial largest point losses as the float32 array they were computed as."""
    return np.asarray(part["max_point_loss"], np.float32)


def run_figure1(d, settings, log):
    """Random networks of every width (the parts ``dense``); returns (rows, per-trial losses)."""
    rows, losses = {}, {}
    for h, part in zip(WIDTHS, _in_threads(lambda h: X.dense_part(d, settings, h), WIDTHS)):
        rows[h] = {k: part[k] for k in ("db", "zl", "seconds", "db_trials", "zl_trials")}
        losses[h] = losses_of(part)
        log(f"figure 1: {h:2d} units  DB {part['db']:5.1f}  ZL {part['zl']:5.1f}  ({part['seconds']:.1f}s)")
    return rows, losses


def figure2_row(protocol, heuristic, dense, parts):
    """Figure 2's row of a strategy from the 10-unit part and its pruning parts (one per one-shot
    target; one for the iterative path): joint, conditional and ticket-alone rates per width."""
    row, loss = {"protocol": protocol, "heuristic": heuristic, "10": {"db": dense["db"], "zl": dense["zl"]}}, {}
    base = {m: outcomes(dense[f"{m}_trials"]) for m in ("db", "zl")}
    for width, ticket in ((w, t) for part in parts for w, t in part["tickets"].items()):
        ok = {m: outcomes(ticket[f"{m}_trials"]) for m in ("db", "zl")}
        row[width] = {
            "db": X.joint_rate(base["db"], ok["db"]), "zl": X.joint_rate(base["zl"], ok["zl"]),
            "db_given_dense": X.conditional_rate(base["db"], ok["db"]),
            "zl_given_dense": X.conditional_rate(base["zl"], ok["zl"]),
            "db_ticket_alone": ticket["db"], "zl_ticket_alone": ticket["zl"],
            "db_trials": ticket["db_trials"], "zl_trials": ticket["zl_trials"],
        }
        if width == "2" and heuristic == "magnitude_product":
            loss[f"{protocol.replace('_', '-')} product, 2 units"] = losses_of(ticket)
    row["seconds"] = sum(part["seconds"] for part in parts)
    return row, loss


def run_figure2(d, settings, log):
    """Every (protocol, heuristic) on the same trained 10-unit trials (the parts ``prune``;
    one-shot one per target width)."""
    jobs = [(p, h, targets) for p, h in STRATEGIES
            for targets in ([(4,), (2,)] if p == "one_shot" else [(8, 6, 4, 2)])]
    parts = dict(zip(jobs, _in_threads(lambda job: X.prune_part(d, settings, *job), jobs)))
    dense = X.dense_part(d, settings, settings.hidden)
    rows, losses = [], {}
    for protocol, heuristic in STRATEGIES:
        row, loss = figure2_row(protocol, heuristic, dense,
                                [part for (p, h, _), part in parts.items() if (p, h) == (protocol, heuristic)])
        rows.append(row)
        losses.update(loss)
        log(f"figure 2: {row['protocol']:9s} {row['heuristic']:17s}  4 units DB {row['4']['db']:5.1f} "
            f"ZL {row['4']['zl']:5.1f}  2 units DB {row['2']['db']:5.1f} ZL {row['2']['zl']:5.1f}  "
            f"({row['seconds']:.1f}s)")
    return rows, losses


def run_sweep(d, settings, log):
    """Dense 10- and 2-unit success rates and the largest final loss among the trials that found
    the decision boundary, for each learning rate (the parts ``dense`` at each lr)."""
    cells = [(lr, h) for lr in SWEEP_LRS for h in (10, 2)]
    out = []
    for (lr, h), part in zip(cells, _in_threads(lambda c: X.dense_part(d, settings, c[1], lr=c[0]), cells)):
        solved = losses_of(part)[outcomes(part["db_trials"])]
        out.append({"lr": lr, "units": h, "db": part["db"], "zl": part["zl"],
                    "max_loss_of_db_trials": float(solved.max()) if solved.size else None})
        log(f"sweep: lr {lr:5.2f} {h:2d} units  DB {out[-1]['db']:5.1f}  ZL {out[-1]['zl']:5.1f}"
            f"  largest final loss among DB successes {out[-1]['max_loss_of_db_trials']}")
    return out


ITER_PRODUCT = ("iterative", "magnitude_product")
COMPARISONS = [  # the paper's two claims about strategies (section 2.2), tested on paired trials
    ("iterative vs one-shot (magnitude product)", ITER_PRODUCT, ("one_shot", "magnitude_product")),
    ("magnitude product vs input magnitude (iterative)", ITER_PRODUCT, ("iterative", "input_magnitude")),
    ("magnitude product vs output magnitude (iterative)", ITER_PRODUCT, ("iterative", "output_magnitude")),
]


def outcomes(s: str) -> np.ndarray:
    """Per-trial outcomes (bool, trial order) from the '0'/'1' string a part keeps (:func:`ltjax.xor.outcomes`)."""
    return np.array(list(s)) == "1"


def paired_comparisons(res) -> list[dict]:
    """McNemar tests on Figure 2's joint outcomes (10-unit network and 2-unit ticket both succeed)."""
    rows = {(r["protocol"], r["heuristic"]): r for r in res["figure2"]}
    out = []
    for label, a, b in COMPARISONS:
        for m in ("db", "zl"):
            dense = outcomes(res["figure1"]["10"][f"{m}_trials"])
            first, second = (dense & outcomes(rows[k]["2"][f"{m}_trials"]) for k in (a, b))
            out.append({"comparison": label, "criterion": m.upper(), "units": 2,
                        "first": pct(first), "second": pct(second), **mcnemar(first, second)})
    return out


def comparisons_table(res) -> str:
    lines = ["| comparison (2 units, joint counting) | criterion | first % | second % | trials only first wins |"
             " trials only second wins | exact McNemar p |", "|---|---|---:|---:|---:|---:|---:|"]
    for c in res["paired_comparisons"]:
        lines.append(f"| {c['comparison']} | {c['criterion']} | {c['first']:.1f} | {c['second']:.1f} | "
                     f"{c['only_first']} | {c['only_second']} | {c['p_value']:.3g} |")
    return "\n".join(lines)


# -- tables ----------------------------------------------------------------------------------

def figure1_table(res) -> str:
    n = res["config"]["trials"]
    lines = ["| hidden units | DB paper | DB ltjax | ZL paper | ZL ltjax |", "|---:|---:|---:|---:|---:|"]
    for h in sorted(WIDTHS, reverse=True):
        r, (pdb, pzl) = res["figure1"][str(h)], X.FIGURE1_PAPER[h]
        lines.append(f"| {h} | {pdb:.1f} | {r['db']:.1f} ± {se(r['db'], n):.1f} | {pzl:.1f} | {r['zl']:.1f} ± {se(r['zl'], n):.1f} |")
    return "\n".join(lines)


def figure2_table(res) -> str:
    cols = ["10", "4", "2"]
    head = "| strategy | " + " | ".join(f"{c} {m} paper | {c} {m} ltjax" for c in cols for m in ("DB", "ZL")) + " |"
    lines = [head, "|---|" + "---:|" * 12]
    for row in res["figure2"]:
        key = (row["protocol"], row["heuristic"])
        paper = X.FIGURE2_PAPER.get(key)
        name = PAPER_ROW_NAMES.get(key, f"{row['protocol'].replace('_', '-')} {row['heuristic'].replace('_', ' ')}")
        if key not in PAPER_ROW_NAMES:
            name += " (not in paper)"
        else:
            name += f" ({row['protocol'].replace('_', '-')} {row['heuristic'].replace('_', ' ')})"
        cells = []
        for c in cols:
            for i, m in enumerate(("db", "zl")):
                cells.append(f"{paper[int(c)][i]:.1f}" if paper else "—")
                cells.append(f"{row[c][m]:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def conditional_table(res) -> str:
    lines = ["| strategy | 4 units DB \\| 10 DB | 4 units ZL \\| 10 ZL | 2 units DB \\| 10 DB | 2 units ZL \\| 10 ZL"
             " | 2 units DB (ticket alone) | 2 units ZL (ticket alone) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in res["figure2"]:
        r4, r2 = row["4"], row["2"]
        lines.append(f"| {row['protocol'].replace('_', '-')} {row['heuristic'].replace('_', ' ')} | "
                     f"{r4['db_given_dense']:.1f} | {r4['zl_given_dense']:.1f} | {r2['db_given_dense']:.1f} | "
                     f"{r2['zl_given_dense']:.1f} | {r2['db_ticket_alone']:.1f} | {r2['zl_ticket_alone']:.1f} |")
    return "\n".join(lines)


# -- figures ----------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_figure1(res, path):
    plt = _plt()
    hs = sorted(WIDTHS, reverse=True)
    x = np.arange(len(hs))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, (i, m, label) in zip(axes, [(0, "db", "decision boundary (DB)"), (1, "zl", "zero loss (ZL)")]):
        ax.bar(x - 0.2, [X.FIGURE1_PAPER[h][i] for h in hs], 0.4, label="paper", color="0.7")
        ax.bar(x + 0.2, [res["figure1"][str(h)][m] for h in hs], 0.4, label="ltjax", color="C0")
        ax.set_xticks(x, [str(h) for h in hs])
        ax.set_xlabel("hidden units")
        ax.set_title(label)
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("% of trials")
    axes[0].legend(loc="lower left")
    fig.suptitle(f"Figure 1: random XOR networks ({res['config']['trials']} trials each)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_figure2(res, path):
    plt = _plt()
    rows = res["figure2"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharey=True)
    x = np.arange(len(rows))
    short = {"one_shot": "1-shot", "iterative": "iter.", "input_magnitude": "input",
             "output_magnitude": "output", "magnitude_product": "product"}
    names = [f"{short[r['protocol']]}\n{short[r['heuristic']]}" for r in rows]
    for j, col in enumerate(["10", "4", "2"]):
        for i, (m, label) in enumerate([("db", "DB"), ("zl", "ZL")]):
            ax = axes[i, j]
            paper = [X.FIGURE2_PAPER.get((r["protocol"], r["heuristic"]), {}).get(int(col), (np.nan, np.nan))[i]
                     for r in rows]
            ax.bar(x - 0.2, paper, 0.4, color="0.7", label="paper")
            ax.bar(x + 0.2, [r[col][m] for r in rows], 0.4, color="C0" if m == "db" else "C1", label="ltjax")
            ax.set_xticks(x, names if i == 1 else [""] * len(rows), fontsize=8)
            ax.set_ylim(0, 105)
            ax.grid(axis="y", alpha=0.3)
            pruned = "" if col == "10" else " (pruned; both succeed)"
            ax.set_title(f"{col} units{pruned}: {label}", fontsize=9)
    axes[0, 0].set_ylabel("% of trials")
    axes[1, 0].set_ylabel("% of trials")
    axes[0, 0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"Figure 2: pruning strategies ({res['config']['trials']} trials; paper bars only where the paper ran it)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


LOSS_BINS = np.round(np.arange(-6.0, 1.01, 0.1), 1)  # log10 of the largest per-point BCE


def loss_histogram(losses: dict[str, np.ndarray]) -> dict:
    """Counts of log10(largest per-point BCE) in :data:`LOSS_BINS` (values outside are clipped
    into the end bins), per named group of trials."""
    clipped = {k: np.clip(np.log10(np.maximum(v, 1e-30)), LOSS_BINS[0], LOSS_BINS[-1] - 1e-6) for k, v in losses.items()}
    return {"log10_edges": LOSS_BINS.tolist(),
            "counts": {k: np.histogram(v, bins=LOSS_BINS)[0].tolist() for k, v in clipped.items()}}


def plot_final_loss(hist, threshold, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for name, counts in hist["counts"].items():
        ax.stairs(counts, hist["log10_edges"], label=name)
    ax.axvline(np.log10(threshold), color="k", ls="--", lw=1, label=f"ZL threshold {threshold:g}")
    for v, t, ha in ((np.log10(np.log(2)), "log 2 ", "right"), (np.log10(np.log(3)), " log 3", "left")):
        ax.axvline(v, color="0.5", ls=":", lw=1)
        ax.text(v, 0.98, t, transform=ax.get_xaxis_transform(), ha=ha, va="top", fontsize=7)
    ax.set_xlabel("log10 of the largest per-point BCE after training")
    ax.set_ylabel("trials")
    ax.set_yscale("symlog", linthresh=1)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("Final losses: trials either solve XOR (loss → 0) or stall on a plateau")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_tickets_vs_random(res, path):
    """Success rate of tickets alone (each width of the iterative path, and one-shot) against
    random networks of the same width (Figure 1)."""
    plt = _plt()
    hs = sorted(WIDTHS, reverse=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, m, label in zip(axes, ("db", "zl"), ("decision boundary (DB)", "zero loss (ZL)")):
        ax.plot(hs, [res["figure1"][str(h)][m] for h in hs], "o-", color="k", label="random networks (Figure 1)")
        for j, r in enumerate(res["figure2"]):
            ws = [10] + [w for w in hs if w < 10 and str(w) in r]
            ys = [r["10"][m]] + [r[str(w)][f"{m}_ticket_alone"] for w in ws[1:]]
            style = "s--" if r["protocol"] == "one_shot" else "^-"
            ax.plot(ws, ys, style, color=f"C{j}", ms=4, lw=1,
                    label=f"{r['protocol'].replace('_', '-')} {r['heuristic'].replace('_', ' ')} tickets")
        ax.set_xticks(hs)
        ax.invert_xaxis()
        ax.set_xlabel("hidden units")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("% of trials (ticket alone)")
    axes[1].legend(fontsize=7, loc="lower left")
    fig.suptitle("Winning tickets vs random networks of the same width")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweep(sweep, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for h, c in ((10, "C0"), (2, "C1")):
        rs = [r for r in sweep if r["units"] == h]
        ax.plot([r["lr"] for r in rs], [r["db"] for r in rs], "o-", color=c, label=f"{h} units DB")
        ax.plot([r["lr"] for r in rs], [r["zl"] for r in rs], "s--", color=c, label=f"{h} units ZL")
    ax.set_xscale("log")
    ax.set_xlabel("SGD learning rate")
    ax.set_ylabel("% of trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Learning-rate sweep (dense networks)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="200 trials, 5000 iterations")
    p.add_argument("--trials", type=int, help="trials per configuration (full: 1000)")
    p.add_argument("--iterations", type=int, help="full-batch iterations per training (full: 10,000)")
    p.add_argument("--lr", type=float, default=X.LEARNING_RATE, help="SGD learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sweep", action="store_true", help="also run the learning-rate sweep")
    p.add_argument("--out", help="output folder (full: docs/results/frankle2018_xor)")
    p.add_argument("--runs", default="runs", help="where the study's run directory (its finished parts) is kept")
    a = p.parse_args()

    trials = a.trials or (200 if a.quick else 1000)
    iterations = a.iterations or (5000 if a.quick else X.ITERATIONS)
    out = Path(a.out or ("runs/frankle2018_xor_quick" if a.quick else "docs/results/frankle2018_xor"))
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    def log(msg):
        print(f"[{time.time() - start:6.1f}s] {msg}", flush=True)

    settings = X.StudySettings(trials=trials, iterations=iterations, lr=a.lr, seed=a.seed)
    config = dict(trials=trials, iterations=iterations, lr=a.lr, optimizer="sgd (full batch)", seed=a.seed,
                  zero_loss_threshold=settings.zero_loss_threshold, quick=a.quick,
                  device=str(jax.devices()[0]), jax=jax.__version__)
    d = X.open_run(settings, a.runs)
    with store.RunLock(d):
        kept = len(list((d / store.PARTS).glob("*.json")))
        log(f"run directory {d}" + (f": {kept} finished parts kept, only the others are computed" if kept else ""))
        fig1, losses = run_figure1(d, settings, log)
        fig2, losses2 = run_figure2(d, settings, log)
        losses = {f"random {h} units": v for h, v in losses.items() if h in (10, 2)} | losses2
        res = {
            "config": config,
            "figure1": {str(h): r for h, r in fig1.items()},
            "figure2": fig2,
            "final_max_point_loss_hist": loss_histogram(losses),
            "final_max_point_loss_quantiles": {
                name: dict(zip(("q05", "q25", "q50", "q75", "q95"),
                               map(float, np.quantile(ml, [.05, .25, .5, .75, .95]))))
                for name, ml in losses.items()},
            "paper": {"figure1": {str(h): v for h, v in X.FIGURE1_PAPER.items()},
                      "figure2": {f"{k[0]}/{k[1]}": {str(w): v for w, v in cols.items()}
                                  for k, cols in X.FIGURE2_PAPER.items()}},
        }
        res["paired_comparisons"] = paired_comparisons(res)
        if a.sweep:
            res["lr_sweep"] = run_sweep(d, settings, log)
            plot_sweep(res["lr_sweep"], out / "lr_sweep.png")
    res["runtime_s"] = time.time() - start
    (out / "results.json").write_text(json.dumps(res, indent=1))
    plot_figure1(res, out / "figure1.png")
    plot_figure2(res, out / "figure2.png")
    plot_final_loss(res["final_max_point_loss_hist"], X.ZERO_LOSS_THRESHOLD, out / "final_loss.png")
    plot_tickets_vs_random(res, out / "tickets_vs_random.png")

    print(f"\nFigure 1 (% of {trials} trials, ± binomial standard error)\n")
    print(figure1_table(res))
    print("\nFigure 2 (pruned columns: both the 10-unit network and the ticket succeed, % of all trials)\n")
    print(figure2_table(res))
    print("\nConditional rates (% of trials whose 10-unit network succeeded)\n")
    print(conditional_table(res))
    print("\nPaired comparisons of strategies (same 10-unit networks)\n")
    print(comparisons_table(res))
    print(f"\nwrote {out}/results.json and figures; {res['runtime_s']:.0f}s")


if __name__ == "__main__":
    main()
