"""Supermasks (Zhou, Lan, Liu & Yosinski 2019, "Deconstructing Lottery Tickets: Zeros, Signs, and
the Supermask"), at CPU scale.

Two studies (``STUDIES``):

* ``lenet_mnist``: LeNet-300-100 on MNIST, sized by the command line (``--seeds``,
  ``--iterations``, ``--powers``, ``--learn-steps``);
* ``conv_fashion_mnist`` (``--conv``): a Conv-2-shaped network on Fashion-MNIST at CPU scale,
  with its own fixed settings (``CONV``): Frankle & Carbin's Conv-2 (two 3×3 convolutions, a
  2×2 max pool, FC 256, 256, 10) with **16 filters per convolution instead of 64**
  (``ConvNet(filters=(16,))`` through ``models.wrap``), 1 seed, 1,800 iterations of Adam 2e-4
  (Conv-2's recipe), masks at three densities, learned supermasks with Adam 0.1 only.

Each study:

1. θ0 (Glorot normal, as the authors' networks), trained densely with Adam to θ_final.
2. Every mask criterion of :mod:`ltjax.supermask` (and ``random``) prunes each layer one-shot at
   the paper's rates (LeNet: hidden layers to ``0.8^p`` remaining, the output layer to ``0.9^p``;
   Conv: convolutions and output ``0.9^p``, hidden FC ``0.8^p``; for each power p); each mask is
   applied to the *untrained* θ0 and, separately, to its signed constant
   (``sign(θ0) · σ_layer``), and the test accuracy (all 10,000 test images) is recorded. All
   seeds and densities of one criterion are one compiled program (densities one after another).
3. Learned supermasks: the weights stay at θ0 (or its signed constant) and only the mask logits
   train (Bernoulli samples, straight-through gradient): LeNet with the authors' SGD at learning
   rate 100 and with Adam at 0.1, the Conv network with Adam 0.1; all seeds in one program.

Writes ``<out>/results.json`` and one figure per study (``<out>/<study>.png``); a study already
in ``results.json`` is kept, so ``--conv`` adds the Conv study beside the LeNet one (and is
skipped if it is there: resumable). ``experiments/zhou2019_supermask_report.py`` builds the
results page from them.

    python experiments/zhou2019_supermask.py --quick
    python experiments/zhou2019_supermask.py --out docs/results/zhou2019_supermask --learn-steps 2000
    python experiments/zhou2019_supermask.py --out docs/results/zhou2019_supermask --conv
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ltjax import data as D
from ltjax import masks as M
from ltjax import models, pruning
from ltjax import supermask as S
from ltjax.train import TrainSpec, device_data, make_trainer

PAPER = {
    "source": "Zhou, Lan, Liu & Yosinski, NeurIPS 2019 (arXiv:1905.01067), abstract and sec. 5",
    "supermask_mnist_fc": 0.86,  # untrained FC network on MNIST with a supermask (abstract)
    "supermask_cifar10_conv": 0.41,  # untrained Conv network on CIFAR-10 (abstract)
    "learned_supermask_mnist_fc": 0.95,  # sec. 5.2, as quoted in secondary notes; not re-read here
    "best_criterion": "large_final_same_sign, kept weights set to signed constants",
}
# Remaining fraction per power p, by layer glob (first match): the authors' FC command uses
# --prune_base 0.8,0.9 (hidden, output); for the Conv network, Frankle & Carbin's Conv-2 rates
# (convolutions 10%, FC 20%, output 10% per round).
LENET_BASES = {"out": 0.9, "*": 0.8}
CONV_BASES = {"conv*": 0.9, "out": 0.9, "*": 0.8}


def _conv16():
    from ltjax.models import initializers
    from ltjax.models.conv import ConvNet

    net = ConvNet(filters=(16,), widths=(256, 256), num_outputs=10, kernel_init=initializers.get("glorot_normal"))
    return models.wrap(net, input_shape=(28, 28, 1), num_outputs=10)


STUDIES = {
    "lenet_mnist": dict(dataset="mnist", model=lambda: models.mlp((300, 100), init="glorot_normal"),
                        bases=LENET_BASES, lr=1.2e-3, optimizers=("sgd_lr100", "adam_lr0.1")),
    "conv_fashion_mnist": dict(dataset="fashion_mnist", model=_conv16, bases=CONV_BASES, lr=2e-4,
                               optimizers=("adam_lr0.1",)),
}
# The Conv study's CPU-scale sizes (the command line sizes the LeNet study); --quick shrinks them.
CONV = dict(seeds=1, iterations=1800, powers=[3, 7, 12], learn_steps=1000, learn_eval_every=500)
OPTIMIZERS = {"sgd_lr100": lambda: optax.sgd(100.0), "adam_lr0.1": lambda: optax.adam(0.1)}


def layer_densities(names: list[str], p: int, bases: dict[str, float] = LENET_BASES) -> dict[str, float]:
    """The paper's per-layer densities after power p: ``base^p``, base of the first glob of
    ``bases`` the layer matches (LeNet: ``0.9^p`` for ``out``, ``0.8^p`` otherwise)."""
    return {n: next(b for g, b in bases.items() if fnmatch.fnmatchcase(n, g)) ** p for n in names}


def keep_counts(sizes: dict[str, int], dens: dict[str, float]) -> dict[str, int]:
    """Survivors per layer exactly as ``prune(scores, dense, 1 − d)`` leaves them."""
    return {n: sizes[n] - pruning.static_prune_count(sizes[n], 1.0 - dens[n]) for n in sizes}


def criteria_accuracy(model, ds, data, theta0, final, powers, bases=LENET_BASES) -> dict:
    """``{criterion: {"theta0": [[acc per seed] per power], "signed_constant": ...}}`` and densities."""
    one = jax.tree.map(lambda a: a[0], theta0)
    dense1 = M.make_mask(one, model.is_prunable)
    sizes = M.size(dense1)
    rows = [keep_counts(sizes, layer_densities(list(sizes), p, bases)) for p in powers]
    keeps = {n: jnp.array([r[n] for r in rows], jnp.int32) for n in sizes}
    dense = jax.vmap(lambda p: M.make_mask(p, model.is_prunable))(theta0)
    keys = jax.random.split(jax.random.PRNGKey(1234), theta0_count(theta0))
    out = {"densities": [{"p": int(p), **{n: r[n] / sizes[n] for n in sizes},
                          "overall": sum(r.values()) / sum(sizes.values())} for p, r in zip(powers, rows)]}
    for name in S.NAMES:
        def one_mask(p0, pf, m, k, keep):
            score = S.criterion_scores(name, p0, pf, m, k)
            mask, _ = pruning.prune_in_steps(lambda _: score, m, 1, keep=keep, scope="layerwise")
            acc = lambda w: S.masked_accuracy(model, w, mask, data, ds.mean, ds.std)[1]  # noqa: E731
            return acc(p0), acc(S.signed_constant(p0, m))
        per_seed = jax.vmap(one_mask, in_axes=(0, 0, 0, 0, None))
        # densities one after another inside the program (lax.map): evaluation batches for every
        # density and seed at once would multiply the memory by the number of densities
        each = jax.jit(lambda t0, tf, m, k, kp: jax.lax.map(lambda keep: per_seed(t0, tf, m, k, keep), kp))
        plain, signed = each(theta0, final, dense, keys, keeps)
        out[name] = {"theta0": np.asarray(plain).tolist(), "signed_constant": np.asarray(signed).tolist()}
    return out


def theta0_count(tree) -> int:
    return jax.tree.leaves(tree)[0].shape[0]


def learned(model, ds, data, theta0, keys, steps: int, eval_every: int,
            optimizers=("sgd_lr100", "adam_lr0.1")) -> dict:
    out = {}
    for opt in optimizers:
        for signed in (False, True):
            t0 = time.time()
            spec = S.SupermaskSpec(steps=steps, eval_every=eval_every, tx=OPTIMIZERS[opt](), signed_constant=signed)
            res = S.make_supermask_trainer(model, spec, ds.mean, ds.std)(theta0, keys, data)
            c = jax.tree.map(np.asarray, res.curves)
            out[f"{opt}{'_signed_constant' if signed else ''}"] = {
                "step": c.step[0].tolist(), "test_acc_sampled": c.test_acc_sampled.tolist(),
                "test_acc_threshold": c.test_acc_threshold.tolist(), "density": c.density.tolist(),
                "train_loss": c.train_loss.tolist(), "wall_s": round(time.time() - t0, 1)}
            print(f"  learned {opt} signed={signed}: sampled {c.test_acc_sampled[:, -1].mean():.4f} "
                  f"threshold {c.test_acc_threshold[:, -1].mean():.4f} ({time.time() - t0:.0f} s)", flush=True)
    return out


def study(name: str, a) -> dict:
    t0 = time.time()
    cfg = STUDIES[name]
    ds = D.load(cfg["dataset"], validation_size=0)
    data = device_data(ds)
    model = cfg["model"]()
    keys = jax.random.split(jax.random.PRNGKey(0), a.seeds)
    theta0 = models.run_init(jax.vmap(model.init), keys)
    dense = jax.vmap(lambda p: M.make_mask(p, model.is_prunable))(theta0)
    spec = TrainSpec(optimizer="adam", lr=cfg["lr"], batch_size=60, eval_every=a.iterations)
    final, curves = make_trainer(model, spec, ds.mean, ds.std)(theta0, dense, keys, data, 0, a.iterations)
    res = {"dataset": cfg["dataset"], "seeds": a.seeds, "iterations": a.iterations, "powers": list(a.powers),
           "dense_test_acc": np.asarray(curves.test_acc[:, -1]).tolist(),
           "weights": int(sum(M.size(jax.tree.map(lambda x: x[0], dense)).values()))}
    print(f"{name}: dense {np.mean(res['dense_test_acc']):.4f} ({time.time() - t0:.0f} s)", flush=True)
    t1 = time.time()
    res["criteria"] = criteria_accuracy(model, ds, data, theta0, final, a.powers, cfg["bases"])
    res["criteria_wall_s"] = round(time.time() - t1, 1)
    print(f"  criteria ({res['criteria_wall_s']} s)", flush=True)
    res["learned"] = learned(model, ds, data, theta0, keys, a.learn_steps, a.learn_eval_every, cfg["optimizers"])
    res["wall_s"] = round(time.time() - t0, 1)
    return res


def figure(name: str, res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dens = [100 * d["overall"] for d in res["criteria"]["densities"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, init in zip(axes, ("theta0", "signed_constant")):
        for crit in S.NAMES:
            acc = 100 * np.mean(res["criteria"][crit][init], axis=1)
            ax.plot(dens, acc, marker="o", ms=3, label=crit, lw=2.2 if crit == "large_final_same_sign" else 1.2)
        best = max(np.mean(v["test_acc_sampled"], axis=0)[-1] for k, v in res["learned"].items()
                   if k.endswith("signed_constant") == (init == "signed_constant"))
        ax.axhline(100 * best, color="k", ls=":", label="learned supermask (best)")
        if name == "lenet_mnist":
            ax.axhline(100 * PAPER["supermask_mnist_fc"], color="r", ls="--", label="paper: 86% (MNIST FC)")
        ax.axhline(10, color="gray", lw=0.8)
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.set_title(f"{name}: mask on untrained {'θ0' if init == 'theta0' else 'signed constant'}")
    axes[0].set_ylabel("test accuracy without training (%)")
    axes[1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/results/zhou2019_supermask")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--iterations", type=int, default=3000, help="dense training steps (batch 60)")
    p.add_argument("--powers", type=int, nargs="+", default=[1, 3, 5, 7, 10, 14, 18, 24])
    p.add_argument("--learn-steps", type=int, default=3000)
    p.add_argument("--learn-eval-every", type=int, default=500)
    p.add_argument("--conv", action="store_true",
                   help="run the Conv / Fashion-MNIST study (its sizes: CONV) instead of the LeNet one, adding it "
                        "to an existing results.json; skipped if results.json has it already")
    p.add_argument("--quick", action="store_true", help="toy sizes, for a smoke test")
    a = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    if a.conv:
        for k, v in CONV.items():
            setattr(a, k, v)
    if a.quick:
        # one seed for the Conv study: XLA:CPU runs vmapped (grouped) convolutions slowly
        a.seeds, a.iterations, a.powers, a.learn_steps, a.learn_eval_every = 1 if a.conv else 2, 100, [1, 7], 100, 50
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {"paper": PAPER, "argv": argv, "studies": {}}
    name = "conv_fashion_mnist" if a.conv else "lenet_mnist"
    if a.conv and name in results["studies"]:
        print(f"{path} has {name} already; delete it from the file to rerun")
        return
    if not a.conv:
        results["argv"] = argv  # the page's command line is the LeNet study's
    results["studies"][name] = {**study(name, a), **({"argv": argv} if a.conv else {})}
    path.write_text(json.dumps(results, indent=1))
    figure(name, results["studies"][name], out / f"{name}.png")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
