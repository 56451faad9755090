"""Build ``docs/results/renda2020_lr_rewinding.md`` from the JSON that
``experiments/renda2020_lr_rewinding.py`` wrote, with the paper's claims beside ltjax's numbers.

    python experiments/renda2020_lr_rewinding_report.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

NAMES = {"rewind": "weight rewinding", "lr_rewind": "learning-rate rewinding", "finetune": "fine-tuning"}
CLAIMS = [
    ("slides (`shared/seeds/002_…`, \"Other Procedures\")", "Learning rate rewinding outperforms weight rewinding."),
    ("Renda, Frankle & Carbin 2020, abstract", "Both rewinding techniques outperform fine-tuning."),
]

# Further networks run by the same script (``--preset``), with what their runs shortened.
FURTHER = {
    "conv2_fashion_mnist_early": (
        "Conv-2 / Fashion-MNIST (small CPU scale)",
        "The preset trains 4,580 iterations (5 epochs of 916) with 10x drops at 2,748 and 3,664; here far "
        "fewer (above), with the preset's 80% pruning per round, so round r keeps 20%^r of the weights. Its "
        "5,000-image validation split selects nothing. So short a round leaves the dense network far from "
        "trained, so here the strategies that keep trained weights also gain from training longer in all: a "
        "direction at best.",
    ),
}


def cell(r: dict) -> str:
    if r["mean"] is None:
        return "diverged"
    spread = f" ({100 * r['min']:.2f}–{100 * r['max']:.2f})" if r["max"] > r["min"] else ""
    return f"{100 * r['mean']:.2f}{spread}"


def verdict(rows: dict, a: str, b: str) -> tuple[str, list[float]]:
    """``a`` vs ``b`` over the pruned rounds: mean gap (points), wins, and where it is decided."""
    gaps = [100 * (x["mean"] - y["mean"]) for x, y in zip(rows[a][1:], rows[b][1:])
            if x["mean"] is not None and y["mean"] is not None]
    if not gaps:
        return "no pruned round yet", gaps
    wins = sum(g > 0 for g in gaps)
    # the runs share each seed's θ0 and data order, so seed s of one strategy pairs with seed s of another
    pairs = [x - y for ra, rb in zip(rows[a][1:], rows[b][1:])
             for x, y in zip(ra["final_test_acc"], rb["final_test_acc"])]
    return (f"{NAMES[a]} − {NAMES[b]}: {np.mean(gaps):+.2f} points on average over {len(gaps)} pruned rounds "
            f"(ahead in {wins}, behind in {sum(g < 0 for g in gaps)}), {gaps[-1]:+.2f} at the sparsest; "
            f"per seed, ahead in {sum(d > 0 for d in pairs)} of {len(pairs)} (round, seed) pairs"), gaps


def table(rows: dict, n: int, png: str) -> list[str]:
    out = ["| round | % remaining | rewind | lr_rewind | finetune | lr_rewind − rewind | finetune − rewind |",
           "|---|---|---|---|---|---|---|"]
    for i in range(n):
        w, l, f = rows["rewind"][i], rows["lr_rewind"][i], rows["finetune"][i]
        gap = lambda x: "—" if i == 0 or x["mean"] is None or w["mean"] is None else f"{100 * (x['mean'] - w['mean']):+.2f}"  # noqa: E731
        out.append(f"| {i} | {100 * w['density']:.2f} | {cell(w)} | {cell(l)} | {cell(f)} | {gap(l)} | {gap(f)} |")
    return out + ["", f"![accuracy vs sparsity]({png})", ""]


def holds(rows: dict, n: int, seeds: int) -> list[str]:
    out = ["**Does it hold here?**", ""]
    for a, b in (("lr_rewind", "rewind"), ("rewind", "finetune"), ("lr_rewind", "finetune")):
        out.append(f"- {verdict(rows, a, b)[0]}.")
    gaps = verdict(rows, "lr_rewind", "rewind")[1]
    spread = [100 * (r["max"] - r["min"]) for v in rows.values() for r in v[1:n] if r["mean"] is not None]
    if gaps:
        ok = np.mean(gaps) > 0 and sum(g > 0 for g in gaps) > sum(g < 0 for g in gaps)
        out += ["", f"**\"Learning rate rewinding outperforms weight rewinding\" {'holds' if ok else 'does not hold'} "
                f"here** ({seeds} seed{'s' if seeds != 1 else ''}, {n - 1} pruned rounds down to "
                f"{100 * rows['rewind'][n - 1]['density']:.1f}% remaining)"
                + (f": the gaps above are to be read against the spread between seeds, {np.median(spread):.2f} "
                   "points (median over rounds and strategies of max − min)." if seeds > 1 else
                   "; one seed, so no spread between seeds to read the gaps against.")]
    return out + [""]


def section(res: dict, png: str, label: str, note: str) -> list[str]:
    """A further network's results: its settings, table and verdict (the budget rule as above)."""
    c, rows = res["config"], {k: v["rows"] for k, v in res["strategies"].items()}
    n = min(len(v) for v in rows.values())
    drops = ", ".join(f"{t:,}" for t in c["lr_drops"]) or "none"
    secs = {k: sum(r["seconds"] for r in v) for k, v in rows.items()}
    return [f"## {label}", "",
            f"Preset `{res['preset']}` at CPU scale: {c['seeds']} seed(s), **{c['iterations']:,} iterations per round** "
            f"({c['iterations'] - c['rewind_iteration']:,} retraining iterations per round r ≥ 1 for every strategy), "
            f"{c['optimizer']} at lr {c['lr']} × {c['lr_drop_factor']} at iteration(s) {drops}, k = "
            f"{c['rewind_iteration']}, {c['scope']} magnitude pruning {100 * c['prune_rate']:.0f}% per round, "
            f"{n} of {c['rounds']} rounds done. {note} Accuracy: test accuracy at the end of each round's retraining.",
            "", *table(rows, n, png), *holds(rows, n, c["seeds"]),
            "Training time: " + ", ".join(f"`{k}` {v / 60:.0f} min" for k, v in secs.items()) + ".", ""]


