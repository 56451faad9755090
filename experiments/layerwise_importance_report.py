"""Build ``docs/results/layerwise_importance.md`` from ``experiments/layerwise_importance.py``'s JSON:
Table 2 of the layerwise-importance paper beside ltjax's numbers, Figures 1/8-10 (per-layer
densities), layer collapse, the weights common to one initialization's tickets (Figure 2), the
partial reinitialization test, the CPU-sized ResNet-20 run and the deep presets' smoke runs.

    python experiments/layerwise_importance_report.py --results docs/results/layerwise_importance
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEEP = {"resnet20_cifar10_ltr": "ResNet-20 / CIFAR-10", "vgg16_cifar10_ltr": "VGG-16 / CIFAR-10",
        "resnet18_tiny_imagenet_ltr": "ResNet-18 / TinyImageNet"}


def _recipe(cfg: dict, rows: list) -> str:
    drops = f", 10x lr drops at iterations {', '.join(f'{d:,}' for d in cfg['lr_drops'])}" if cfg["lr_drops"] else ""
    opt = f"SGD with momentum {cfg['momentum']}" if cfg["optimizer"] == "momentum" else cfg["optimizer"].upper()
    wd = f", weight decay {cfg['weight_decay']:g}" if cfg["weight_decay"] else ""
    excl = f" excluding `{', '.join(cfg['exclude'])}`" if cfg["exclude"] else ""
    return (f"{opt} lr {cfg['lr']}{wd}{drops}, batch {cfg['batch_size']}, {cfg['iterations']:,} iterations per round, "
            f"augmentation `{cfg['augment']}`; global pruning of {cfg['prune_rate']:.0%} per round{excl}, rewind to "
            f"iteration {cfg['rewind_iteration']}, "
            + (f"{len(rows) - 1} pruning rounds" if len(rows) == cfg["rounds"] else
               f"{len(rows) - 1} of {cfg['rounds'] - 1} pruning rounds finished so far"))


def accuracy_table(res: dict, with_paper: bool) -> list[str]:
    """Final test accuracy (%) per score, mean ± std over seeds, at the paper's steps (or every
    round when the run is shorter than the paper's first step)."""
    rows, paper = res["rows"], res["paper"]
    scores = list(rows[0]["scores"])
    by_round = {r["round"]: r for r in rows}
    steps = [s for s in paper["steps"] if s in by_round] if with_paper else [r["round"] for r in rows[1:]]

    def cell(r, s, ref=None):
        m, sd = r["scores"][s]["final_test_acc"]
        return f"{m:.2f} ± {sd:.2f}" + (f" (paper {ref:.2f})" if ref is not None else "")

    lines = ["| step (sparsity) | " + " | ".join(scores) + " |", "|" + "---|" * (len(scores) + 1),
             "| dense | " + " | ".join(cell(by_round[0], s, paper["dense"] if with_paper else None) for s in scores)
             + " |"]
    for step in steps:
        r = by_round[step]
        i = paper["steps"].index(step) if with_paper else None
        lines.append(f"| {step} ({100 * r['sparsity']:.2f}%) | "
                     + " | ".join(cell(r, s, paper[s][i] if with_paper else None) for s in scores) + " |")
    if with_paper:
        missing = [s for s in paper["steps"] if s not in by_round]
        if missing:
            lines += ["", f"Steps {', '.join(map(str, missing))} not reached yet by the run this page was built from."]
        lines += ["", _agreement(by_round, paper, steps, scores)]
    return lines


def _agreement(by_round: dict, paper: dict, steps: list[int], scores: list[str]) -> str:
    """One sentence, computed: how far each reached step is from the paper's numbers."""
    parts = []
    for step in steps:
        i = paper["steps"].index(step)
        d = [by_round[step]["scores"][s]["final_test_acc"][0] - paper[s][i] for s in scores]
        parts.append(f"step {step}: {min(d):+.2f} to {max(d):+.2f}")
    return ("ltjax minus paper, in points, over the scores: " + "; ".join(parts) + ". Where the range is small "
            "the scores' ranking is within run-to-run noise (compare the ± columns); a large gap at the last step "
            "means ltjax's tickets lost less accuracy there than the paper's.")


