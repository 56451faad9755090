"""Build ``docs/results/frankle2020_lmc.md`` and its figures from the JSON that
``experiments/frankle2020_lmc.py`` wrote, with the paper's claims beside ltjax's numbers.

    python experiments/frankle2020_lmc_report.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

STABLE = 0.02  # the paper calls a network stable when its error barrier is within 2%

CLAIMS = {
    "dense_lenet": "LeNet is stable at initialization: instability ≈ 0 for every k, k = 0 included "
                   "(sec. 3, Figure 3).",
    "dense_bn": "Standard vision networks with batch norm (ResNet-20, VGG-16 on CIFAR-10) are unstable at "
                "initialization and become stable early in training (ResNet-20 at k ≈ 2,000 of 63,000 "
                "iterations, about 3%) (sec. 3, Figure 3).",
    "imp_lenet": "IMP subnetworks are matching only when they are stable; for LeNet, IMP with reset to θ0 "
                 "finds subnetworks that are stable and matching down to about 3.5% density, while randomly "
                 "pruned or reinitialized ones are not (sec. 4, Figures 4–5). Rewinding to an early k makes "
                 "the larger networks' IMP subnetworks stable and matching (sec. 5).",
}


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def dense_table(s: dict) -> list[str]:
    rows = ["| k | test instability (points) | train instability | test error at α = 0 / 1 (%) | max test "
            "error on the path (%) | stable (< 2 points) |", "|---|---|---|---|---|---|"]
    for i, k in enumerate(s["k"]):
        e = s["test_error"][i]
        rows.append(f"| {k} | {pct(s['test_instability'][i])} | {pct(s['train_instability'][i])} | "
                    f"{pct(e[0])} / {pct(e[-1])} | {pct(max(e))} | "
                    f"{'yes' if s['test_instability'][i] < STABLE else 'no'} |")
    return rows


def imp_table(res: dict) -> list[str]:
    names = [n for n in ("reset", "rewind", "random") if n in res]
    head = " | ".join(f"{n}: instability | {n}: test acc" for n in names)
    rows = [f"| round | % remaining | {head} |", "|---|---|" + "---|---|" * len(names)]
    for i, r in enumerate(res["reset"]["rounds"]):
        cells = []
        for n in names:
            s = res[n]
            j = s["rounds"].index(r)
            cells.append(f"{pct(s['test_instability'][j])} | {pct(s['copies_test_acc'][j])}")
        rows.append(f"| {r} | {100 * res['reset']['density'][i]:.1f} | " + " | ".join(cells) + " |")
    return rows


def plot(res: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    dense = [(n, t) for n, t in (("dense_lenet", "LeNet-300-100 / MNIST"), ("dense_bn", "ResNet-8 (BN) / "
                                                                             "Fashion-MNIST")) if n in res]
    if dense:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for n, title in dense:
            s = res[n]
            x = [max(k, 1) for k in s["k"]]
            axes[0].plot(x, [100 * v for v in s["test_instability"]], "o-", label=f"{title}, test")
            axes[0].plot(x, [100 * v for v in s["train_instability"]], "x--", label=f"{title}, train")
            last = len(s["k"]) - 1
            for i in sorted({0, last}):
                axes[1].plot(s["alphas"], [100 * v for v in s["test_error"][i]], label=f"{title}, k = {s['k'][i]}")
        axes[0].set_xscale("log")
        axes[0].set_xlabel("k (iterations; k = 0 drawn at 1)")
        axes[0].set_ylabel("instability: error barrier (points)")
        axes[0].axhline(100 * STABLE, color="gray", lw=0.8, ls=":")
        axes[1].set_xlabel("α (W(α) = (1 − α)·W1 + α·W2)")
        axes[1].set_ylabel("test error (%)")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "dense.png", dpi=110)
        plt.close(fig)
        made.append("dense.png")
    if "imp_lenet" in res:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for strategy in ("reset", "rewind", "random"):
            s = res["imp_lenet"].get(strategy)
            if s is None:
                continue
            d = [100 * v for v in s["density"]]
            axes[0].plot(d, [100 * v for v in s["test_instability"]], "o-", label=strategy)
            axes[1].plot(d, [100 * v for v in s["copies_test_acc"]], "o-", label=strategy)
        axes[0].axhline(100 * STABLE, color="gray", lw=0.8, ls=":")
        axes[0].set_ylabel("test instability (points)")
        axes[1].set_ylabel("test accuracy, mean of the two copies (%)")
        for ax in axes:
            ax.set_xscale("log")
            ax.invert_xaxis()
            ax.set_xlabel("weights remaining (%)")
            ax.grid(alpha=0.3, which="both")
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / "imp.png", dpi=110)
        plt.close(fig)
        made.append("imp.png")
    return made


def verdict_dense(s: dict) -> str:
    stable = [k for k, v in zip(s["k"], s["test_instability"]) if v < STABLE]
    first = next((k for k, v in zip(s["k"], s["test_instability"]) if v < STABLE and all(
        w < STABLE for kk, w in zip(s["k"], s["test_instability"]) if kk >= k)), None)
    if len(stable) == len(s["k"]):
        return f"stable at every k measured, k = 0 included (largest barrier {pct(max(s['test_instability']))} points)"
    if first is None:
        return f"unstable at every k measured (smallest barrier {pct(min(s['test_instability']))} points)"
    return (f"unstable at k = 0 ({pct(s['test_instability'][0])} points), stable from k = {first} on "
            f"({100 * first / s['iterations']:.1f}% of the {s['iterations']} iterations)")


def verdict_imp(r: dict) -> str:
    """Whether IMP's subnetworks are stable and matching and random pruning's are not, at the
    sparsest round; "matching" here: test accuracy no lower than the dense network's."""
    last, dense = -1, r["reset"]["copies_test_acc"][0]
    parts = []
    for n in ("reset", "rewind", "random"):
        if n not in r:
            continue
        s = r[n]
        stable = all(v < STABLE for v in s["test_instability"])
        matching = s["copies_test_acc"][last] >= dense
        parts.append(f"{n} is {'stable' if stable else 'not stable'} at every density and "
                     f"{'matching' if matching else 'not matching'} at {100 * s['density'][last]:.1f}% "
                     f"({pct(s['copies_test_acc'][last])}% vs the dense {pct(dense)}%, barrier "
                     f"{pct(s['test_instability'][last])} points)")
    text = "; ".join(parts) + "."
    if "random" in r and all(v < STABLE for v in r["random"]["test_instability"]):
        text += (" Random pruning loses accuracy as the paper finds, but its barrier stays under the paper's 2% "
                 "threshold here: the stability side of the paper's separation is not reproduced at this scale "
                 f"(its barrier does grow, from {pct(max(r['random']['test_instability'][:4]))} points at most in "
                 f"the first four rounds to {pct(max(r['random']['test_instability'][-4:]))} in the last four).")
    return text


