"""Layerwise importance scores for lottery ticket rewinding (the layerwise-importance paper):
Table 2, Figures 1/8-10 (per-layer densities), Figure 2 (weight dynamics of the connections
one initialization's tickets share) and the partial reinitialization test.

One study: the five scores of Table 2 (magnitude, L1, L2, softmax, min-max) × 3 seeds =
15 tickets in one vmapped program (the tickets of a seed share θ0 and data order), with the
recipe of Appendix A for the chosen preset. Writes, per round and score: sparsity, final test
accuracy (mean ± std over seeds), per-layer densities, layer collapse; across the tickets of
each seed, the weights all of them keep; and the paper's numbers beside them.

    python experiments/layerwise_importance.py --quick          # LeNet-300-100 / MNIST, minutes
    python experiments/layerwise_importance.py                  # Table 2(a) in full (hours on 2 CPU cores)
    python experiments/layerwise_importance.py --partial-reinit 15   # then: the partial reinitialization test
    python experiments/layerwise_importance.py --preset resnet20_cifar10_ltr        # Table 2(b): GPU/TPU
    python experiments/layerwise_importance.py --preset resnet18_tiny_imagenet_ltr  # Table 2(c): GPU/TPU
    python experiments/layerwise_importance.py --preset vgg16_cifar10_ltr           # Table 2(d): GPU/TPU
    python experiments/layerwise_importance.py --preset resnet20_cifar10_ltr --smoke  # synthetic arrays, minutes
    python experiments/layerwise_importance.py --preset resnet20_cifar10_ltr --cpu-fashion  # ResNet-20 on
                                                 # Fashion-MNIST sized for a CPU (about an hour on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import jax
import numpy as np

from ltjax import analysis, lottery, presets, report, store
from ltjax import masks as M

SCORES = ("magnitude", "l1", "l2", "softmax", "minmax")
# The paper's Table 2, per preset: average top-1 accuracy (%) over 3 runs, "dense" then one
# value per pruning step in "steps".
PAPER = {
    "lenet_mnist_openlth": {
        "table": "2(a)", "steps": (5, 10, 15, 20, 24), "dense": 98.11,
        "magnitude": (98.00, 98.08, 97.94, 97.23, 90.62),
        "l1": (98.12, 98.15, 98.12, 97.44, 90.89),
        "l2": (98.04, 98.06, 97.95, 97.47, 91.05),
        "softmax": (98.00, 98.05, 97.90, 97.33, 91.29),
        "minmax": (98.02, 98.04, 97.77, 97.41, 91.82),
    },
    "resnet20_cifar10_ltr": {
        "table": "2(b)", "steps": (5, 10, 15, 20, 25, 30, 35, 40), "dense": 91.67,
        "magnitude": (92.01, 90.90, 85.59, 77.07, 63.36, 45.66, 22.58, 12.87),
        "l1": (91.57, 90.56, 84.76, 76.31, 63.40, 45.36, 21.60, 10.00),
        "l2": (91.65, 90.86, 86.28, 76.68, 62.78, 43.65, 19.59, 12.45),
        "softmax": (90.15, 87.75, 84.00, 76.37, 63.07, 38.42, 17.75, 12.29),
        "minmax": (91.64, 90.51, 83.28, 74.36, 50.17, 31.50, 14.62, 13.34),
    },
    "resnet18_tiny_imagenet_ltr": {
        "table": "2(c)", "steps": (5, 10, 15, 20, 25, 30, 35, 40), "dense": 49.53,
        "magnitude": (49.99, 49.98, 48.72, 46.36, 38.54, 24.56, 13.56, 4.62),
        "l1": (50.96, 50.84, 49.76, 47.58, 37.37, 25.12, 14.03, 6.48),
        "l2": (50.45, 50.49, 49.41, 47.26, 37.90, 25.88, 15.30, 6.83),
        "softmax": (50.96, 50.69, 45.30, 40.48, 32.51, 21.67, 10.16, 4.69),
        "minmax": (50.38, 50.24, 47.77, 43.49, 34.23, 23.34, 12.74, 5.31),
    },
    "vgg16_cifar10_ltr": {
        "table": "2(d)", "steps": (5, 10, 15, 20, 25, 30, 35), "dense": 93.52,
        "magnitude": (93.45, 93.75, 93.69, 93.53, 91.88, 51.53, 10.00),
        "l1": (93.57, 93.78, 93.76, 93.24, 90.94, 83.70, 40.99),
        "l2": (93.69, 93.57, 93.66, 93.03, 91.48, 84.03, 29.54),
        "softmax": (93.49, 64.99, 64.68, 63.72, 60.66, 56.58, 24.21),
        "minmax": (93.76, 93.67, 93.47, 92.83, 91.81, 33.95, 14.38),
    },
}
TABLE_STEPS = PAPER["lenet_mnist_openlth"]["steps"]
LTR_PRESETS = tuple(PAPER)


def study_config(preset: str, *, quick=False, smoke=False, cpu_fashion=False, seeds=3, rounds=None,
                 iterations=None):
    """The study's configuration and the tag its results are written under."""
    cfg = presets.get(preset).replace(scores=SCORES, seeds=seeds)
    lenet = preset == "lenet_mnist_openlth"
    cfg = cfg.replace(rounds=25 if lenet else cfg.rounds)
    tag = "lenet_table2" if lenet else preset
    if quick and lenet:
        cfg, tag = cfg.replace(seeds=2, iterations=2 * 469, rounds=6), tag + "_quick"
    elif quick or smoke:
        # the whole recipe (batch norm, momentum, drops, augmentation, rewinding) at toy size,
        # on random arrays of the real dataset's shapes
        cfg = cfg.replace(dataset="synthetic_" + cfg.dataset, seeds=1, batch_size=16, iterations=8, eval_every=4,
                          rewind_iteration=4, lr_drops=(6,), rounds=3)
        tag += "_smoke"
    if cpu_fashion:
        if preset != "resnet20_cifar10_ltr":
            raise SystemExit("--cpu-fashion is the ResNet-20 run: use it with --preset resnet20_cifar10_ltr")
        # ResNet-20 at ~1 ticket-step/s on 2 CPU cores: the three scores the paper's Figure 2 and
        # partial reinitialization use, one seed, 300 iterations at batch 64 per round (evaluation on
        # the 10k test images every 100), rewinding to iteration 100, lr drops at 50% and 75%.
        cfg = cfg.replace(dataset="fashion_mnist", scores=("magnitude", "l1", "l2"), seeds=1, batch_size=64,
                          iterations=300, eval_every=100, rewind_iteration=100, lr_drops=(150, 225), rounds=4)
        tag = "resnet20_fashion_mnist_cpu"
    if rounds:
        cfg = cfg.replace(rounds=rounds)
    if iterations:
        cfg = cfg.replace(iterations=iterations)
    return cfg.validate(), tag


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
    masks_by_round = [dict(M.leaves_with_names(rd.mask)) for rd in run.rounds]
    params_by_round = [dict(M.leaves_with_names(jax.tree.map(lambda m, p: None if m is None else p, rd.mask,
                                                             rd.params, is_leaf=lambda x: x is None)))
                       for rd in run.rounds]
    for layer in layers:
        masks_r = [np.asarray(m[layer]) for m in masks_by_round]
        params_r = [np.asarray(p[layer]) for p in params_by_round]
        final = masks_r[-1]
        for s_i, s in enumerate(cfg.scores):
            acc = []
            for seed in range(cfg.seeds):
                t = s_i * cfg.seeds + seed
                common = np.all([final[j * cfg.seeds + seed] for j in range(len(cfg.scores))], axis=0)
                groups = {"overlapping": common, "non-overlapping": final[t] & ~common}
                acc.append(analysis.weight_dynamics([p[t] for p in params_r], [m[t] for m in masks_r], groups))
            with warnings.catch_warnings():  # a group empty in every seed averages to nan
                warnings.simplefilter("ignore", RuntimeWarning)
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
    layers = layers if len(layers) <= 4 else []  # deep networks: per-layer densities in plot_layers
    fig, axes = plt.subplots(1, 1 + len(layers), figsize=(4.5 * (1 + len(layers)), 4), squeeze=False)
    axes = axes[0]
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
    fig.suptitle(f"Layerwise importance scores, {res['config']['model']} / {res['config']['dataset']} "
                 f"(mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def partial_reinit(cfg, runs: str, round_: int, manual_dir=None, ticket_chunk=None) -> dict:
    """The partial reinitialization test (sec. 4): θ0 kept on the connections all tickets of a
    seed share at round ``round_`` of the finished study, the rest redrawn from the same
    initializer; LTR rerun to that round with every score; per layer, how many of the kept
    connections each new ticket keeps, against the layer's density (what a random choice of
    the same size would keep)."""
    src = store.load_run(store.run_dir(cfg, runs))
    if len(src.rounds) <= round_:
        raise SystemExit(f"the study in {src.path} has rounds 0..{len(src.rounds) - 1}; it needs round {round_} "
                         f"for --partial-reinit {round_} (run it first)")
    pcfg = cfg.replace(partial_reinit_from=str(src.path), partial_reinit_round=round_, rounds=round_ + 1).validate()
    run = lottery.run(pcfg, runs, manual_dir=manual_dir, progress=sys.stderr.isatty(), ticket_chunk=ticket_chunk)
    keep = lottery.common_mask(cfg, src.rounds[round_].mask)
    final = run.rounds[round_]
    names = cfg.ticket_scores()
    out = {"round": round_, "sparsity": float(1 - np.mean(final.metrics["density"])), "source": str(src.path),
           "run_dir": str(run.path), "scores": {}}
    for s in cfg.scores:
        per_seed = []
        for t in [i for i, n in enumerate(names) if n == s]:
            one = lambda tree: jax.tree.map(lambda a: np.asarray(a)[t], tree)  # noqa: E731
            per_seed.append(analysis.survival(one(keep), one(final.mask), cfg.exclude))
        acc = 100 * np.asarray(final.metrics["final_test_acc"])[[n == s for n in names]]
        out["scores"][s] = {
            "final_test_acc": (float(acc.mean()), float(acc.std())),
            "source_final_test_acc": float(100 * np.mean(np.asarray(src.rounds[round_].metrics["final_test_acc"])[
                [n == s for n in names]])),
            "layers": {layer: {k: float(np.mean([p[layer][k] for p in per_seed]))
                               for k in ("common", "survived", "fraction", "expected")} for layer in per_seed[0]},
        }
    return out


def plot_layers(res: dict, path: Path, steps) -> None:
    """Figures 1, 8-10: per-layer density at chosen pruning steps, one line per score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {r["round"]: r for r in res["rows"]}
    steps = [s for s in steps if s in rows] or [max(rows)]
    scores = list(res["rows"][0]["scores"])
    layers = analysis.display_order(list(res["rows"][0]["scores"][scores[0]]["layer_density"]))
    lowest = min(r["scores"][s]["layer_density"][l] for r in rows.values() for s in scores for l in layers)
    fig, axes = plt.subplots(len(steps), 1, figsize=(max(6, 0.45 * len(layers) + 2), 2.6 * len(steps)), squeeze=False)
    for ax, step in zip(axes[:, 0], steps):
        r = rows[step]
        for s in scores:
            ax.plot(range(len(layers)), [100 * r["scores"][s]["layer_density"][l] for l in layers], marker="o", ms=3,
                    label=s)
        if lowest < 0.05:
            ax.set_yscale("log")
        ax.set_ylabel("density (% remaining)")
        ax.set_title(f"step {step}: global sparsity {100 * r['sparsity']:.2f}%", fontsize=9)
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers if step == steps[-1] else [], rotation=90, fontsize=7)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=len(scores))
    fig.suptitle(f"Per-layer density during LTR ({res['config']['model']} / {res['config']['dataset']}, mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="lenet_mnist_openlth", choices=LTR_PRESETS)
    p.add_argument("--quick", action="store_true",
                   help="LeNet: 2 seeds, 2 epochs per round, 6 rounds; deep presets: the same as --smoke")
    p.add_argument("--smoke", action="store_true",
                   help="the preset's whole recipe at toy size on synthetic arrays of the dataset's shapes")
    p.add_argument("--cpu-fashion", action="store_true",
                   help="ResNet-20 on Fashion-MNIST, shortened to fit a 2-core CPU (see study_config)")
    p.add_argument("--partial-reinit", type=int, metavar="ROUND",
                   help="after the study: the partial reinitialization test from ROUND's shared connections")
    p.add_argument("--report-only", action="store_true",
                   help="write the JSON and figures from the rounds the study has finished so far, without training "
                        "(works while the study runs in another process)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rounds", type=int, help="including the dense round 0 (default: the preset's; LeNet 25)")
    p.add_argument("--iterations", type=int, help="per round (default: the preset's)")
    p.add_argument("--ticket-chunk", type=int, help="train the tickets in sequential chunks of this many")
    p.add_argument("--out", default="docs/results/layerwise_importance")
    p.add_argument("--runs", default="runs")
    p.add_argument("--manual-dir")
    a = p.parse_args()
    cfg, tag = study_config(a.preset, quick=a.quick, smoke=a.smoke, cpu_fashion=a.cpu_fashion, seeds=a.seeds,
                            rounds=a.rounds, iterations=a.iterations)
    # Conv nets on a CPU train one ticket at a time (XLA:CPU's vmapped convolutions are slow)
    on_cpu = jax.default_backend() == "cpu" and a.preset != "lenet_mnist_openlth"
    chunk = a.ticket_chunk or (1 if on_cpu else None)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.partial_reinit is not None:
        res = partial_reinit(cfg, a.runs, a.partial_reinit, a.manual_dir, chunk)
        (out / f"{tag}_partial_reinit.json").write_text(json.dumps(res, indent=1))
        print(f"wrote {out / f'{tag}_partial_reinit.json'}")
        return
    if a.report_only:
        run = store.load_run(store.run_dir(cfg, a.runs))
        if not run.rounds:
            raise SystemExit(f"{run.path} has no finished round yet")
    else:
        run = lottery.run(cfg, a.runs, manual_dir=a.manual_dir, progress=sys.stderr.isatty(), ticket_chunk=chunk)
    print(report.round_table(run))
    res = summarize(run)
    res["figure2"] = figure2(run)
    res["paper"] = PAPER[a.preset]
    res["preset"], res["tag"] = a.preset, tag
    (out / f"{tag}.json").write_text(json.dumps(res, indent=1))
    plot(res, out / f"{tag}.png")
    plot_layers(res, out / f"{tag}_layers.png", PAPER[a.preset]["steps"])
    print(f"wrote {out / f'{tag}.json'}, {tag}.png and {tag}_layers.png")


if __name__ == "__main__":
    main()