def collapse_and_common(res: dict) -> list[str]:
    rows = res["rows"]
    scores = list(rows[0]["scores"])
    lines = ["Tickets (of the seeds) with no path from an input to an output unit, per score: "
             + "; ".join(f"{s}: " + (", ".join(f"round {r['round']}: {r['scores'][s]['collapsed']}" for r in rows
                                              if r["scores"][s]["collapsed"]) or "none") for s in scores) + ".", "",
             f"For each seed, the weights that all {len(scores)} tickets (one per score) keep, as a fraction of all "
             "the layer's weights and of the surviving weights (mean over seeds). Equal masks would give 100% of the "
             "surviving weights.", ""]
    if len(rows) < 2:
        return lines
    layers = list(rows[1]["common_across_scores"])
    if len(layers) > 6:  # deep networks: the total and the first and last layers
        layers = [layers[0], *[l for l in layers if l in ("out", "total")]]
    lines += ["| round | sparsity | " + " | ".join(f"{l}: of all / of surviving" for l in layers) + " |",
              "|" + "---|" * (len(layers) + 2)]
    for r in rows[1:]:
        c = r["common_across_scores"]
        lines.append(f"| {r['round']} | {100 * r['sparsity']:.2f}% | "
                     + " | ".join(f"{100 * c[l]['of_all']:.2f}% / {100 * c[l]['of_surviving']:.1f}%" for l in layers)
                     + " |")
    return lines


def figure2_table(res: dict) -> list[str]:
    f2 = res["figure2"]
    n_scores = len(res["rows"][0]["scores"])
    lines = ["Per connection, the std of its trained weight over the rounds it survived and the number of sign "
             "changes between consecutive rounds; \"overlapping\" = kept in the last round by all "
             f"{n_scores} tickets of its seed. n: connections per seed (mean over seeds); std and flips: mean over "
             "connections, then over the seeds that have any.", "",
             "| score | layer | overlapping: n, mean std, flipped | non-overlapping: n, mean std, flipped |",
             "|---|---|---|---|"]
    for s, per_layer in f2.items():
        for layer, g in per_layer.items():
            o, n = g["overlapping"], g["non-overlapping"]
            lines.append(f"| {s} | {layer} | {_group(o)} | {_group(n)} |")
    return lines


def _group(g: dict) -> str:
    if not g["n"]:
        return "none"
    n = f"{g['n']:,.0f}" if g["n"] >= 10 else f"{g['n']:.2f}"  # a mean over seeds: small ones keep decimals
    return f"{n}, {g['mean_std']:.4f}, {100 * g['flipped_fraction']:.2f}%"


