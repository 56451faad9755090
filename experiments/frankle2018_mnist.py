"""Frankle & Carbin (2018), MNIST: one-shot and iterative pruning, controls, sweeps.

Every configuration is one ltjax study: its seeds and control networks train in one
vmapped program per round. Modes (sections of the paper):

  iterative   sec. 4, Figures 7-8: prune 20% of each hidden layer / 10% of the output per
              round to under 1% remaining, reset to θ0, 5 seeds; controls: 3 random
              reinitializations and 3 within-layer shuffles (hidden layers) per ticket
  oneshot     sec. 3, Figures 3-6: prune the trained dense network in one step to each
              density, reset to θ0; controls: 3 reinitializations per ticket
  sweep-std   sec. 6.1, Figures 11-12: one-shot pruning (the paper: "we present the results
              using the one-shot pruning strategy") from inits with std 0.025 … 0.8
  sweep-size  sec. 6.2, Figure 13: one-shot pruning of networks (300k)-(100k), k = 1…4,
              std 0.05; x axis: weights remaining in the ticket
  sweep-size-iterative  sec. 6.2, Figure 14: the same networks pruned iteratively
  sweep-rate  sec. 6.3, Figure 15: iterative pruning at 10% … 70% per round (output at half)
              until the hidden layers hold under 5% (the paper: 10% per round needs 28
              rounds to reach 5%); linear x axis as in the paper
  continue    sec. 6.4, Figure 16: reset to θ0 vs Han et al.'s continued training (masks
              found by continuing, each evaluated by resetting a copy to θ0: control 'reset')

Full mode uses the paper's settings except where noted by ``--iterations`` (the paper
trains 50,000 iterations per round; on a 2-core CPU the results page uses fewer and says
so). ``--quick`` shrinks everything to finish in minutes. Writes
``<out>/<mode>.json`` (per configuration, per round: densities, convergence and
early-stop iterations, accuracies, for tickets and controls) and ``<out>/<mode>.png``.

    python experiments/frankle2018_mnist.py iterative --quick
    python experiments/frankle2018_mnist.py iterative --iterations 5000 --out docs/results/frankle2018
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from ltjax import lottery, presets, report

BASE = presets.get("lenet_mnist_2018")


def rounds_to(density: float, rate: float) -> int:
    """Rounds (incl. the dense round 0) until hidden layers pruned at ``rate`` fall below ``density``."""
    return math.ceil(math.log(density) / math.log(1 - rate)) + 1


#: densities of the one-shot experiments (the paper's one-shot figures use these points)
ONESHOT = BASE.replace(mode="oneshot", densities=(0.75, 0.512, 0.35, 0.25, 0.168, 0.107, 0.055, 0.035), rounds=9)
SIZES = (1, 2, 3, 4)


def configs(mode: str, quick: bool, copies: int | None = None) -> list[tuple[str, object]]:
    n = copies or (1 if quick else 3)
    if mode == "iterative":
        return [("iterative", BASE.replace(controls=(f"reinit:{n}", f"shuffle:{n}"), shuffle_layers=("fc*",)))]
    if mode == "oneshot":
        return [("oneshot", ONESHOT.replace(controls=(f"reinit:{n}",)))]
    if mode == "sweep-std":
        return [(f"std {s}", ONESHOT.replace(init_std=s)) for s in (0.025, 0.05, 0.1, 0.2, 0.4, 0.8)]
    if mode in ("sweep-size", "sweep-size-iterative"):
        base = ONESHOT if mode == "sweep-size" else BASE
        return [(f"{300 * k}-{100 * k}", base.replace(widths=(300 * k, 100 * k), init_std=0.05)) for k in SIZES]
    if mode == "sweep-rate":
        return [(f"{int(p * 100)}% per round",
                 BASE.replace(prune_rate=p, layer_rates=(("out", p / 2),), rounds=rounds_to(0.05, p)))
                for p in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)]
    if mode == "continue":
        return [("reset to θ0", BASE), ("continue (Han et al.), evaluated reset", BASE.replace(strategy="continue",
                                                                                          controls=("reset",)))]
    raise SystemExit(f"unknown mode {mode!r}")


def shrink(cfg, args):
    kw = {"seeds": args.seeds}
    if args.iterations:
        kw["iterations"] = args.iterations
    if args.quick:
        kw.update(iterations=args.iterations or 2000, rounds=min(cfg.rounds, 6))
        if cfg.densities:
            kw["densities"] = cfg.densities[:5]
            kw["rounds"] = 6
    if args.rounds:
        kw["rounds"] = min(cfg.rounds, args.rounds)
    return cfg.replace(**kw).validate()


def _acc_at(curves_acc: np.ndarray, steps: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Accuracy at iteration ``at`` per curve (last evaluation where the rule never fired)."""
    idx = np.where(at < 0, len(steps) - 1, np.searchsorted(steps, np.maximum(at, steps[0])))
    return np.take_along_axis(curves_acc, idx[..., None], -1)[..., 0]


