"""Build ``docs/results/lth_vs_snip.md`` from the JSON that ``experiments/lth_vs_snip.py`` wrote,
with the report's numbers (Tables 2, 4 and 6 for LeNet-300-100 / MNIST; 3, 5 and 7 for
Conv-2 / CIFAR-10) beside ltjax's where the settings are comparable.

    python experiments/lth_vs_snip_report.py --results docs/results/lth_vs_snip
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# The report's tables (rows = LTH pruning rounds 1..10).
PAPER = {
    "lenet_mnist_lth_snip": {
        "label": "LeNet-300-100 / MNIST",
        # Table 4: early-stop iterations LTH, SNIP; % remaining
        "es": [(3000, 8750, 80.03), (6000, 5550, 65.06), (3750, 4750, 51.28), (4500, 5250, 41.05),
               (3500, 4000, 32.86), (3000, 6250, 26.32), (2500, 4250, 21.07), (2500, 4750, 16.86),
               (4000, 4000, 13.52), (3000, 8000, 10.83)],
        # Table 2: early-stop iterations LTH, LTH_flip 1 (from round 7), LTH_flip 2 (from round 8)
        "flip": [(3000, 7250, 7250), (6000, 4250, 3500), (3750, 5000, 9250), (4500, 5750, 3250),
                 (3500, 4250, 5000), (3000, 5250, 3250), (2500, 3500, 4000), (2500, 2750, 3000),
                 (4000, 3250, 4750), (3000, 4750, 3500)],
        # Table 6: Difference, Overlap, Kept
        "masks": [(38875.5, 174184.5, 213060.0), (52008.5, 118529.5, 170538.0), (55351.5, 81159.5, 136511.0),
                  (52602.5, 56679.5, 109282.0), (47573.0, 39917.0, 87490.0), (41562.5, 28488.5, 70051.0),
                  (35799.0, 20295.0, 56094.0), (30572.0, 14351.0, 44923.0), (26018.5, 9962.5, 35981.0),
                  (22015.0, 6808.0, 28823.0)],
    },
    "conv2_cifar10_lth_snip": {
        "label": "Conv-2 / CIFAR-10",
        "es": [(4500, 4750, 80.12), (4750, 6500, 64.21), (3750, 6000, 51.47), (3250, 6250, 41.27),
               (2750, 7750, 33.09), (2750, 6500, 26.54), (2500, 7500, 17.10), (3500, 9500, 17.10),
               (3250, 10750, 13.74), (2500, 11000, 11.04)],
        "flip": [(4500, 12000, 11250), (4750, 11750, 10750), (3750, 12000, 14750), (3250, 12500, 13500),
                 (2750, 13000, 14500), (2750, 13250, 11750), (2500, 13750, 11500), (3500, 12500, 11250),
                 (3250, 13000, 11000), (2500, 13000, 11750)],
        "masks": [(659475.0, 2658477.0, 2658477.0), (1187467.0, 2130485.0, 2130485.0),
                  (1610231.0, 1707721.0, 1707721.0), (784838.0, 584339.0, 1369177.0),
                  (697422.5, 400618.5, 1098041.0), (602400.5, 278462.5, 880863.0), (506000.0, 200877.0, 706877.5),
                  (423640.5, 143829.5, 567470.0), (353071.0, 102677.0, 455748.0), (291549.5, 74643.5, 366193.0)],
    },
}
LABELS = {"conv2_fashion_mnist_lth_snip": "Conv-2 / Fashion-MNIST (CPU scale; the report used CIFAR-10)"}


def f0(x) -> str:
    return "—" if x is None else f"{x:,.0f}"


def pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def at_budget(rows: list[dict], nets, budget: int) -> bool:
    """Every network's best model is at the end of the budget: early-stop iterations say nothing."""
    return all(r[n]["early_stop_iteration"] == budget for r in rows for n in nets)


def settings(cfg: dict) -> str:
    return (f"{seeds(cfg['seeds'])}, {cfg['iterations']:,} iterations per round (budget), evaluation every "
            f"{cfg['eval_every']} iterations, early stopping on validation accuracy every "
            f"{cfg['patience_every']} iterations with patience {cfg['patience']}")


