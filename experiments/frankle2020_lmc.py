"""Linear mode connectivity and instability (Frankle, Dziugaite, Roy & Carbin, ICML 2020).

Three studies at CPU scale, each one compiled program per analysis (every copy, every k and
every one of the 31 interpolation points together; see :mod:`ltjax.stability`):

  dense_lenet   LeNet-300-100 / MNIST, the paper's LeNet recipe (Adam 1.2e-3, batch 60,
                no schedule) shortened to ``--lenet-iterations``: instability of W_k vs k
  dense_bn      a batch-norm network, CIFAR ResNet-8 of width 4 (He et al.'s ResNet-(6n+2)
                with n = 1), on Fashion-MNIST (SGD momentum 0.9, lr 0.05, batch 64, shortened
                to ``--bn-iterations``): instability vs k, batch-norm statistics recomputed at
                every α from ``--bn-batches`` training batches
  imp_lenet     IMP on LeNet-300-100 / MNIST (layerwise, 20% of each hidden layer and 10% of
                the output layer per round, the 2018 paper's rates) with ``reset`` (θ0) and
                with ``rewind`` to iteration ``--rewind``: the instability of every round's
                sparse network, and its accuracy against the dense network's; and random
                pruning at each round's layer counts, from θ0

Error is 1 − accuracy on the 10,000 test images; train error on the first 10,000 training
images (the ResNet: the first ``--bn-train-examples``). Results: ``<out>/results.json``
(written after each study, resumable: a finished study is kept), then
``experiments/frankle2020_lmc_report.py`` writes the page and its figures.

    python experiments/frankle2020_lmc.py --quick
    python experiments/frankle2020_lmc.py --out docs/results/frankle2020_lmc
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from ltjax import controls, lottery, models, stability
from ltjax import data as D
from ltjax.config import Config
from ltjax.train import TrainSpec, device_data

LENET = dict(optimizer="adam", lr=1.2e-3, batch_size=60)
BN = dict(optimizer="momentum", lr=0.05, momentum=0.9, batch_size=64)


def _rows(res: stability.Instability, ks) -> dict:
    return {"k": [int(k) for k in ks], "alphas": res.alphas.tolist(), "test_error": res.test_error.tolist(),
            "train_error": res.train_error.tolist(), "test_instability": res.test_instability.tolist(),
            "train_instability": res.train_instability.tolist()}


def dense(model, dataset: str, recipe: dict, iterations: int, ks, seed: int, a) -> dict:
    """Instability of the dense network's W_k for each k: one trajectory, read at each k, then a
    pair of copies per k trained to ``iterations``."""
    ds = D.load(dataset, validation_size=0, manual_dir=a.manual_dir)
    data = device_data(ds)
    spec = TrainSpec(**recipe, eval_every=iterations)
    key = jax.random.PRNGKey(seed)
    theta0 = models.run_init(model.init, jax.random.fold_in(key, 0))
    conv = model.stateful  # the convolutional network of this script
    chunk = 1 if (jax.default_backend() == "cpu" and conv) else None  # XLA:CPU's batched convs are slow
    t0 = time.perf_counter()
    res = stability.versus_k(model, spec, ds.mean, ds.std, theta0, None, jax.random.fold_in(key, 1), ks, iterations,
                             data, bn_batches=a.bn_batches, ticket_chunk=chunk, alpha_chunk=1 if conv else None,
                             train_examples=a.bn_train_examples if conv else 10_000)
    out = _rows(res, ks)
    out.update(dataset=dataset, iterations=iterations, recipe=recipe, seed=seed, bn_batches=a.bn_batches if conv else 0,
               train_examples=a.bn_train_examples if conv else 10_000, seconds=time.perf_counter() - t0)
    return out


def imp(a) -> dict:
    """IMP with reset and with rewind, then every round's pair of copies per strategy; beside the
    reset run's pairs, in the same program, random pruning: θ0 under a uniformly random mask with
    each layer's count of the round's IMP mask (:func:`ltjax.controls.random_prune`)."""
    base = Config(name="frankle2020_lmc_imp", dataset="mnist", model="mlp", widths=(300, 100), init="glorot_normal",
                  **LENET, validation_size=0, iterations=a.lenet_iterations, eval_every=100,
                  scope="layerwise", prune_rate=0.2, layer_rates=(("out", 0.1),), rounds=a.rounds, seeds=1,
                  seed=a.seed)
    ds = D.load("mnist", validation_size=0, manual_dir=a.manual_dir)
    out = {}
    for strategy, k in (("reset", 0), ("rewind", a.rewind)):
        cfg = base.replace(strategy=strategy, rewind_iteration=k).validate()
        t0 = time.perf_counter()
        run = lottery.run(cfg, a.runs, manual_dir=a.manual_dir, progress=sys.stderr.isatty())
        t_imp = time.perf_counter() - t0
        pairs = stability.run_pairs(run)
        n = len(pairs.labels)
        starts, masks, labels = pairs.starts, pairs.masks, [(strategy, r) for r, _ in pairs.labels]
        if strategy == "reset":
            keys = jax.random.split(jax.random.PRNGKey(2000 + a.seed), n)
            rand = jax.vmap(controls.random_prune)(keys, starts, masks)
            starts, masks = (jax.tree.map(lambda x, y: np.concatenate([x, y]), u, v) for u, v in zip((starts, masks),
                                                                                                    rand))
            labels += [("random", r) for r, _ in pairs.labels]
        model = lottery.build_model(cfg, ds)
        t0 = time.perf_counter()
        res = stability.analyze(model, cfg.train_spec(), ds.mean, ds.std, starts, masks,
                                stability.copy_keys(jax.random.PRNGKey(1000 + a.seed), len(labels)),
                                pairs.step, pairs.stop, device_data(ds))
        seconds = time.perf_counter() - t0
        for name in dict.fromkeys(lab for lab, _ in labels):
            idx = [i for i, (lab, _) in enumerate(labels) if lab == name]
            rows = {key: [v[i] for i in idx] for key, v in _rows(res, [pairs.step] * len(labels)).items()
                    if key not in ("k", "alphas")}
            rounds = [labels[i][1] for i in idx]
            rows.update(k=pairs.step, alphas=res.alphas.tolist(), run_dir=str(run.path), rounds=rounds,
                        density=[float(np.mean(run.rounds[r].metrics["density"])) for r in rounds],
                        copies_test_acc=[float(1 - 0.5 * (res.test_error[i][0] + res.test_error[i][-1])) for i in idx],
                        imp_seconds=t_imp, seconds=seconds)
            if name != "random":
                rows["final_test_acc"] = [float(run.rounds[r].metrics["final_test_acc"][0]) for r in rounds]
            out[name] = rows
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a minute or two: short runs, few k, 3 rounds")
    p.add_argument("--lenet-iterations", type=int, default=5000, help="T for LeNet (the paper's recipe: 24,000)")
    p.add_argument("--bn-iterations", type=int, default=1200, help="T for ResNet-8")
    p.add_argument("--lenet-ks", default="0,25,100,500,2000")
    p.add_argument("--bn-ks", default="0,50,200,600")
    p.add_argument("--bn-train-examples", type=int, default=2000, help="training images the ResNet's train error uses")
    p.add_argument("--bn-batches", type=int, default=30, help="training batches for batch-norm statistics at each α")
    p.add_argument("--rounds", type=int, default=16,
                   help="IMP rounds including the dense round 0 (round 15: 3.6%% remaining)")
    p.add_argument("--rewind", type=int, default=100, help="k of the rewind IMP run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--studies", default="dense_lenet,dense_bn,imp_lenet")
    p.add_argument("--out", default="docs/results/frankle2020_lmc")
    p.add_argument("--runs", default="runs", help="parent of the IMP run directories (resumable)")
    p.add_argument("--manual-dir")
    a = p.parse_args(argv)
    if a.quick:
        a.lenet_iterations, a.bn_iterations, a.lenet_ks, a.bn_ks, a.rounds, a.rewind, a.bn_batches = (
            400, 100, "0,100", "0,50", 3, 100, 4)
        a.bn_train_examples = 1000
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("results_quick.json" if a.quick else "results.json")
    settings = {k: v for k, v in vars(a).items() if k not in ("out", "runs", "manual_dir", "studies")}
    res = json.loads(path.read_text()) if path.exists() else {}
    if res.get("settings") != settings:
        res = {"settings": settings}  # other settings: nothing kept applies
    ks = lambda s: [int(k) for k in s.split(",")]  # noqa: E731
    studies = {
        "dense_lenet": lambda: dense(models.mlp((300, 100), init="glorot_normal"), "mnist", LENET,
                                     a.lenet_iterations, ks(a.lenet_ks), a.seed, a),
        "dense_bn": lambda: dense(models.wrap(models.resnet20().module.clone(depth=8, width=4),
                                              input_shape=(28, 28, 1), num_outputs=10),
                                  "fashion_mnist", BN, a.bn_iterations, ks(a.bn_ks), a.seed, a),
        "imp_lenet": lambda: imp(a),
    }
    for name in a.studies.split(","):
        if name not in studies:
            raise SystemExit(f"unknown study {name!r}; studies: {', '.join(studies)}")
        if name in res:
            print(f"{name}: kept from {path}", flush=True)
            continue
        t0 = time.perf_counter()
        res[name] = studies[name]()
        res[name]["wall_seconds"] = time.perf_counter() - t0
        path.write_text(json.dumps(res, indent=1))
        print(f"{name}: done in {res[name]['wall_seconds']:.0f} s, wrote {path}", flush=True)
    return res


if __name__ == "__main__":
    main()
