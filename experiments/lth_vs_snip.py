"""LTH vs SNIP vs iterative SNIP, and LTH_flip: the structure of the report's Tables 2-7 and Figures 3-8.

Modes:

  compare   Tables 4-7, Figures 5-8. Each LTH round's ticket trains in one vmapped program
            with a SNIP and an iterative-SNIP network pruned at θ0 to exactly its number
            of weights (preset controls ``snip, isnip``). Per round: early-stop iteration
            (the report's rule: validation accuracy every 500 iterations, patience 4, best
            model kept), best-model accuracy on train / validation / test, accuracy
            differences LTH − SNIP and SNIP − iterative SNIP, and the mask comparison
            (Kept, Overlap, Difference; per layer and total).
  flip      Tables 2-3, Figures 3-4. LTH_flip from the LTH masks after rounds 7 and 8
            (``flip_round`` 8 and 9): the complement is one pruning round, then 9 more LTH
            rounds; rows i = 1..10 compare LTH round i with flip round i.

Presets: ``lenet_mnist_lth_snip`` (default), ``conv2_fashion_mnist_lth_snip`` (the
convolutional run that fits a CPU), ``conv2_cifar10_lth_snip`` (needs TFDS's download).
``--quick`` finishes in minutes; the results page states any shortening.

    python experiments/lth_vs_snip.py compare --quick
    python experiments/lth_vs_snip.py compare --iterations 12000 --out docs/results/lth_vs_snip
    python experiments/lth_vs_snip.py flip --iterations 12000 --out docs/results/lth_vs_snip
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import numpy as np

from ltjax import lottery, presets, report

NETS = ("lth", "snip", "isnip")
SETS = ("train", "val", "test")
FLIP_FROM = (7, 8)  # the report flips the LTH masks after 7 and after 8 pruning rounds


def shrink(cfg, a):
    kw = {"seeds": a.seeds}
    if a.quick:
        kw.update(iterations=a.iterations or 2000, eval_every=100, patience_every=500, rounds=min(cfg.rounds, 4))
    if a.iterations:
        kw["iterations"] = a.iterations
    if a.rounds:
        kw["rounds"] = min(cfg.rounds, a.rounds)
    if a.eval_every:
        kw["eval_every"] = a.eval_every
    return cfg.replace(**kw).validate()


def _mean(x, ok=None) -> float | None:
    x = np.asarray(x, np.float64)
    if ok is not None:
        x = x[..., ok]
    return float(np.mean(x)) if x.size else None


def _net(m: dict, ok: np.ndarray, last: int) -> dict:
    """Means over seeds; ``patience_triggered``: how many networks the patience rule stopped
    before the training budget ran out (the rest kept their best model up to the end)."""
    stop = np.asarray(m["stop_iteration"])
    out = {"early_stop_iteration": _mean(m["early_stop_iteration"], ok),
           "stop_iteration": _mean(stop, ok),
           "patience_triggered": f"{int(np.sum(stop < last))}/{stop.size}",
           "final_test_acc": _mean(m["final_test_acc"], ok)}
    for s in SETS:
        out[f"{s}_acc"] = _mean(m[f"{s}_acc_at_es"], ok)
    return out


def _compare_rows(vs: dict) -> dict:
    """The report's columns per layer (mean over seeds): Kept, Overlap, Difference (one-sided)."""
    return {layer: {"kept": _mean(c["kept_a"]), "kept_other": _mean(c["kept_b"]), "overlap": _mean(c["overlap"]),
                    "difference": _mean(c["only_a"]), "difference_other_side": _mean(c["only_b"])}
            for layer, c in vs.items()}


def summarize_compare(run) -> list[dict]:
    rows = []
    last = run.config.iterations
    for rd in run.rounds:
        m = rd.metrics
        ok = ~np.asarray(m["diverged"], bool)
        row = {"round": rd.index, "density": _mean(m["density"]),
               "weights": _mean(sum(np.asarray(v, np.float64) for v in m["remaining"].values())),
               "lth": _net(m, ok, last)}
        for name in ("snip", "isnip"):
            c = m.get("controls", {}).get(name)
            if c is None:
                continue
            row[name] = _net({k: np.asarray(v)[0] for k, v in c.items() if k not in ("vs_ticket", "remaining")},
                             ok, last)
            row[f"{name}_masks"] = _compare_rows(c["vs_ticket"])
        for a, b in (("lth", "snip"), ("snip", "isnip")):
            if a in row and b in row:
                row[f"{a}-{b}"] = {s: 100 * (row[a][f"{s}_acc"] - row[b][f"{s}_acc"]) for s in SETS}
        rows.append(row)
    return rows