def compare_section(preset: str, d: dict, png: str) -> list[str]:
    paper = PAPER.get(preset)
    rows = [r for r in d["rows"] if "snip" in r]
    label = paper["label"] if paper else LABELS.get(preset, preset)
    out = [f"## {label}: LTH vs SNIP vs iterative SNIP (Tables 4–7, Figures 5–8)", "",
           f"ltjax: {settings(d['config'])}. Each round's LTH ticket, its SNIP network and its iterative-SNIP "
           "network (θ0 pruned before training to exactly the ticket's number of weights; iterative SNIP "
           "along the ticket's own round sizes) trained in one vmapped program. `patience` counts the "
           "networks the rule stopped before the budget ran out: where it is n/n, training longer "
           "would not change any number below.", "",
           "### Early-stop iteration (the best model's iteration) per round", ""]
    head = "| round | % remaining | LTH | SNIP | iterative SNIP | patience (LTH/SNIP/iSNIP) |"
    if paper:
        head += " paper % remaining | paper LTH | paper SNIP |"
    out += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        i = r["round"]
        line = (f"| {i} | {pct(r['density'])} | {f0(r['lth']['early_stop_iteration'])} | "
                f"{f0(r['snip']['early_stop_iteration'])} | {f0(r['isnip']['early_stop_iteration'])} | "
                f"{r['lth']['patience_triggered']} / {r['snip']['patience_triggered']} / "
                f"{r['isnip']['patience_triggered']} |")
        if paper and i <= len(paper["es"]):
            lth, snip, rem = paper["es"][i - 1]
            line += f" {rem:.2f} | {lth:,} | {snip:,} |"
        out.append(line)
    out += ["", "### Best-model accuracy (%) and the differences the report plots", "",
            "Figures 5–6 plot LTH − SNIP and Figures 7–8 SNIP − iterative SNIP, on the training, "
            "validation and test sets, in percentage points. Training accuracy is the mean minibatch "
            "accuracy over the `eval_every` iterations before the best model's evaluation (recorded in "
            "the training loop, no extra pass).", "",
            "| round | LTH train / val / test | SNIP train / val / test | iSNIP train / val / test | "
            "LTH − SNIP (test) | SNIP − iSNIP (test) |", "|---|---|---|---|---|---|"]
    for r in rows:
        tri = lambda n: " / ".join(pct(r[n][f"{s}_acc"]) for s in ("train", "val", "test"))  # noqa: E731
        out.append(f"| {r['round']} | {tri('lth')} | {tri('snip')} | {tri('isnip')} | "
                   f"{r['lth-snip']['test']:+.2f} | {r['snip-isnip']['test']:+.2f} |")
    out += ["", f"![LTH vs SNIP]({png})", "",
            "### Mask comparison, LTH ticket vs SNIP network (Tables 6–7)", "",
            "Defined exactly (`ltjax.masks.compare`, ticket = a, SNIP = b, counts over prunable weights, "
            "mean over seeds): **Kept** = weights each mask keeps (equal by construction), **Overlap** = "
            "weights both keep, **Difference** = weights one keeps and the other prunes, counted on one "
            "side, so Kept = Overlap + Difference; the report's Table 6 satisfies this identity in every "
            "row. (Table 7's rows 1–3 do not: Kept equals Overlap there, which the report attributes to an "
            "error saving its counts.)", ""]
    head = "| round | Kept | Overlap | Difference | Overlap / Kept |"
    if paper:
        head += " paper Kept | paper Overlap | paper Difference |"
    out += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        t = r["snip_masks"]["total"]
        line = f"| {r['round']} | {f0(t['kept'])} | {f0(t['overlap'])} | {f0(t['difference'])} | " \
               f"{100 * t['overlap'] / t['kept']:.1f}% |"
        if paper and r["round"] <= len(paper["masks"]):
            diff, ov, kept = paper["masks"][r["round"] - 1]
            line += f" {kept:,.1f} | {ov:,.1f} | {diff:,.1f} |"
        out.append(line)
    layers = [k for k in rows[0]["snip_masks"] if k != "total"]
    out += ["", "Per layer (SNIP is global, so its per-layer sizes differ from the ticket's; "
            "Difference is given on both sides: ticket-only / SNIP-only):", "",
            "| round | " + " | ".join(f"{l}: kept LTH / SNIP, overlap, diff" for l in layers) + " |",
            "|" + "---|" * (len(layers) + 1)]
    for r in rows:
        cells = []
        for layer in layers:
            c = r["snip_masks"][layer]
            cells.append(f"{f0(c['kept'])} / {f0(c['kept_other'])}, {f0(c['overlap'])}, "
                         f"{f0(c['difference'])} / {f0(c['difference_other_side'])}")
        out.append(f"| {r['round']} | " + " | ".join(cells) + " |")
    out += ["", "Iterative SNIP against the ticket (totals):", "",
            "| round | Kept | Overlap | Difference |", "|---|---|---|---|"]
    for r in rows:
        t = r["isnip_masks"]["total"]
        out.append(f"| {r['round']} | {f0(t['kept'])} | {f0(t['overlap'])} | {f0(t['difference'])} |")
    return out + [""]


