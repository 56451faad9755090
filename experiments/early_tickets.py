"""Early winning tickets: the early-ticket paper's Figures 1-5 and Tables 1-2, and early-bird
detection (You et al. 2020), on one baseline run watched epoch by epoch.

Parts (all by default; ``--parts`` picks some), each training its networks in one vmapped
program per grid row / learning rate / training-set size / window:

  baseline      the dense run; per epoch: weights, per-layer std (Fig. 2a), the per-layer rates
                global pruning would choose (Fig. 2b), the 80% mask (Fig. 3, early-bird)
  grid          Fig. 1: mask from epoch s, weights from epoch v, retrained with the full schedule
  ppr           Fig. 4: pseudo-prune-then-retrain, one epoch at lr 0.1 and 0.01
  memorization  Fig. 5 / Table 1: random labels on N training images, one-shot vs gradual masks
  gradual       Table 2: Zhu & Gupta's cubic schedule over a window, then the full schedule
  earlybird     You et al.'s rule (window 5, threshold 0.1) and the found ticket retrained

The baseline always runs (its run directory resumes, as every part's does). A run of some
parts keeps the other parts from an earlier results file of the same study, so a study too
long for one sitting (a session limit, a Colab runtime) is run part by part:

    python experiments/early_tickets.py --preset conv2_fashion_mnist_early --parts grid,earlybird
    python experiments/early_tickets.py --preset conv2_fashion_mnist_early --parts ppr,memorization

    python experiments/early_tickets.py --quick                               # LeNet, minutes
    python experiments/early_tickets.py                                       # LeNet-300-100 / MNIST
    python experiments/early_tickets.py --preset conv2_fashion_mnist_early    # Conv-2 / Fashion-MNIST (CPU: hours)
    python experiments/early_tickets.py --preset resnet20_cifar10_early       # the paper's ResNet-20: GPU/TPU
    python experiments/early_tickets.py --preset resnet20_cifar10_early --smoke   # synthetic arrays, minutes
    python experiments/early_tickets_report.py                                # docs/results/early_tickets.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import numpy as np

from ltjax import early, early_study, presets

PARTS = ("baseline", "grid", "ppr", "memorization", "gradual", "earlybird")


def plan(preset: str, quick: bool, smoke: bool, seeds: int | None) -> tuple:
    """(config, settings, tag): the study's recipe and which epochs each part uses."""
    cfg = presets.get(preset)
    E = cfg.iterations // cfg.eval_every  # epochs: the early presets evaluate once per epoch
    pick = lambda fracs: sorted({max(1, min(E, round(f * E))) for f in fracs})  # noqa: E731
    s = {
        "prune_epochs": pick((0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)),
        "rewind_epochs": [0, *pick((0.05, 0.1, 0.2, 0.4, 0.6, 1.0))],
        "ppr_epochs": list(range(1, E + 1)),
        "mem_prune_epochs": pick((0.1, 0.6, 1.0)),
        "mem_sizes": [1000, 2000, 5000, 10000],
        "mem_iterations": 3000,
        # windows of a quarter of training, starting every eighth (ResNet-20: 25-75 ... 150-200, the paper's)
        "windows": [(round(k * E / 8), round(k * E / 8) + max(1, E // 4)) for k in range(1, 7)
                    if round(k * E / 8) + max(1, E // 4) <= E],
        "gradual_steps": 4,
        "window": 5, "threshold": 0.1,
    }
    s["windows"] = sorted({tuple(w) for w in s["windows"]})
    if preset.startswith("conv2"):
        # Conv-2 trains at ~4 steps/s on a 2-core CPU (one 5-epoch network: ~19 min), so every
        # part is thinned, to two sittings of under 2 h each (--parts grid,earlybird: ~27k
        # iterations with the baseline; --parts ppr,memorization: ~24k): a 2 x 2 grid (prune at
        # the first and the last epoch, rewind to θ0 and to epoch 1), PPR at every epoch, one
        # gradual window, 3 masks x 2 sizes of random labels, and an early-bird window of 3
        # (5 epochs leave too few masks for 5).
        s.update(prune_epochs=[1, E], rewind_epochs=[0, 1], mem_prune_epochs=[1, E], mem_sizes=[1000, 5000],
                 mem_iterations=1000, windows=[(2, 4)], window=3)
    tag = preset
    default_seeds = 1 if preset.startswith("conv2") else 2
    if quick or smoke:
        if preset.startswith("lenet") and not smoke:
            cfg = cfg.replace(iterations=4 * cfg.eval_every, lr_drops=(3 * cfg.eval_every,))
            tag += "_quick"
        else:  # the preset's recipe at toy size on random arrays of the dataset's shapes
            cfg = cfg.replace(dataset="synthetic_" + cfg.dataset, batch_size=16, validation_size=64, eval_every=60,
                              iterations=4 * 60, lr_drops=(180,))
            tag += "_smoke"
        s.update(prune_epochs=[1, 4], rewind_epochs=[0, 1], ppr_epochs=[1, 2, 3, 4], mem_prune_epochs=[1, 4],
                 mem_sizes=[128, 512], mem_iterations=200, windows=[(0, 2), (2, 4)], window=3)
        default_seeds = 2 if preset.startswith("lenet") else 1
    return cfg.replace(seeds=seeds or default_seeds).validate(), s, tag


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="lenet_mnist_early",
                   choices=["lenet_mnist_early", "conv2_fashion_mnist_early", "resnet20_cifar10_early"])
    p.add_argument("--quick", action="store_true", help="4 epochs, small grid (LeNet); deep presets: --smoke")
    p.add_argument("--smoke", action="store_true", help="the preset's recipe at toy size on synthetic arrays")
    p.add_argument("--seeds", type=int, help="default: 2 (LeNet), 1 (conv nets)")
    p.add_argument("--rate", type=float, help="fraction of the pooled weights pruned (default: the preset's, 0.8)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument("--mem-sizes", help="comma-separated training-set sizes for the memorization test")
    p.add_argument("--channel", action="store_true", help="also record batch-norm channel masks (early-bird option)")
    p.add_argument("--ticket-chunk", type=int, help="train the networks in sequential chunks of this many")
    p.add_argument("--out", default="docs/results/early_tickets")
    p.add_argument("--runs", default="runs")
    p.add_argument("--manual-dir")
    a = p.parse_args()
    parts = [x for x in a.parts.split(",") if x]
    bad = [x for x in parts if x not in PARTS]
    if bad:
        p.error(f"unknown parts {bad}; valid: {', '.join(PARTS)}")
    cfg, s, tag = plan(a.preset, a.quick, a.smoke, a.seeds)
    if a.mem_sizes:
        s["mem_sizes"] = [int(x) for x in a.mem_sizes.split(",")]
    if a.rate is not None:
        cfg, tag = cfg.replace(prune_rate=a.rate).validate(), f"{tag}_rate{a.rate:g}"
    conv_on_cpu = jax.default_backend() == "cpu" and not a.preset.startswith("lenet")
    chunk = a.ticket_chunk or (1 if conv_on_cpu else None)  # XLA:CPU runs vmapped convolutions slowly
    kw = dict(manual_dir=a.manual_dir, ticket_chunk=chunk)
    show = sys.stderr.isatty()
    study = early_study.baseline(cfg, a.runs, rate=cfg.prune_rate, channel=a.channel, progress=show, **kw)
    st = study.stats()
    st["test_acc"][0] = st["val_acc"][0] = 0.0  # θ0 is not evaluated (recorded as nan)
    res = {"preset": a.preset, "tag": tag, "config": cfg.to_dict(), "settings": s, "run_dir": str(study.path),
           "rate": study.rate, "exclude": list(study.exclude), "epochs": study.epochs,
           "steps_per_epoch": study.steps_per_epoch,
           "baseline": {"test_acc": st["test_acc"].mean(axis=1).tolist(),
                        "val_acc": st["val_acc"].mean(axis=1).tolist(),
                        "layer_std": {k: v.mean(axis=1).tolist() for k, v in st["layer_std"].items()},
                        "layer_rate": {k: v.mean(axis=1).tolist() for k, v in st["layer_rate"].items()}}}
    # Figure 3: Hamming distances between the epoch masks (seed 0), over every epoch
    res["hamming"] = early.hamming_matrix([st["bits"][e, 0] for e in range(study.epochs + 1)]).tolist()
    if "grid" in parts:
        res["grid"] = early_study.grid(study, s["prune_epochs"], s["rewind_epochs"], **kw)
    if "ppr" in parts:
        res["ppr"] = early_study.ppr(study, s["ppr_epochs"], **kw)
    if "gradual" in parts or "memorization" in parts:
        res["gradual"] = early_study.gradual(study, s["windows"], steps=s["gradual_steps"], **kw)
    if "memorization" in parts:
        masks = _memo_masks(study, s, res["gradual"], kw)
        res["memorization"] = early_study.memorization(study, masks, s["mem_sizes"], s["mem_iterations"], **kw)
    if "earlybird" in parts:
        res["earlybird"] = early_study.early_bird(study, window=s["window"], threshold=s["threshold"], **kw)
        if a.channel:
            res["earlybird_channel"] = early_study.early_bird(study, window=s["window"], threshold=s["threshold"],
                                                              channel=True, retrain=False, **kw)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{tag}.json"
    res = keep_earlier_parts(res, json.loads(path.read_text()) if path.exists() else None)
    path.write_text(json.dumps(res, indent=1))
    plot(res, out / f"{tag}.png")
    print(f"wrote {out / f'{tag}.json'} and {tag}.png")


# the results each part writes (gradual also runs for memorization, which uses its masks)
PART_KEYS = {"grid": ("grid",), "ppr": ("ppr",), "memorization": ("memorization",), "gradual": ("gradual",),
             "earlybird": ("earlybird", "earlybird_channel")}


def keep_earlier_parts(res: dict, earlier: dict | None) -> dict:
    """``res`` plus the parts an earlier results file of the same study has and this run did
    not compute, so a study can be run part by part (``--parts``) across sessions that each
    fit a time limit. The earlier file must describe the same study: same config, settings and
    rate, and the same baseline (the dense run every part starts from; it is recomputed
    bit-for-bit from the config on the same software and hardware). A file of a different
    study is replaced, as before; a same-config file whose baseline differs stops the run
    before anything is written, since its parts were computed from other weights."""
    if earlier is None:
        return res
    res = json.loads(json.dumps(res))  # compare as stored: tuples become lists
    same = all(earlier.get(k) == res[k] for k in ("preset", "config", "settings", "rate", "exclude"))
    if not same:
        print(f"replacing the results of a different study ({earlier.get('tag')}, other config or settings)")
        return res
    if earlier["baseline"]["test_acc"] != res["baseline"]["test_acc"]:
        raise SystemExit(
            "the results file already holds parts of this study computed from a different baseline run "
            f"(final test acc {earlier['baseline']['test_acc'][-1]:.4f} there, {res['baseline']['test_acc'][-1]:.4f} "
            "here: other hardware or software); run every part here, or pass another --out")
    kept = [k for keys in PART_KEYS.values() for k in keys if k in earlier and k not in res]
    if kept:
        print(f"kept from the earlier results file: {', '.join(kept)}")
    return {**res, **{k: earlier[k] for k in kept}}


def _memo_masks(study, s, gradual, kw) -> dict:
    """The masks the memorization test compares: one-shot at each of ``mem_prune_epochs``, and
    each gradual window's final mask (on θ0 alike: the test measures the structure)."""
    _, model = early_study.data_and_model(study, kw["manual_dir"])
    masks = {f"one-shot s={e}": early_study.ticket_masks(study, model, study.params(e)) for e in s["mem_prune_epochs"]}
    for w, b in zip(gradual["windows"], gradual["bits"]):
        masks[f"gradual {w[0]}-{w[1]}"] = early_study.mask_from_bits(study, model, np.asarray(b, np.uint8))
    return masks


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["std", "rate", "hamming"] + [k for k in ("grid", "ppr", "memorization", "earlybird") if k in res]
    cols = (len(panels) + 1) // 2
    fig, axes = plt.subplots(2, cols, figsize=(4.8 * cols, 8), squeeze=False)
    ax = dict(zip(panels, axes.ravel()))
    for extra in axes.ravel()[len(panels):]:
        extra.axis("off")
    b, E = res["baseline"], res["epochs"]
    ep = np.arange(E + 1)
    for k, v in b["layer_std"].items():
        ax["std"].plot(ep, v, label=k)
    ax["std"].set(title="Fig. 2a: weight std per layer", xlabel="epoch", ylabel="std of weights")
    for k, v in b["layer_rate"].items():
        ax["rate"].plot(ep, v, label=k)
    ax["rate"].set(title=f"Fig. 2b: per-layer rate of {res['rate']:.0%} global pruning", xlabel="epoch",
                   ylabel="fraction of the layer pruned")
    im = ax["hamming"].imshow(np.asarray(res["hamming"]), cmap="viridis", origin="lower")
    fig.colorbar(im, ax=ax["hamming"], fraction=0.046)
    ax["hamming"].set(title="Fig. 3: Hamming distance of masks", xlabel="epoch", ylabel="epoch")
    if "grid" in res:
        g = res["grid"]
        acc = 100 * np.asarray(g["final_test_acc"]).T  # rows v, columns s
        im = ax["grid"].imshow(acc, cmap="magma", origin="lower", aspect="auto")
        ax["grid"].set_xticks(range(len(g["prune_epochs"])), g["prune_epochs"])
        ax["grid"].set_yticks(range(len(g["rewind_epochs"])), g["rewind_epochs"])
        for i in range(acc.shape[0]):
            for j in range(acc.shape[1]):
                dark = im.norm(acc[i, j]) > 0.6  # magma is pale at the top: black text there, white below
                ax["grid"].text(j, i, f"{acc[i, j]:.1f}", ha="center", va="center", fontsize=6,
                                color="k" if dark else "w")
        ax["grid"].set(title="Fig. 1: final test acc (%)", xlabel="prune epoch s", ylabel="rewind epoch v")
    if "ppr" in res:
        r = res["ppr"]
        for lr, acc in zip(r["lrs"], r["test_acc"]):
            ax["ppr"].plot(r["epochs"], 100 * np.asarray(acc), marker="o", ms=3, label=f"retrain lr {lr:g}")
        ax["ppr"].plot(ep[1:], 100 * np.asarray(b["test_acc"][1:]), "k--", label="baseline")
        ax["ppr"].set(title="Fig. 4: pseudo-prune-then-retrain", xlabel="epoch", ylabel="test acc after 1 epoch (%)")
    if "memorization" in res:
        m = res["memorization"]
        for lab, acc in zip(m["labels"], m["train_acc"]):
            ax["memorization"].plot(m["sizes"], 100 * np.asarray(acc), marker="o", ms=3, label=lab)
        ax["memorization"].set(xscale="log", title="Fig. 5: memorization (random labels)", xlabel="training images N",
                               ylabel="train acc (%)")
    if "earlybird" in res:
        eb = res["earlybird"]
        for seed, dd in enumerate(eb["distances"]):
            ax["earlybird"].plot(range(len(dd)), [max(d) if d else np.nan for d in dd], marker="o", ms=3,
                                 label=f"seed {seed}: EB epoch {eb['epoch'][seed]}")
        ax["earlybird"].axhline(eb["threshold"], color="k", ls=":")
        ax["earlybird"].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # epochs
        ax["earlybird"].set(title=f"early-bird: max distance to last {eb['window'] - 1} masks", xlabel="epoch",
                            ylabel="normalized Hamming distance")
    for a_ in axes.ravel():
        if a_.get_legend_handles_labels()[0]:
            a_.legend(fontsize=6)
    fig.suptitle(f"Early tickets: {res['config']['model']} / {res['config']['dataset']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