def plot_compare(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "snip" in r]
    x = [r["round"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key, what in ((axes[0], "lth-snip", "LTH − SNIP (Figures 5-6)"),
                          (axes[1], "snip-isnip", "SNIP − iterative SNIP (Figures 7-8)")):
        for s, label in zip(SETS, ("training", "validation", "test")):
            ax.plot(x, [r[key][s] for r in rows], marker="o", label=label)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(what)
        ax.set_ylabel("best-model accuracy difference (points)")
    for name in NETS:
        axes[2].plot(x, [r[name]["early_stop_iteration"] for r in rows], marker="o", label=name)
    axes[2].set_title("early-stop iteration (Tables 4-5)")
    axes[2].set_ylabel("iteration of the best model")
    for ax in axes:
        ax.set_xlabel("LTH pruning round")
        ax.set_xticks(x)
        ax.set_xticklabels([f"{r}\n{100 * rr['density']:.1f}%" for r, rr in zip(x, rows)], fontsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarize_flip(lth, flips: dict[int, object]) -> list[dict]:
    rows = []
    last = lth.config.iterations
    for i in range(1, 11):
        row = {"row": i}
        if i < len(lth.rounds):
            row["lth"] = _flip_cell(lth.rounds[i], last)
        for k, run in flips.items():
            r = k + 1 + (i - 1)  # flip_round = k + 1 is row 1
            if r < len(run.rounds):
                row[f"flip_from_{k}"] = _flip_cell(run.rounds[r], last)
        rows.append(row)
    return rows


def _flip_cell(rd, last: int) -> dict:
    m = rd.metrics
    ok = ~np.asarray(m["diverged"], bool)
    cell = {"round": rd.index, "density": _mean(m["density"]), **_net(m, ok, last)}
    if "shared_with_flipped" in m:
        cell["shared_with_flipped"] = int(np.max(m["shared_with_flipped"]))
    return cell


def plot_flip(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    series = [k for k in rows[0] if k != "row"]
    for s in series:
        pts = [(r["row"], r[s]) for r in rows if s in r]
        label = "LTH" if s == "lth" else f"LTH_flip of the round-{s.split('_')[-1]} mask"
        a1.plot([p[0] for p in pts], [p[1]["early_stop_iteration"] for p in pts], marker="o", label=label)
        a2.plot([p[0] for p in pts], [100 * p[1]["test_acc"] for p in pts], marker="o", label=label)
    a1.set_ylabel("early-stop iteration (Tables 2-3)")
    a2.set_ylabel("best-model test accuracy (%) (Figures 3-4)")
    for a in (a1, a2):
        a.set_xlabel("pruning round of the row (flip = row 1)")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["compare", "flip"])
    p.add_argument("--preset", default="lenet_mnist_lth_snip",
                   choices=["lenet_mnist_lth_snip", "conv2_fashion_mnist_lth_snip", "conv2_cifar10_lth_snip"])
    p.add_argument("--quick", action="store_true", help="minutes on a CPU: 2,000 iterations, ≤ 4 rounds")
    p.add_argument("--seeds", type=int, default=2, help="tickets (initializations); the report used 2")
    p.add_argument("--iterations", type=int, help="training budget per round (report: 25 epochs)")
    p.add_argument("--eval-every", type=int, help="evaluation interval (must divide 500 for the patience rule)")
    p.add_argument("--rounds", type=int, help="cap on rounds")
    p.add_argument("--flip-rows", type=int,
                   help="flip: rows per LTH_flip run, the flip itself plus rows - 1 LTH rounds (report: 10; "
                        "--quick: 2); fewer rows fit a CPU session")
    p.add_argument("--out", default="docs/results/lth_vs_snip", help="where the JSON and PNG go")
    p.add_argument("--runs", default="runs", help="parent of the run directories (resumable)")
    p.add_argument("--manual-dir")
    p.add_argument("--ticket-chunk", type=int,
                   help="train the networks of a round in sequential chunks of this many (default on a CPU for "
                        "Conv-2: 1, since XLA:CPU runs vmapped convolutions slowly)")
    a = p.parse_args()
    base = shrink(presets.get(a.preset), a)
    conv_on_cpu = jax.default_backend() == "cpu" and base.model.startswith("conv")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{a.preset}_{a.mode}"
    title = f"{a.preset} ({'quick' if a.quick else 'full'}, {base.seeds} seeds, {base.iterations} iterations/round)"
    run_kw = dict(manual_dir=a.manual_dir, progress=sys.stderr.isatty(),
                  ticket_chunk=a.ticket_chunk or (1 if conv_on_cpu else None))
    if a.mode == "compare":
        run = lottery.run(base, a.runs, **run_kw)
        print(report.round_table(run))
        rows = summarize_compare(run)
        meta = {"run_dir": str(run.path), "config": base.to_dict()}
        plot_compare(rows, out / f"{tag}.png", f"LTH vs SNIP vs iterative SNIP: {title}")
    else:
        flip_rows = a.flip_rows or (2 if a.quick else 10)
        if not 1 <= flip_rows <= 10:
            raise SystemExit(f"--flip-rows must be between 1 and 10 (the report's tables have 10 rows), got {flip_rows}")
        lth_cfg = base.replace(controls=())
        last = max(FLIP_FROM) + 1 if a.quick else base.rounds
        lth = lottery.run(lth_cfg.replace(rounds=max(last, max(FLIP_FROM) + 1)), a.runs, **run_kw)
        flips = {}
        for k in FLIP_FROM:
            # rows: the flip plus flip_rows - 1 LTH rounds (the report: 9, its 9 pruning iterations)
            flips[k] = lottery.run(lth_cfg.replace(flip_round=k + 1, rounds=k + 1 + flip_rows), a.runs, **run_kw)
        rows = summarize_flip(lth, flips)
        meta = {"lth_run": str(lth.path), **{f"flip_from_{k}": str(r.path) for k, r in flips.items()},
                "flip_rows": flip_rows, "config": lth_cfg.to_dict()}
        plot_flip(rows, out / f"{tag}.png", f"LTH vs LTH_flip: {title}")
    (out / f"{tag}.json").write_text(json.dumps({"rows": rows, **meta}, indent=1))
    print(f"wrote {out / (tag + '.json')} and {out / (tag + '.png')}")


if __name__ == "__main__":
    main()