def claims_section(preset: str, cmp: dict | None, flip: dict | None) -> list[str]:
    """The report's findings (sec. 6) next to what ltjax measured, computed from the rows."""
    out = ["### The report's findings vs ltjax", "", "| finding (report, sec. 6) | ltjax |", "|---|---|"]
    if cmp:
        rows = [r for r in cmp["rows"] if "snip" in r]
        d = [r["lth-snip"]["test"] for r in rows]
        first, last = rows[0], rows[-1]
        out.append(f"| SNIP's test accuracy lags LTH's more the more is pruned; round 1 similar | LTH − SNIP: "
                   f"{d[0]:+.2f} points in round 1 ({pct(first['density'])}% remaining), {d[-1]:+.2f} in round "
                   f"{last['round']} ({pct(last['density'])}%); LTH ahead in {sum(x > 0 for x in d)}/{len(d)} rounds |")
        lth = sum(r["lth"]["early_stop_iteration"] for r in rows) / len(rows)
        sn = sum(r["snip"]["early_stop_iteration"] for r in rows) / len(rows)
        faster = sum(r["lth"]["early_stop_iteration"] < r["snip"]["early_stop_iteration"] for r in rows)
        budget = cmp["config"]["iterations"]
        if at_budget(rows, ("lth", "snip"), budget):
            out.append(f"| LTH generally converges faster than SNIP (early-stop iteration) | not testable at this "
                       f"scale: every network's best model is at the end of the {budget:,}-iteration budget "
                       "(the patience rule never stopped one) |")
        else:
            out.append(f"| LTH generally converges faster than SNIP (early-stop iteration) | mean over rounds "
                       f"{lth:,.0f} (LTH) vs {sn:,.0f} (SNIP); LTH earlier in {faster}/{len(rows)} rounds |")
        ov = [r["snip_masks"]["total"]["overlap"] / r["snip_masks"]["total"]["kept"] for r in rows]
        out.append(f"| the LTH and SNIP masks share fewer weights the more is pruned | overlap / kept from "
                   f"{100 * ov[0]:.1f}% (round 1) to {100 * ov[-1]:.1f}% (round {last['round']}) |")
        if preset.startswith("lenet"):
            si = [r["snip-isnip"]["test"] for r in rows]
            out.append(f"| on the fully connected network SNIP tends to beat iterative SNIP | SNIP − iSNIP test: "
                       f"SNIP ahead in {sum(x > 0 for x in si)}/{len(si)} rounds, mean {sum(si) / len(si):+.2f} "
                       "points |")
        else:
            parts = []
            for split in ("train", "val", "test"):
                si = [r["snip-isnip"][split] for r in rows]
                parts.append(f"{split}: iSNIP ahead in {sum(x < 0 for x in si)}/{len(si)} rounds, mean "
                             f"{sum(si) / len(si):+.2f} points")
            out.append("| on Conv-2 iterative SNIP tends to beat SNIP on the training set, an advantage that "
                       "disappears on the validation set | SNIP − iSNIP, " + "; ".join(parts) + " |")
    if flip:
        keys = [k for k in flip["rows"][0] if k.startswith("flip_from_")]
        both = [r for r in flip["rows"] if "lth" in r and all(k in r for k in keys)]
        if both:
            lth_es = sum(r["lth"]["early_stop_iteration"] for r in both) / len(both)
            lth_acc = sum(r["lth"]["test_acc"] for r in both) / len(both)
            parts, gaps, flip_es = [], [], []
            for k in keys:
                es = sum(r[k]["early_stop_iteration"] for r in both) / len(both)
                acc = sum(r[k]["test_acc"] for r in both) / len(both)
                flip_es.append(es)
                gaps.append(100 * (lth_acc - acc))
                parts.append(f"flip {k.split('_')[-1]}: {es:,.0f} iterations, {100 * acc:.2f}%")
            shared = max(r[k].get("shared_with_flipped", 0) for r in flip["rows"] for k in keys if k in r)
            slower = all(f > 1.2 * lth_es for f in flip_es)
            budget = flip["config"]["iterations"]
            if at_budget(both, ("lth", *keys), budget):
                speed = (f"convergence speed is not testable at this scale: every network's best model is at "
                         f"the end of the {budget:,}-iteration budget")
            elif slower:
                speed = "the flips converge slower, as the report found"
            else:
                speed = (f"the flips do not converge slower here, unlike the report (with "
                         f"{seeds(flip['config']['seeds'])} the early-stop iteration of a round varies by about "
                         "±1,000 between seeds)")
            gap = ", ".join(f"{g:+.2f}" for g in gaps)
            if preset.startswith("lenet"):
                finding = "accuracy close to LTH's but slower to converge"
                acc_verdict = (f"close (LTH − flip: {gap} points), as the report found" if max(map(abs, gaps)) < 0.5
                               else f"not close (LTH − flip: {gap} points), unlike the report")
            else:
                finding = "on Conv-2 much lower best test accuracy than LTH's, and slower to converge"
                acc_verdict = (f"lower (LTH − flip: {gap} points), as the report found" if min(gaps) > 0
                               else f"not lower (LTH − flip: {gap} points), unlike the report")
            out.append(f"| LTH_flip tickets: {finding}; no disjoint second winning ticket | mean over rows "
                       f"1–{len(both)}: LTH {lth_es:,.0f} iterations, {100 * lth_acc:.2f}%; {'; '.join(parts)}; "
                       f"weights shared with m: {shared}. Accuracy: {acc_verdict}; {speed} |")
    return out + [""]