def page(res: dict, figures: list[str]) -> str:
    st = res["settings"]
    out = ["# Linear mode connectivity and instability (Frankle, Dziugaite, Roy & Carbin 2020)", "",
           "Generated by `experiments/frankle2020_lmc_report.py` from `results.json`, which "
           "`python experiments/frankle2020_lmc.py --out docs/results/frankle2020_lmc` wrote "
           "(library: `ltjax.stability`).", "",
           "**What is measured.** From the weights W_k at iteration k (dense, or a round's IMP mask), two copies "
           "train to the end (iteration T) with different data orders, all else equal; the error of "
           "W(α) = (1 − α)·W1 + α·W2 is evaluated at 31 evenly spaced α. *Instability* is the paper's error "
           "barrier, max over α of the error minus the mean of the two ends' errors, in percentage points: on "
           "the 10,000 test images (test) and on the first training images (train: 10,000 for LeNet). "
           "Every copy, every k "
           "and every α of one analysis run in one compiled program. Copies start like a rewound ticket: W_k, "
           "a fresh optimizer, the schedule from k. One seed per setting (CPU scale): differences under a "
           "point or two are within what another seed would move.", ""]
    sections = [
        ("dense_lenet", "Dense LeNet-300-100 on MNIST",
         f"The paper's LeNet recipe (Adam 1.2e-3, batch 60, constant learning rate, Glorot normal) with T = "
         f"{st['lenet_iterations']:,} iterations (the paper: 24,000)."),
        ("dense_bn", "Dense ResNet-8 with batch norm on Fashion-MNIST",
         f"CIFAR ResNet-(6n+2) with n = 1 and width 4 (no CIFAR-10 on this machine), SGD momentum 0.9, lr 0.05, "
         f"batch 64, T = {st['bn_iterations']:,} iterations. At every α the batch-norm statistics are recomputed "
         f"as the mean of {st['bn_batches']} training batches' statistics (both ends too); train error on the "
         f"first {st['bn_train_examples']:,} training images."),
    ]
    for name, title, setup in sections:
        out += [f"## {title}", "", setup, ""]
        if name not in res:
            out += ["Not run yet.", ""]
            continue
        s = res[name]
        here = verdict_dense(s)
        b = s["test_instability"]
        if name == "dense_bn" and b[0] < STABLE:
            here += (f". The barrier falls with k ({pct(b[0])} points at k = 0, {pct(b[-1])} at k = {s['k'][-1]}), "
                     f"the paper's direction, but it stays under the 2% threshold even at initialization: this "
                     f"small network and short training do not reproduce the paper's instability at k = 0")
        out += dense_table(s) + ["", f"**Paper:** {CLAIMS[name]}", "", f"**Here:** {here}. Wall time "
                                                                        f"{s['wall_seconds']:.0f} s.", ""]
    out += ["## Instability of IMP subnetworks: reset vs rewind (LeNet-300-100, MNIST)", "",
            f"IMP with the 2018 paper's layerwise rates (20% of each hidden layer, 10% of the output layer per "
            f"round), {st['rounds']} rounds of T = {st['lenet_iterations']:,} iterations, the recipe above; "
            f"`reset` restarts every round at θ0, `rewind` at θk with k = {st['rewind']}. Each round's sparse "
            f"network (its start ⊙ its mask) gets a pair of copies; so does *random*: θ0 under a uniformly random "
            f"mask with each layer's count of that round's IMP mask, trained in the same program as reset's pairs. "
            f"*Test acc* is the mean of the two copies' final test accuracies (the end points of the path); "
            f"*matching* here means a test acc no lower than the dense network's (round 0; one seed).", ""]
    if "imp_lenet" in res:
        r = res["imp_lenet"]
        out += imp_table(r) + ["", f"**Paper:** {CLAIMS['imp_lenet']}", ""]
        dense_acc = r["reset"]["copies_test_acc"][0]
        for strategy in ("reset", "rewind", "random"):
            if strategy not in r:
                continue
            s = r[strategy]
            unstable = [f"{100 * d:.1f}%" for d, v in zip(s["density"], s["test_instability"]) if v >= STABLE]
            worst = int(np.argmin(s["copies_test_acc"]))
            where = "stable at every density" if not unstable else "unstable at " + ", ".join(unstable)
            out.append(f"- **{strategy}**: {where} (largest barrier {pct(max(s['test_instability']))} points); "
                       f"lowest accuracy {pct(s['copies_test_acc'][worst])}% at {100 * s['density'][worst]:.1f}% "
                       f"remaining (dense: {pct(dense_acc)}%).")
        out += ["", f"**Here:** {verdict_imp(r)}"]
        t = {n: r[n] for n in ("reset", "rewind") if n in r}
        out += ["", "Wall time: " + "; ".join(f"{n} IMP {s['imp_seconds']:.0f} s" for n, s in t.items())
                + f"; analyses {sum(s['seconds'] for s in t.values()):.0f} s (reset's with random's pairs).", ""]
    else:
        out += ["Not run yet.", ""]
    out += [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--results", default="docs/results/frankle2020_lmc/results.json")
    p.add_argument("--page", default="docs/results/frankle2020_lmc.md")
    a = p.parse_args(argv)
    res = json.loads(Path(a.results).read_text())
    out = Path(a.results).parent
    figures = [f"{out.name}/{f}" for f in plot(res, out)]
    Path(a.page).write_text(page(res, figures))
    print(f"wrote {a.page}")


if __name__ == "__main__":
    main()
