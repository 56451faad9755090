"""Layerwise importance scores for lottery ticket rewinding: Table 2(a) and Figure 1 of the
layerwise-importance paper on LeNet-300-100 / MNIST.

One study: the five scores of Table 2 (magnitude, L1, L2, softmax, min-max) × 3 seeds =
15 tickets in one vmapped program (the tickets of a seed share θ0 and data order), OpenLTH's
LeNet recipe (Appendix A: SGD 0.1, batch 128, 40 epochs, global pruning of 20% per round,
output layer excluded, rewind to iteration 0), 24 pruning rounds. Writes, per round and
score: sparsity, final test accuracy (mean ± std over seeds), per-layer densities, layer
collapse; and, across the five tickets of each seed, the weights all of them keep.

    python experiments/layerwise_importance.py --quick          # minutes
    python experiments/layerwise_importance.py                  # the full table (hours on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import numpy as np

from ltjax import analysis, lottery, presets, report

SCORES = ("magnitude", "l1", "l2", "softmax", "minmax")
TABLE_STEPS = (5, 10, 15, 20, 24)
# Table 2(a): average top-1 accuracy (%) over 3 runs; "dense" then steps 5, 10, 15, 20, 24.
PAPER = {
    "dense": 98.11,
    "magnitude": (98.00, 98.08, 97.94, 97.23, 90.62),
    "l1": (98.12, 98.15, 98.12, 97.44, 90.89),
    "l2": (98.04, 98.06, 97.95, 97.47, 91.05),
    "softmax": (98.00, 98.05, 97.90, 97.33, 91.29),
    "minmax": (98.02, 98.04, 97.77, 97.41, 91.82),
}


def summarize(run) -> dict:
    cfg = run.config
    names = cfg.ticket_scores()
    rows = []
    for rd in run.rounds:
        m = rd.metrics
        masks = rd.mask
        T = len(names)
        per_ticket = [jax.tree.map(lambda a: a[t], masks) for t in range(T)]
        collapse = [analysis.layer_collapse(mk) for mk in per_ticket]
        row = {"round": rd.index, "sparsity": float(1 - np.mean(m["density"])), "scores": {}}
        for s in cfg.scores:
            sel = np.array([n == s for n in names])
            acc = 100 * np.asarray(m["final_test_acc"])[sel]
            row["scores"][s] = {
                "final_test_acc": (float(acc.mean()), float(acc.std())),
                "test_acc_at_es": float(100 * np.mean(np.asarray(m["test_acc_at_es"])[sel])),
                "layer_density": {k: float(np.mean(np.asarray(v)[sel])) for k, v in m["layer_density"].items()},
                "collapsed": int(sum(c["no_path"] for c, keep in zip(collapse, sel) if keep)),
            }
        # the tickets of one seed (one θ0) found by the different scores: weights all of them keep
        if rd.index > 0:
            common = [analysis.common_survivors([per_ticket[i * cfg.seeds + seed] for i in range(len(cfg.scores))])
                      for seed in range(cfg.seeds)]
            row["common_across_scores"] = {
                layer: {k: float(np.mean([c[layer][k] for c in common])) for k in ("of_all", "of_surviving")}
                for layer in common[0]}
        rows.append(row)
    return {"rows": rows, "config": cfg.to_dict(), "run_dir": str(run.path)}


def figure2(run) -> dict:
    """Figure 2: per-connection weight std and sign flips across rounds, for the connections
    all five tickets of a seed keep in the last round ("overlapping") and the others each
    ticket keeps there ("non-overlapping"); per score and layer, averaged over seeds."""
    cfg = run.config  # tickets are ordered (score, seed): ticket s·seeds + seed
    last = run.rounds[-1]
    layers = [n for n in last.metrics["layer_density"]]
    out: dict = {s: {} for s in cfg.scores}
    for layer in layers:
        key = layer
        masks_r = [np.asarray(rd.mask[key]["kernel"]) for rd in run.rounds]
        params_r = [np.asarray(rd.params[key]["kernel"]) for rd in run.rounds]
        final = masks_r[-1]
        for s_i, s in enumerate(cfg.scores):
            acc = []
            for seed in range(cfg.seeds):
                t = s_i * cfg.seeds + seed
                common = np.all([final[j * cfg.seeds + seed] for j in range(len(cfg.scores))], axis=0)
                groups = {"overlapping": common, "non-overlapping": final[t] & ~common}
                acc.append(analysis.weight_dynamics([p[t] for p in params_r], [m[t] for m in masks_r], groups))
            out[s][layer] = {g: {k: float(np.nanmean([a[g][k] for a in acc])) for k in acc[0][g]}
                             for g in acc[0]}
    return out


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    scores = list(rows[0]["scores"])
    layers = list(rows[0]["scores"][scores[0]]["layer_density"])
    fig, axes = plt.subplots(1, 1 + len(layers), figsize=(4.5 * (1 + len(layers)), 4))
    x = [r["round"] for r in rows]
    for s in scores:
        axes[0].errorbar(x, [r["scores"][s]["final_test_acc"][0] for r in rows],
                         yerr=[r["scores"][s]["final_test_acc"][1] for r in rows], marker="o", ms=3, capsize=2,
                         label=s)
        for ax, layer in zip(axes[1:], layers):
            ax.plot(x, [100 * r["scores"][s]["layer_density"][layer] for r in rows], marker="o", ms=3, label=s)
    axes[0].set_ylabel("final test accuracy (%)")
    axes[0].set_ylim(max(0, min(r["scores"][s]["final_test_acc"][0] for r in rows for s in scores) - 1), None)
    for ax, layer in zip(axes[1:], layers):
        ax.set_yscale("log")
        ax.set_ylabel(f"{layer} density (% remaining)")
        ax.set_title(f"layer {layer} (Figure 1)")
    for ax in axes:
        ax.set_xlabel("pruning round (global sparsity 1 − 0.8^round)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Layerwise importance scores, LeNet-300-100 / MNIST (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 seeds, 2 epochs per round, 6 rounds")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rounds", type=int, default=25, help="including the dense round 0 (paper: 24 pruning rounds)")
    p.add_argument("--iterations", type=int, help="per round (paper: 40 epochs = 18,760)")
    p.add_argument("--out", default="docs/results/layerwise_importance")
    p.add_argument("--runs", default="runs")
    p.add_argument("--manual-dir")
    a = p.parse_args()
    cfg = presets.get("lenet_mnist_openlth").replace(scores=SCORES, seeds=a.seeds, rounds=a.rounds)
    if a.quick:
        cfg = cfg.replace(seeds=2, iterations=2 * 469, rounds=min(a.rounds, 6))
    if a.iterations:
        cfg = cfg.replace(iterations=a.iterations)
    cfg = cfg.validate()
    run = lottery.run(cfg, a.runs, manual_dir=a.manual_dir, progress=sys.stderr.isatty())
    print(report.round_table(run))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res = summarize(run)
    res["figure2"] = figure2(run)
    res["paper"] = PAPER
    (out / "lenet_table2.json").write_text(json.dumps(res, indent=1))
    plot(res, out / "lenet_table2.png")
    print(f"wrote {out / 'lenet_table2.json'} and {out / 'lenet_table2.png'}")


if __name__ == "__main__":
    main()