def flip_section(preset: str, d: dict, png: str) -> list[str]:
    paper = PAPER.get(preset)
    label = paper["label"] if paper else LABELS.get(preset, preset)
    keys = [k for k in d["rows"][0] if k.startswith("flip_from_")]
    n_rows = d.get("flip_rows", 10)
    out = [f"## {label}: LTH vs LTH_flip (Tables 2–3, Figures 3–4)", "",
           f"ltjax: {settings(d['config'])}. LTH_flip *k*: the LTH mask m after round *k* is complemented "
           f"(m' = 1 − m on the prunable weights; the flip counts as one pruning round, row 1), then "
           f"{n_rows - 1} more LTH rounds give mask s{'' if n_rows == 10 else ' (the report: 9)'}. Every flip round checks "
           "that s shares no weight with m "
           "(`shared` column: 0 means none).", ""]
    head = "| row | LTH % remaining | LTH es-iter | " + " | ".join(
        f"flip {k.split('_')[-1]}: % remaining, es-iter, shared" for k in keys) + " |"
    if paper:
        head += " paper LTH | paper flip 1 | paper flip 2 |"
    out += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in d["rows"]:
        line = f"| {r['row']} | "
        line += (f"{pct(r['lth']['density'])} | {f0(r['lth']['early_stop_iteration'])} | " if "lth" in r
                 else "— | — | ")
        for k in keys:
            c = r.get(k)
            line += (f"{pct(c['density'])}, {f0(c['early_stop_iteration'])}, {c.get('shared_with_flipped', '—')} | "
                     if c else "— | ")
        if paper:
            line += " | ".join(f"{v:,}" for v in paper["flip"][r["row"] - 1]) + " |"
        out.append(line)
    out += ["", "Best-model test accuracy (%):", "",
            "| row | LTH | " + " | ".join(f"flip {k.split('_')[-1]}" for k in keys) + " |",
            "|" + "---|" * (len(keys) + 2)]
    for r in d["rows"]:
        cells = [pct(r[k]["test_acc"]) if k in r else "—" for k in ("lth", *keys)]
        out.append(f"| {r['row']} | " + " | ".join(cells) + " |")
    return out + ["", f"![LTH vs LTH_flip]({png})", ""]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="docs/results/lth_vs_snip")
    p.add_argument("--out", default="docs/results/lth_vs_snip.md")
    a = p.parse_args()
    res, out_path = Path(a.results), Path(a.out)
    rel = lambda f: str(f.relative_to(out_path.parent)) if f.is_relative_to(out_path.parent) else str(f)  # noqa: E731
    lines = ["# LTH vs SNIP, iterative SNIP and LTH_flip: the report vs ltjax", "",
             "Generated by `experiments/lth_vs_snip_report.py` from the JSON that "
             "`experiments/lth_vs_snip.py` wrote on this project's 2-core CPU. The report: G070, \"On "
             "Multiple Winning Tickets and LTH vs SNIP\" (`shared/seeds/000_345433a26ab90f97.txt`).", ""]
    found = False
    for preset in ("lenet_mnist_lth_snip", "conv2_fashion_mnist_lth_snip", "conv2_cifar10_lth_snip"):
        loaded = {}
        for mode, section in (("compare", compare_section), ("flip", flip_section)):
            f = res / f"{preset}_{mode}.json"
            if f.exists():
                found = True
                loaded[mode] = json.loads(f.read_text())
                lines += section(preset, loaded[mode], rel(f.with_suffix(".png")))
        if "compare" in loaded and "flip" not in loaded:
            lines += [f"LTH_flip (the report's Table {2 if preset.startswith('lenet') else 3}) has not been run "
                      f"for this preset yet: `python experiments/lth_vs_snip.py flip --preset {preset}` "
                      "(`--flip-rows` and `--iterations` size it for a CPU).", ""]
        if loaded:
            lines += claims_section(preset, loaded.get("compare"), loaded.get("flip"))
    if not found:
        raise SystemExit(f"no results in {res}; run experiments/lth_vs_snip.py first")
    out_path.write_text("\n".join(lines))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