def summarize(run) -> list[dict]:
    """Per round: densities and mean/std (over seeds, or seeds × copies) of the paper's measures."""
    rows = []
    for rd in run.rounds:
        m = rd.metrics
        steps = m["curves"]["step"]
        conv = m["convergence_iteration"]
        row = {
            "round": rd.index, "density": float(np.mean(m["density"])),
            "weights": float(np.mean(sum(np.asarray(v, np.float64) for v in m["remaining"].values()))),
            "layer_density": {k: float(np.mean(v)) for k, v in m["layer_density"].items()},
            "ticket": _stats(conv, _acc_at(m["curves"]["test_acc"], steps, conv), m),
        }
        for name, c in m.get("controls", {}).items():
            cconv = c["convergence_iteration"]
            row[name] = _stats(cconv, _acc_at(c["test_acc_curve"], steps, cconv), c)
        rows.append(row)
    return rows


def _stats(conv, acc_at_conv, m) -> dict:
    ok = ~np.asarray(m["diverged"], bool)
    conv = np.asarray(conv, np.float64)
    converged = (conv >= 0) & ok
    f = lambda a, sel: (float(np.mean(a[sel])), float(np.std(a[sel]))) if sel.any() else (None, None)  # noqa: E731
    return {
        "converged": f"{int(converged.sum())}/{converged.size}",
        "convergence_iteration": f(conv, converged),
        # at the convergence iteration; at the last iteration for networks that never met the rule
        "test_acc_at_convergence": f(np.asarray(acc_at_conv), ok),
        "early_stop_iteration": f(np.asarray(m["early_stop_iteration"], np.float64), ok),
        "test_acc_at_es": f(np.asarray(m["test_acc_at_es"]), ok),
        "final_test_acc": f(np.asarray(m["final_test_acc"]), ok),
    }