def partial_reinit_table(p: dict) -> list[str]:
    lines = [f"θ0 kept on the connections all tickets of a seed share at round {p['round']} "
             f"({100 * p['sparsity']:.2f}% sparsity), the rest redrawn from the same Kaiming normal; LTR rerun to round "
             f"{p['round']} with every score. Kept = connections whose θ0 was kept; survived = those the new ticket "
             "keeps at that round; expected = the layer's density, what a random choice of the same size would "
             "keep; change = survived / expected − 1 (the paper reports +8.5% … +480% on ResNet-18).", "",
             "| score | final test acc (%): partial reinit / original | layer | kept | survived | expected | change |",
             "|---|---|---|---|---|---|---|"]
    for s, d in p["scores"].items():
        acc = f"{d['final_test_acc'][0]:.2f} / {d['source_final_test_acc']:.2f}"
        for i, (layer, v) in enumerate(d["layers"].items()):
            change = v["fraction"] / v["expected"] - 1 if v["expected"] else float("nan")
            lines.append(f"| {s if i == 0 else ''} | {acc if i == 0 else ''} | {layer} | {v['common']:,.0f} | "
                         f"{100 * v['fraction']:.1f}% | {100 * v['expected']:.2f}% | {100 * change:+.0f}% |")
    changes = [v["fraction"] / v["expected"] - 1 for d in p["scores"].values() for v in d["layers"].values()
               if v["expected"] and v["common"]]
    gaps = [d["final_test_acc"][0] - d["source_final_test_acc"] for d in p["scores"].values()]
    if changes:
        lines += ["", f"Across scores and layers the kept connections survive {100 * min(changes):+.0f}% … "
                      f"{100 * max(changes):+.0f}% more often than a random choice of the layer's size would "
                      f"({'all above' if min(changes) > 0 else 'not all above'} chance); the partially reinitialized "
                      f"tickets' final test accuracy differs from the original tickets' by {min(gaps):+.2f} … "
                      f"{max(gaps):+.2f} points."]
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="docs/results/layerwise_importance")
    p.add_argument("--out", default="docs/results/layerwise_importance.md")
    a = p.parse_args()
    d = Path(a.results)
    load = lambda name: json.loads((d / name).read_text()) if (d / name).exists() else None  # noqa: E731
    rel = d.name
    lines = ["# Layerwise importance scores for LTR: the paper vs ltjax", "",
             "Generated by `experiments/layerwise_importance_report.py` from the JSON that "
             "`experiments/layerwise_importance.py` wrote on this project's 2-core CPU. Accuracy is final test "
             "accuracy (%) after each round's full training, mean ± std over seeds, beside the paper's \"top-1 "
             "accuracy\" averaged over 3 runs. Sparsity = fraction of the prunable weights pruned.", ""]
    res = load("lenet_table2.json")
    if res:
        cfg = res["config"]
        lines += ["## LeNet-300-100 / MNIST, Table 2(a)", "",
                  f"`python experiments/layerwise_importance.py`: {len(cfg['scores'])} scores × {cfg['seeds']} seeds = "
                  f"{len(cfg['scores']) * cfg['seeds']} tickets in one vmapped program (the tickets of a seed share θ0 "
                  f"and data order); OpenLTH's recipe of Appendix A: {_recipe(cfg, res['rows'])}.", "",
                  *accuracy_table(res, True), "",
                  f"![Table 2(a) and Figure 1]({rel}/lenet_table2.png)", "",
                  f"![Per-layer densities]({rel}/lenet_table2_layers.png)", "",
                  "### Layer collapse and weights common to one initialization's tickets", "",
                  *collapse_and_common(res), "",
                  "### Weight dynamics of overlapping vs non-overlapping connections (Figure 2)", "",
                  *figure2_table(res), ""]
    pr = load("lenet_table2_partial_reinit.json")
    if pr:
        lines += ["### Partial reinitialization test", "",
                  f"`python experiments/layerwise_importance.py --partial-reinit {pr['round']}`.", "",
                  *partial_reinit_table(pr), ""]
    cpu = load("resnet20_fashion_mnist_cpu.json")
    if cpu:
        cfg = cpu["config"]
        lines += ["## ResNet-20 / Fashion-MNIST at CPU scale", "",
                  "`python experiments/layerwise_importance.py --preset resnet20_cifar10_ltr --cpu-fashion`: the "
                  "ResNet-20 recipe (batch norm, SGD momentum, weight decay, lr drops, pad-crop-flip, rewinding) on "
                  "real Fashion-MNIST, shortened to fit this CPU: "
                  f"{len(cfg['scores'])} scores × {cfg['seeds']} seed, {_recipe(cfg, cpu['rows'])}. Training is "
                  f"{cfg['iterations'] * cfg['batch_size'] / 60000:.2f} epochs per round (paper, CIFAR-10: 160), so "
                  "the numbers show the machinery on a deep network with batch norm, not the paper's accuracies.", "",
                  *accuracy_table(cpu, False), "",
                  f"![Per-layer densities]({rel}/resnet20_fashion_mnist_cpu_layers.png)", "",
                  *collapse_and_common(cpu), ""]
    lines += ["## ResNet-20, VGG-16 (CIFAR-10) and ResNet-18 (TinyImageNet): scripts for a GPU or TPU", "",
              "The paper's recipes are presets; the full studies are one command each (below). This CPU cannot "
              "download CIFAR-10 or TinyImageNet nor train them at size, so each was smoke-tested here on "
              "`synthetic_<dataset>` arrays of the real shapes (`--smoke`: 1 seed, batch 16, 8 iterations, rewind "
              "to 4, 2 pruning rounds; accuracies meaningless).", "",
              "| preset | paper | command | smoke run here |", "|---|---|---|---|"]
    for preset, name in DEEP.items():
        smoke = load(f"{preset}_smoke.json")
        got = (f"{len(smoke['rows'])} rounds of {len(smoke['config']['scores'])} tickets, "
               f"{len(smoke['rows'][0]['scores'][smoke['config']['scores'][0]]['layer_density'])} prunable layers, "
               f"density after round {len(smoke['rows']) - 1}: {100 * (1 - smoke['rows'][-1]['sparsity']):.1f}%"
               if smoke else "not run")
        lines.append(f"| `{preset}` | {name}, Table {_table(preset)} | "
                     f"`python experiments/layerwise_importance.py --preset {preset}` | {got} |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


def _table(preset: str) -> str:
    from layerwise_importance import PAPER  # noqa: E402  (run from the repository root or experiments/)

    return PAPER[preset]["table"]


if __name__ == "__main__":
    main()
