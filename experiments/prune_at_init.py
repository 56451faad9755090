"""Pruning at initialization and its sanity checks (Frankle, Dziugaite, Roy & Carbin 2021).

LeNet-300-100 on MNIST at CPU scale. Five methods prune θ0 before any training, globally over
all three layers, to each density of ``--densities`` (one study each, every density a round):

  snip       SNIP's connection sensitivity on one minibatch (Lee et al. 2019)
  synflow    SynFlow, data-free, 100 rescoring steps (Tanaka et al. 2020)
  grasp      GraSP, −θ ⊙ Hg on one minibatch, highest removed (Wang et al. 2020)
  magnitude  |θ0|
  random     a uniformly random mask at the same per-layer density

Beside each ticket, in the same compiled program, the sanity checks: ``shuffle`` (its mask
shuffled within each layer, on its θ0 values), ``reinit`` (its mask, fresh weights) and
``invert`` (the score negated: the lowest-scoring weights kept, same count). Random pruning
gets shuffle and reinit only. For comparison, one-shot magnitude pruning after training
(``oneshot``, reset to θ0: a lottery ticket) with shuffle and reinit.

Layer collapse: for each method, θ0 of seed 0 is pruned to each density of
``--collapse-densities`` (no training) and the largest compression without an empty layer is
reported.

    python experiments/prune_at_init.py --quick
    python experiments/prune_at_init.py --out docs/results/prune_at_init
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import at_init, lottery, scores
from ltjax import data as D
from ltjax import masks as M
from ltjax.config import Config
from ltjax.data.order import batch_indices

METHODS = {
    "snip": dict(mode="at_init", score="snip"),
    "synflow": dict(mode="at_init", score="synflow"),
    "grasp": dict(mode="at_init", score="grasp"),
    "magnitude": dict(mode="at_init", score="magnitude"),
    "random": dict(mode="random_at_init"),
    "lottery_ticket": dict(mode="oneshot", score="magnitude", strategy="reset"),
}
CHECKS = ("shuffle", "reinit", "invert")
SCORED = ("snip", "synflow", "grasp", "magnitude")


def base_config(a) -> Config:
    return Config(name="prune_at_init", dataset="mnist", model="mlp", widths=(300, 100), init="glorot_normal",
                  optimizer="adam", lr=1.2e-3, batch_size=60, validation_size=5000, iterations=a.iterations,
                  eval_every=a.eval_every, scope="global", layer_rates=(), exclude=(), seeds=a.seeds,
                  densities=tuple(a.densities), rounds=len(a.densities) + 1)


def study(cfg: Config, out: Path) -> dict:
    t0 = time.time()
    run = lottery.run(cfg, out / "runs", progress=False)
    rows = []
    for r in range(1, cfg.rounds):
        rd = run.rounds[r]
        m = rd.metrics
        mask = jax.tree.map(jnp.asarray, rd.mask)
        row = {"density": float(np.mean(m["density"])), "test_acc": float(np.mean(m["test_acc_at_es"])),
               "collapsed": bool(np.any(jax.vmap(at_init.collapsed)(mask)))}
        for name, g in m.get("controls", {}).items():
            row[name] = float(np.mean(g["test_acc_at_es"]))
        rows.append(row)
    dense = float(np.mean(run.rounds[0].metrics["test_acc_at_es"]))
    return {"dense_test_acc": dense, "rounds": rows, "wall_s": round(time.time() - t0, 1), "run": str(run.path)}


def collapse_sweep(cfg: Config, densities: list[float]) -> dict:
    """Largest compression (1/density) without a collapsed layer, per method, on seed 0's θ0."""
    ds = D.load(cfg.dataset, validation_size=cfg.validation_size, split_seed=cfg.split_seed)
    model = lottery.build_model(cfg, ds)
    init_keys, data_keys = lottery.ticket_keys(cfg)
    theta0 = model.init(init_keys[0])
    dense = M.make_mask(theta0, model.is_prunable)
    idx = batch_indices(data_keys[0], len(ds.x_train), cfg.batch_size, jnp.int32(0))
    x, y, loss = jnp.asarray(ds.x_train[idx]), jnp.asarray(ds.y_train[idx]), lottery.make_loss(model, ds.mean, ds.std)
    total = sum(M.size(dense).values())
    out = {}
    for name in SCORED:
        # arrays as arguments, not constants: XLA would spend minutes constant-folding θ0
        fn = jax.jit(lambda p, m, k, x, y, name=name: at_init.prune_at_init(
            name, p, m, keep=k, batch=scores.Batch(loss, x, y, model)))
        per = {}
        for d in densities:
            mask = fn(theta0, dense, jnp.int32(round(d * total)), x, y)
            per[str(d)] = {k: int(v) for k, v in M.count(mask).items()}
        ok = [1 / d for d in densities if all(per[str(d)].values())]
        out[name] = {"largest_compression": max(ok) if ok else None, "survivors": per}
    return out