def plot(results: dict, path: Path, title: str, x: str = "density", logx: bool = True,
         acc: str = "test_acc_at_convergence") -> None:
    """Convergence iteration and test accuracy against density (%, the default) or
    ``x="weights"`` (weights remaining in the ticket, Figures 13-14). ``acc``: the
    accuracy at convergence (where the rule was met) or ``final_test_acc`` (every round)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in results.items():
        series = list(dict.fromkeys(k for r in rows for k, v in r.items() if isinstance(v, dict) and "converged" in v))
        for s in series:
            xof = lambda r: 100 * r["density"] if x == "density" else r["weights"]  # noqa: E731
            conv = [(xof(r), r[s]) for r in rows if s in r and r[s]["convergence_iteration"][0] is not None]
            pts = conv if acc == "test_acc_at_convergence" else [(xof(r), r[s]) for r in rows if s in r]
            if not pts:
                continue
            name = label if s == "ticket" else f"{label}: {s} control"
            line = a2.errorbar([p[0] for p in pts], [100 * p[1][acc][0] for p in pts],
                               yerr=[100 * p[1][acc][1] for p in pts], marker="o", ms=3, capsize=2, label=name)
            if conv:
                a1.errorbar([p[0] for p in conv], [p[1]["convergence_iteration"][0] for p in conv],
                            yerr=[p[1]["convergence_iteration"][1] for p in conv], marker="o", ms=3, capsize=2,
                            label=name, color=line[0].get_color())
    a1.set_ylabel("convergence iteration (2018 rule)")
    a2.set_ylabel("test accuracy at convergence (%)" if acc == "test_acc_at_convergence"
                  else "final test accuracy (%)")
    for a in (a1, a2):
        if logx:
            a.set_xscale("log")
            a.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        a.invert_xaxis()
        a.set_xlabel("weights remaining (%)" if x == "density" else "weights remaining in the ticket")
        a.grid(alpha=0.3)
    if a2.get_legend_handles_labels()[0]:
        a2.legend(fontsize=7)
    fig.suptitle(f"{title}; convergence lines stop where no network met the rule")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def anatomy(run, out: Path) -> None:
    """Section 5: survivors' initial weights (Figure 9) and per-unit connectivity (Figure 10),
    for the densities the paper shows that this run reached."""
    from ltjax import analysis, plots

    dens = analysis.round_densities(run)
    reached = lambda targets: tuple(t for t in targets if min(dens) <= t * 1.05)  # noqa: E731
    plots.survivor_init_histograms(run, densities=reached((1.0, 0.512, 0.168, 0.055)), path=str(out / "figure9.png"))
    plots.incoming_connectivity(run, densities=reached((0.8, 0.168, 0.055)), path=str(out / "figure10.png"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["iterative", "oneshot", "sweep-std", "sweep-size", "sweep-size-iterative",
                                    "sweep-rate", "continue"])
    p.add_argument("--quick", action="store_true", help="minutes on a CPU: 2 seeds, 2000 iterations, ≤ 6 rounds")
    p.add_argument("--seeds", type=int, help="tickets per configuration (paper: 5)")
    p.add_argument("--iterations", type=int, help="training iterations per round (paper: 50,000)")
    p.add_argument("--rounds", type=int, help="cap on rounds per configuration")
    p.add_argument("--copies", type=int, help="control networks of each kind per ticket (paper: 3)")
    p.add_argument("--out", default="docs/results/frankle2018", help="where the JSON and PNG go")
    p.add_argument("--runs", default="runs", help="parent of the run directories (resumable)")
    p.add_argument("--manual-dir")
    a = p.parse_args()
    a.seeds = a.seeds or (2 if a.quick else 5)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results, meta = {}, {}
    for label, cfg in configs(a.mode, a.quick, a.copies):
        cfg = shrink(cfg, a)
        run = lottery.run(cfg, a.runs, manual_dir=a.manual_dir, progress=sys.stderr.isatty())
        print(report.round_table(run))
        results[label] = summarize(run)
        meta[label] = {"run_dir": str(run.path), "config": cfg.to_dict()}
    if a.mode == "iterative":
        anatomy(run, out)
    (out / f"{a.mode}.json").write_text(json.dumps({"results": results, "runs": meta}, indent=1))
    title = f"Frankle & Carbin 2018, {a.mode} ({'quick' if a.quick else 'full'})"
    if a.mode == "sweep-std":  # Figure 11 (std >= 0.1) and Figure 12 (std <= 0.1)
        for fig, keep in (("figure11", lambda s: s >= 0.1), ("figure12", lambda s: s <= 0.1)):
            part = {k: v for k, v in results.items() if keep(float(k.split()[1]))}
            plot(part, out / f"{fig}.png", f"{title}: {fig}", acc="final_test_acc")
    plot(results, out / f"{a.mode}.png", title, x="weights" if a.mode.startswith("sweep-size") else "density",
         logx=a.mode != "sweep-rate", acc="final_test_acc" if a.mode.startswith("sweep") else "test_acc_at_convergence")
    print(f"wrote {out / (a.mode + '.json')} and {out / (a.mode + '.png')}")


if __name__ == "__main__":
    main()