def page(res: dict, png: str, extra: list[str] = ()) -> str:
    c = res["config"]
    s = res["strategies"]
    rows = {k: v["rows"] for k, v in s.items()}
    n = min(len(v) for v in rows.values())
    budget = c["iterations"] - c["rewind_iteration"]
    secs = {k: sum(r["seconds"] for r in v) for k, v in rows.items()}
    drops = ", ".join(f"{t:,}" for t in c["lr_drops"]) or "none"
    out = [
        "# Weight rewinding vs learning-rate rewinding vs fine-tuning: Renda et al. 2020 vs ltjax", "",
        "Generated by `experiments/renda2020_lr_rewinding_report.py` from the JSON that "
        "`experiments/renda2020_lr_rewinding.py` wrote on this project's shared 2-core CPU. Paper: Renda, Frankle "
        "& Carbin, \"Comparing Rewinding and Fine-tuning in Neural Network Pruning\" (ICLR 2020).", "",
        "## The claims", "",
        *[f"- {who}: *{what}*" for who, what in CLAIMS], "",
        "The paper's networks are ResNets, VGG and GNMT on CIFAR-10, ImageNet and WMT16, each trained on a "
        "step (or warmup-then-decay) schedule; it has no LeNet / MNIST result, so there is no number to set "
        "beside the ones below, only the direction of the gaps.", "",
        "## The three restarts, at one retraining budget", "",
        f"Every round r ≥ 1 prunes the previous round's trained weights (IMP) and then retrains for "
        f"**{budget:,} iterations** (`iterations − rewind_iteration` = {c['iterations']:,} − {c['rewind_iteration']}), "
        f"on the same batches (iterations {c['rewind_iteration']:,} … {c['iterations'] - 1:,} of each seed's data "
        "order), with a fresh optimizer:", "",
        "| strategy | starts from | learning rate |", "|---|---|---|",
        f"| `rewind` | θk ⊙ m (k = {c['rewind_iteration']}) | the schedule from iteration k |",
        "| `lr_rewind` | the previous round's trained weights ⊙ m | the schedule from iteration k |",
        f"| `finetune` | the previous round's trained weights ⊙ m | the schedule's last ({c['lr']} × "
        f"{c['lr_drop_factor']}^{len(c['lr_drops'])}), constant |", "",
        "Round 0 (dense) trains the full schedule from θ0 and is the same network for all three.", "",
        "## Settings", "",
        f"Preset `{res['preset']}` (Kaiming normal LeNet-300-100, SGD, batch {c['batch_size']}, global magnitude "
        f"pruning {100 * c['prune_rate']:.0f}% per round of all layers but the output, no validation split) at CPU "
        f"scale: {c['seeds']} seeds (vmapped in one program per strategy), **{c['iterations']:,} iterations per "
        f"round** (the recipe: 18,760), learning rate {c['lr']} × {c['lr_drop_factor']} at iteration(s) {drops} "
        "(the recipe's rate is constant, under which `lr_rewind` and `finetune` would be the same computation), "
        f"k = {c['rewind_iteration']} (the recipe's), {n} of {c['rounds']} rounds done (the recipe: 20). "
        f"Evaluation every {c['eval_every']} iterations.", "",
        "**Accuracy** is the test accuracy (10,000 MNIST test images) at the end of each round's retraining, the "
        "mean over seeds with the range (min–max) in brackets; nothing is selected on the test set. "
        "% remaining counts all prunable weights (the output layer, never pruned, included).", "",
        "## LeNet-300-100 / MNIST", "",
    ]
    out += table(rows, n, png) + holds(rows, n, c["seeds"])
    k = c["rewind_iteration"]
    out += ["Read with care:", "",
            *(["- With k = 0 (the recipe's), weight rewinding is resetting to θ0 (Frankle & Carbin 2018) and "
               "learning-rate rewinding retrains on the whole schedule for the original training time, as the "
               "paper's proposed pruning algorithm does; the "
               "paper's weight rewinding rewinds to an early k > 0, which this study did not run."] if k == 0 else []),
            "- Equal budgets are per round: a network kept by `lr_rewind` or `finetune` in round r has been "
            f"trained for {c['iterations']:,} + r × {budget:,} iterations in all, one rewound by `rewind` for "
            f"{budget:,} from θk, as in the paper.",
            f"- {c['seeds']} seeds, one dataset, one small network: the gaps are a direction, not an estimate of the "
            "paper's effect sizes."]
    out += ["", "Training time on this machine (sum of the rounds' seconds, both seeds in one program; the CPU "
            "was shared with other jobs, so these are upper bounds): "
            + ", ".join(f"`{k}` {v / 60:.0f} min" for k, v in secs.items()) + ".", "", *extra]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--results", default="docs/results/renda2020_lr_rewinding")
    p.add_argument("--preset", default="lenet_mnist_openlth")
    p.add_argument("--out", default="docs/results/renda2020_lr_rewinding.md")
    a = p.parse_args(argv)
    res = json.loads((Path(a.results) / f"{a.preset}.json").read_text())
    out = Path(a.out)
    png = Path(a.results) / f"{a.preset}.png"
    rel = lambda p: str(p.relative_to(out.parent)) if p.is_relative_to(out.parent) else str(p)  # noqa: E731
    extra = []
    for preset, (label, note) in FURTHER.items():
        f = Path(a.results) / f"{preset}.json"
        if f.exists():
            extra += section(json.loads(f.read_text()), rel(f.with_suffix(".png")), label, note)
        else:
            extra += [f"## {label}", "", "Not run yet: on this shared CPU one round of 916 iterations took over 7 "
                      "minutes, too long for the session that made this page. To run it: `python "
                      f"experiments/renda2020_lr_rewinding.py --preset {preset} --seeds 1 --iterations 916 "
                      "--lr-drops 687 --eval-every 229 --rounds 4`, then this report (or a shorter run: the "
                      "section reports whatever settings its JSON records).", ""]
    out.write_text(page(res, rel(png), extra))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
