"""Build ``docs/results/early_tickets.md`` from ``experiments/early_tickets.py``'s JSON files:
each study's figures and tables, with the early-ticket paper's findings beside them.

    python experiments/early_tickets_report.py --results docs/results/early_tickets
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

NAMES = {"lenet_mnist_early": "LeNet-300-100 / MNIST", "conv2_fashion_mnist_early": "Conv-2 / Fashion-MNIST",
         "resnet20_cifar10_early": "ResNet-20 / CIFAR-10"}
# The paper's ResNet-20 / CIFAR-10 numbers (Figure 1, Table 2) for the comparisons below.
PAPER = {
    "ticket_200_200": 91.32, "grid_s_ge_100_v_ge_5": (91.13, 91.77), "v0_row": (89.37, 90.50),
    "one_shot": {20: 90.27, 60: 90.96, 100: 91.54, 120: 91.62, 160: 91.36, 200: 91.32},
    "gradual": {"25-75": 91.01, "50-100": 91.83, "75-125": 92.15, "100-150": 92.25, "125-175": 92.15,
                "150-200": 91.91},
    "hamming_100_200": 0.159, "hamming_180_200": 0.006,
}


def settle_epoch(rates: dict[str, list[float]], tol: float = 0.01) -> int:
    """First epoch from which every layer's would-be pruning rate stays within ``tol`` of its
    value at the last epoch (the paper: "saturate around epoch 100" of 200)."""
    r = np.array(list(rates.values()))  # (layers, epochs+1)
    ok = np.all(np.abs(r - r[:, -1:]) <= tol, axis=0)
    e = len(ok) - 1
    while e > 0 and ok[e - 1]:
        e -= 1
    return e


def section(res: dict, rel: str) -> list[str]:
    cfg, E = res["config"], res["epochs"]
    b = res["baseline"]
    pct = lambda x: f"{100 * x:.2f}"  # noqa: E731
    rate_flag = f" --rate {res['rate']:g}" if "_rate" in res["tag"] else ""
    mode = "quick" if "quick" in res["tag"] else "smoke" if "smoke" in res["tag"] else ""
    lines = [f"## {NAMES.get(res['preset'], res['preset'])}, {res['rate']:.0%} pruned" + (f" ({mode})" if mode else ""),
             "", f"`python experiments/early_tickets.py --preset {res['preset']}" + (f" --{mode}" if mode else "")
             + rate_flag + "`. "
             + ("A smoke run of the recipe at toy size on `synthetic_` arrays of the dataset's shapes (this CPU "
                "cannot download the data nor train it at size): it shows every part runs; its accuracies mean "
                "nothing. " if mode == "smoke" else "")
             + f"Baseline: {cfg['seeds']} seed(s) in one program, {E} epochs of {res['steps_per_epoch']} iterations "
             f"(batch {cfg['batch_size']}, {cfg['optimizer']} lr {cfg['lr']}, lr drops at iterations "
             f"{', '.join(map(str, cfg['lr_drops'])) or 'none'}, weight decay {cfg['weight_decay']:g}); final test "
             f"accuracy {pct(b['test_acc'][-1])}%. Pruning: {res['rate']:.0%} of the pooled weights (global magnitude), "
             f"layers kept whole: {', '.join(res['exclude'])}. Accuracies are final test accuracy (%) after the "
             "network's full training, mean over seeds.", "",
             f"![figures]({rel}/{res['tag']}.png)", ""]
    missing = [k for k in ("grid", "ppr", "memorization", "gradual", "earlybird") if k not in res]
    if missing:  # a study run in sittings (--parts) that has not had all of them yet
        run = [k for k in missing if not (k == "gradual" and "memorization" in missing)]  # memorization runs gradual
        lines += [f"**Not run yet:** {', '.join(missing)}. `python experiments/early_tickets.py --preset "
                  f"{res['preset']}" + (f" --{mode}" if mode else "") + rate_flag + f" --parts {','.join(run)}` "
                  "adds them to this study's results (same baseline, other parts kept).", ""]
    if "grid" in res:
        g = res["grid"]
        acc = 100 * np.asarray(g["final_test_acc"])  # [s][v]
        S, V = g["prune_epochs"], g["rewind_epochs"]
        lines += ["### Figure 1: prune at epoch s, rewind to epoch v", "",
                  "| v \\ s | " + " | ".join(map(str, S)) + " |", "|" + "---|" * (len(S) + 1)]
        for j, v in enumerate(V):
            lines.append(f"| {v} | " + " | ".join(f"{acc[i, j]:.2f}" for i in range(len(S))) + " |")
        ref = acc[S.index(E), V.index(E)] if E in S and E in V else None
        late = [acc[i, j] for i, s in enumerate(S) for j, v in enumerate(V) if s >= E / 2 and v >= 1]
        early_s = [acc[i, j] for i, s in enumerate(S) for j, v in enumerate(V) if s < E / 4 and v >= 1]
        v0 = [acc[i, V.index(0)] for i in range(len(S))] if 0 in V else []
        lines += [""]
        if ref is not None:
            lines.append(f"- The conventional ticket (s = v = {E}, the end of training): {ref:.2f}. Paper (ResNet-20, "
                         f"s = v = 200): {PAPER['ticket_200_200']}.")
        if late:
            lines.append(f"- Cells with s ≥ {E / 2:g} (half of training) and v ≥ 1: {min(late):.2f} … {max(late):.2f}"
                         + (f" (spread around the conventional ticket: {min(late) - ref:+.2f} … {max(late) - ref:+.2f})"
                            if ref is not None else "")
                         + f". Paper, s ≥ 100 and v ≥ 5 of 200: {PAPER['grid_s_ge_100_v_ge_5'][0]} … "
                         f"{PAPER['grid_s_ge_100_v_ge_5'][1]}, all within half a point of 91.32.")
        if early_s and late:
            lines.append(f"- Pruning early (s < {E / 4:g}, v ≥ 1): mean {np.mean(early_s):.2f} vs {np.mean(late):.2f} "
                         "for s ≥ half (the paper: accuracy falls as s drops below 80 of 200).")
        if v0 and late:
            lines.append(f"- Rewinding to θ0 (v = 0): {min(v0):.2f} … {max(v0):.2f} (paper: {PAPER['v0_row'][0]} … "
                         f"{PAPER['v0_row'][1]}, 1–2 points below the v ≥ 5 cells).")
        lines.append("")
    st_e = settle_epoch(b["layer_rate"])
    lines += ["### Figures 2 and 3: mask dynamics", "",
              f"- Per-layer pruning rates that {res['rate']:.0%} global pruning would choose settle (every layer within "
              f"1 point of its final rate) from epoch {st_e} of {E}; the paper: around epoch 100 of 200.",
              "- Final rate per layer: " + ", ".join(f"{k} {100 * v[-1]:.1f}%" for k, v in b["layer_rate"].items()) + "."]
    H = np.asarray(res["hamming"])
    half = max(1, E // 2)
    lines.append(f"- Normalized Hamming distance (fraction of pooled weights on which two masks differ) between the "
                 f"masks of epochs {half} and {E}: {H[half, E]:.3f}; of epochs {E - 1} and {E}: {H[E - 1, E]:.3f}. "
                 f"Paper: 0.159 between epochs 100 and 200, 0.006 between 180 and 200.")
    lines.append("- Distance between consecutive epochs: " + ", ".join(f"{e}→{e + 1}: {H[e, e + 1]:.3f}"
                                                                       for e in range(1, E)) + ".")
    lines.append("")
    if "ppr" in res:
        r = res["ppr"]
        lines += ["### Figure 4: pseudo-prune-then-retrain", "",
                  "A copy of each epoch's weights, pruned, retrained one epoch at a constant lr (fresh optimizer), "
                  f"then tested; baseline = the unpruned run at that epoch, whose own lr is {cfg['lr']:g} before its "
                  "drops (the paper's ResNet-20 trains at 0.1, so there 0.1 is the baseline's lr and 0.01 its first "
                  "drop).", "",
                  "| epoch | baseline | " + " | ".join(f"PPR lr {lr:g}" for lr in r["lrs"]) + " |",
                  "|" + "---|" * (len(r["lrs"]) + 2)]
        for i, e in enumerate(r["epochs"]):
            lines.append(f"| {e} | {pct(b['test_acc'][e])} | " + " | ".join(pct(acc[i]) for acc in r["test_acc"]) + " |")
        lines += ["", "Paper (ResNet-20): with lr 0.1 the PPR accuracy tracks the baseline; with lr 0.01 it rises "
                  "until about epoch 100 and then saturates.", ""]
    if "gradual" in res:
        gr = res["gradual"]
        lines += ["### Table 2: gradual pruning (Zhu & Gupta, 4 mask updates over the window) vs one-shot", "",
                  "| window (epochs) | gradual | one-shot at the window's end (s = v) |", "|---|---|---|"]
        grid = res.get("grid")
        for w, acc in zip(gr["windows"], gr["final_test_acc"]):
            one = ""
            if grid and w[1] in grid["prune_epochs"] and w[1] in grid["rewind_epochs"]:
                one = pct(grid["final_test_acc"][grid["prune_epochs"].index(w[1])][grid["rewind_epochs"].index(w[1])])
            lines.append(f"| {w[0]}–{w[1]} | {pct(acc)} | {one or 'not in the grid'} |")
        lines += ["", "Paper (ResNet-20, 80%): gradual 91.01 … 92.25 (best over epochs 100–150) against one-shot "
                  "90.27 … 91.62.", ""]
    if "memorization" in res:
        m = res["memorization"]
        lines += ["### Figure 5 / Table 1: memorization capacity (random labels)", "",
                  f"Each mask on θ0, trained {m['iterations']} iterations on the first N training images with random "
                  "labels; training accuracy (%) on those N.", "",
                  "| mask | " + " | ".join(f"N = {n}" for n in m["sizes"]) + " |", "|" + "---|" * (len(m["sizes"]) + 1)]
        for lab, accs in zip(m["labels"], m["train_acc"]):
            lines.append(f"| {lab} | " + " | ".join(pct(a) for a in accs) + " |")
        lines += ["", "Paper (ResNet-20): the mask from epoch 20 memorizes less than those from epochs 120 and 200 "
                  "(which match); gradual masks memorize slightly more than one-shot ones (Table 1: 68.83 vs 66.88 "
                  "at 60%).", ""]
    if "earlybird" in res:
        eb = res["earlybird"]
        accs = ", ".join("n/a" if a is None else pct(a) for a in eb["final_test_acc"])
        lines += ["### Early-bird detection", "",
                  f"Rule (You et al.): the first epoch whose {res['rate']:.0%} mask is within {eb['threshold']} "
                  f"(normalized Hamming) of each of the previous {eb['window'] - 1} epochs' masks. Found at epoch(s) "
                  f"{eb['epoch']} of {E} (per seed); that ticket (mask and weights of the found epoch) retrained with "
                  f"the full schedule: {accs}.", ""]
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="docs/results/early_tickets")
    p.add_argument("--out", default="docs/results/early_tickets.md")
    a = p.parse_args()
    d = Path(a.results)
    files = sorted(d.glob("*.json"), key=lambda f: (list(NAMES).index(json.loads(f.read_text())["preset"])
                                                     if json.loads(f.read_text())["preset"] in NAMES else 9, f.name))
    lines = ["# Early winning tickets: the paper vs ltjax", "",
             "Generated by `experiments/early_tickets_report.py` from the JSON that `experiments/early_tickets.py` "
             "wrote on this project's 2-core CPU. The paper's experiments are on ResNet-20 / CIFAR-10 (200 epochs); "
             "the runs here follow its recipe's shape on networks and data this CPU can train, so the comparisons "
             "are of the findings (where the structure emerges, how early tickets rank), stated beside the paper's "
             "numbers, not of the numbers themselves.", ""]
    for f in files:
        lines += section(json.loads(f.read_text()), d.name)
    if not files:
        lines.append("No results yet: run `python experiments/early_tickets.py` first.")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