CLAIMS = """\
| claim | paper | here |
|---|---|---|
| SynFlow avoids layer collapse at compressions where SNIP, GraSP and magnitude collapse ("maximal critical compression") | Tanaka et al. 2020, sec. 3-6, Fig. 1 and 6 | {collapse} |
| Shuffling the masks within each layer does not hurt SNIP, GraSP, SynFlow or magnitude at init (only the per-layer proportions matter) | Frankle et al. 2021, sec. 5 | {shuffle} |
| Reinitializing does not hurt them either | Frankle et al. 2021, sec. 5 | {reinit} |
| Inverting the scores hurts SNIP and SynFlow a lot; GraSP does the same or better inverted | Frankle et al. 2021, sec. 5 | {invert} |
| Lottery tickets (magnitude after training, reset to θ0) lose accuracy when shuffled or reinitialized at high sparsity | Frankle & Carbin 2018; Frankle et al. 2021 (LTR) | {lottery} |
"""


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def page(res: dict) -> str:
    """The results page: settings, the accuracy table, the collapse table, the claims."""
    st = res["settings"]
    lines = ["# Pruning at initialization and its sanity checks (LeNet-300-100 / MNIST)", "",
             f"`python experiments/prune_at_init.py --iterations {st['iterations']} --eval-every {st['eval_every']} "
             f"--densities {' '.join(map(str, st['densities']))} --out …` (script: `experiments/prune_at_init.py`; "
             "raw numbers: `prune_at_init/results.json`).", "",
             f"CPU scale: {st['seeds']} seed, {st['iterations']} iterations of Adam 1.2e-3, batch 60 "
             f"(≈{st['iterations'] * 60 / 55_000:.1f} epochs; Frankle & Carbin 2018 train LeNet for 50k iterations; "
             "Tanaka et al. and Frankle et al. 2021 study VGG and ResNets on CIFAR and ImageNet, so their claims "
             "are tested here on a network they did not use), Glorot-normal θ0, 5k validation images; "
             "pruning is global over all three layers (no layer excluded). Accuracy is test accuracy at the "
             "iteration of best validation accuracy (evaluated every "
             f"{st['eval_every']} iterations). One seed: differences under ~0.5 points are noise.", "",
             "## Test accuracy (%) of each method's ticket and its sanity checks", "",
             "| method | density | ticket | shuffle | reinit | invert | collapsed |", "|---|---|---|---|---|---|---|"]
    for name, m in res["methods"].items():
        for row in m["rounds"]:
            lines.append(f"| {name} | {100 * row['density']:.2f}% | {_pct(row['test_acc'])} | "
                         f"{_pct(row.get('shuffle'))} | {_pct(row.get('reinit'))} | {_pct(row.get('invert'))} | "
                         f"{'yes' if row['collapsed'] else 'no'} |")
    dense = next(iter(res["methods"].values()))["dense_test_acc"]
    lines += ["", f"Dense network: {_pct(dense)}%. Wall time per study: "
              + ", ".join(f"{n} {m['wall_s']:.0f} s" for n, m in res["methods"].items())
              + f"; the collapse sweep {res['collapse_wall_s']:.0f} s.", "",
              "## Layer collapse (no training)", "",
              "θ0 of seed 0 pruned to each density; survivors per layer (fc1, fc2, out). "
              "A 0 is a collapsed layer.", "",
              "| method | " + " | ".join(f"1/{round(1 / float(d))}" for d in st["collapse_densities"])
              + " | largest compression without collapse |",
              "|---|" + "---|" * (len(st["collapse_densities"]) + 1)]
    for name, c in res["collapse"].items():
        cells = [", ".join(str(v) for v in c["survivors"][str(d)].values()) for d in st["collapse_densities"]]
        lc = c["largest_compression"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'none' if lc is None else f'{lc:.0f}x'} |")
    lines += ["", "## The papers' claims beside these runs", "", CLAIMS.format_map(collections.defaultdict(lambda: "not judged", res.get("verdicts", {})))]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/prune_at_init")
    p.add_argument("--iterations", type=int, default=5000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.03, 0.01, 0.003])
    p.add_argument("--collapse-densities", type=float, nargs="+",
                   default=[0.1, 0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--quick", action="store_true", help="300 iterations, two densities")
    p.add_argument("--page", metavar="RESULTS_JSON", help="only write the results page (beside the JSON) from a "
                   "finished study's results.json, with verdicts from a verdicts.json next to it if present")
    a = p.parse_args(argv)
    if a.page:
        res = json.loads(Path(a.page).read_text())
        verdicts = Path(a.page).with_name("verdicts.json")
        res["verdicts"] = json.loads(verdicts.read_text()) if verdicts.exists() else {}
        Path(a.page).with_suffix(".md").write_text(page(res))
        return 0
    if a.quick:
        a.iterations, a.eval_every, a.densities = 300, 100, [0.1, 0.01]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    base = base_config(a)
    results = {"settings": {k: v for k, v in vars(a).items() if k != "methods"}, "methods": {}}
    t0 = time.time()
    results["collapse"] = collapse_sweep(base, a.collapse_densities)
    results["collapse_wall_s"] = round(time.time() - t0, 1)
    for name in a.methods:
        controls = CHECKS if name in SCORED else ("shuffle", "reinit")
        cfg = base.replace(**METHODS[name], controls=controls).validate()
        results["methods"][name] = study(cfg, out)
        print(name, json.dumps(results["methods"][name]["rounds"]), flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
