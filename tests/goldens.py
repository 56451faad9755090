"""Golden outputs of five short studies, recorded before a redesign and checked after it.

    python -m tests.goldens record   # write tests/goldens/*.npz from the code as it is now
    python -m tests.goldens check    # recompute; bitwise masks and exact metrics on this machine

The studies (issue 20): IMP reset with reinit/shuffle controls; LTR rewind with two scores
and a random control; an LTH_flip run with a SNIP control (SNIP trains from iteration 0, so it
cannot be a control of a ticket rewound to k > 0); an early-ticket grid cell and a gradual-pruning window;
the XOR one-shot / iterative protocol. Each is small (LeNet with one 64-unit hidden layer on
real MNIST, a few hundred iterations; 256 XOR trials) and records every mask it makes and
the metrics a results page reads.

``check`` is the redesign's proof: on the machine the goldens were recorded on, the same
configuration must give the same masks bit for bit and the same metrics. Trained weights
round differently on another CPU, so the CI test (``tests/test_goldens.py``) compares what
holds across machines instead: exact counts, mask agreement, metrics to a tolerance.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent / "goldens"
STUDIES = ("imp_reset_controls", "ltr_two_scores", "lth_flip", "early_grid_gradual", "xor_protocols")


def _quiet(_):
    pass


def _flat(tree, prefix: str) -> dict[str, np.ndarray]:
    """``{prefix/layer/leaf: array}`` of a (mask or metric) pytree, None leaves dropped."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)[0]:
        if leaf is None:
            continue
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        out[f"{prefix}/{name}" if name else prefix] = np.asarray(leaf)
    return out


_ROUND_METRICS = ("density", "remaining", "early_stop_iteration", "test_acc_at_es", "final_test_acc",
                  "train_acc_at_es", "diverged")
_CURVES = ("train_loss", "val_loss", "val_acc", "test_loss", "test_acc")
_CONTROL_METRICS = ("remaining", "final_test_acc", "test_acc_at_es", "early_stop_iteration")


def _lottery_record(run) -> dict[str, np.ndarray]:
    rec = {}
    for rd in run.rounds:
        r = f"round{rd.index}"
        rec.update(_flat(rd.mask, f"mask/{r}"))
        m = rd.metrics
        for k in _ROUND_METRICS:
            rec.update(_flat(m[k], f"metric/{r}/{k}"))
        for k in _CURVES:
            rec[f"metric/{r}/curve_{k}"] = np.asarray(m["curves"][k])
        for name, c in m.get("controls", {}).items():
            for k in _CONTROL_METRICS:
                rec.update(_flat(c[k], f"metric/{r}/controls/{name}/{k}"))
            rec.update(_flat(c["vs_ticket"]["total"], f"metric/{r}/controls/{name}/vs_ticket"))
        if "shared_with_flipped" in m:
            rec[f"metric/{r}/shared_with_flipped"] = np.asarray(m["shared_with_flipped"])
    return rec


def _base(preset: str, **kw):
    from ltjax import presets

    return presets.get(preset).replace(widths=(64,), seeds=2, **kw)


def imp_reset_controls(out: Path) -> dict:
    from ltjax import lottery

    cfg = _base("lenet_mnist_iclr2019", iterations=200, eval_every=100, rounds=3,
                controls=("reinit:1", "shuffle:1"))
    return _lottery_record(lottery.run(cfg, out, progress=False, log=_quiet))


def ltr_two_scores(out: Path) -> dict:
    from ltjax import lottery

    # SNIP starts from θ0 at iteration 0, so it cannot train in a program rewound to k > 0:
    # this study's control is random pruning, and the SNIP control runs in lth_flip (k = 0)
    cfg = _base("lenet_mnist_openlth", iterations=300, eval_every=100, rounds=3, rewind_iteration=100,
                scores=("magnitude", "l1"), controls=("random",))
    return _lottery_record(lottery.run(cfg, out, progress=False, log=_quiet))


def lth_flip(out: Path) -> dict:
    from ltjax import lottery

    cfg = _base("lenet_mnist_lth_snip", iterations=200, eval_every=100, rounds=4, controls=("snip",), flip_round=2,
                patience_every=100, patience=1)
    return _lottery_record(lottery.run(cfg, out, progress=False, log=_quiet))


def early_grid_gradual(out: Path) -> dict:
    from ltjax import early_study

    cfg = _base("lenet_mnist_early")
    cfg = cfg.replace(iterations=3 * cfg.eval_every, lr_drops=(2 * cfg.eval_every,))
    study = early_study.baseline(cfg, out, progress=False, log=_quiet)
    grid = early_study.grid(study, prune_epochs=[1], rewind_epochs=[0, 1], log=_quiet)
    grad = early_study.gradual(study, windows=[(0, 2)], steps=2, log=_quiet)
    stats = study.stats()
    rec = {f"mask/epoch{e}_bits": np.packbits(stats["bits"][e], axis=-1) for e in range(study.epochs + 1)}
    rec["metric/epoch_test_acc"] = stats["test_acc"]
    rec.update({f"metric/layer_rate/{k}": v for k, v in stats["layer_rate"].items()})
    rec["mask/gradual_bits"] = np.asarray(grad["bits"][0], np.uint8)
    rec["metric/grid_final_test_acc"] = np.asarray(grid["per_seed"], np.float64)
    rec["metric/grid_density"] = np.asarray(grid["density"], np.float64)
    rec["metric/gradual_final_test_acc"] = np.asarray(grad["per_seed"], np.float64)
    return rec


def xor_protocols(out: Path) -> dict:
    from ltjax import xor

    model = xor.network(10)
    theta0, mask0, _ = xor.init_trials(model, jax.random.PRNGKey(0), 256)
    train = xor.make_train_fn(model)
    dense = train(theta0, mask0)
    ok = xor.success(model, dense)
    rec = {"metric/dense_db": np.asarray(ok.db), "metric/dense_zl": np.asarray(ok.zl)}
    for protocol, heuristic in (("one_shot", "magnitude_product"), ("iterative", "input_magnitude")):
        tickets = xor.prune_study(train, theta0, mask0, dense, protocol, heuristic)
        for width, t in tickets.items():
            key = f"{protocol}_{heuristic}_{width}"
            rec.update(_flat(t.mask, f"mask/{key}"))
            s = xor.success(model, t.params)
            rec[f"metric/{key}_db"], rec[f"metric/{key}_zl"] = np.asarray(s.db), np.asarray(s.zl)
    return rec


def compute(name: str, out: Path) -> dict[str, np.ndarray]:
    """The record of one study, computed now in a fresh directory under ``out``."""
    return globals()[name](out / name)


def load(name: str) -> dict[str, np.ndarray]:
    with np.load(HERE / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def save(name: str, rec: dict[str, np.ndarray]) -> None:
    HERE.mkdir(exist_ok=True)
    np.savez_compressed(HERE / f"{name}.npz", **rec)


def compare_exact(want: dict, got: dict) -> tuple[int, int, float, list[str]]:
    """(masks bitwise equal, masks, largest metric difference, problems) of two records."""
    problems = sorted(set(want) ^ set(got))
    masks = [k for k in want if k.startswith("mask/") and k in got]
    equal = sum(np.array_equal(want[k], got[k]) for k in masks)
    problems += [f"{k} differs" for k in masks if not np.array_equal(want[k], got[k])]
    worst = 0.0
    for k in want:
        if k.startswith("metric/") and k in got:
            a, b = np.asarray(want[k], np.float64), np.asarray(got[k], np.float64)
            if a.shape != b.shape:
                problems.append(f"{k}: shape {a.shape} vs {b.shape}")
                continue
            both_nan = np.isnan(a) & np.isnan(b)
            d = np.where(both_nan, 0.0, np.abs(a - b))
            worst = max(worst, float(np.nanmax(d, initial=0.0)) if d.size else 0.0)
    return equal, len(masks), worst, problems


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] not in ("record", "check"):
        print(__doc__)
        return 2
    names = argv[1:] or list(STUDIES)
    bad = [n for n in names if n not in STUDIES]
    if bad:
        print(f"unknown studies {bad}; the studies: {', '.join(STUDIES)}")
        return 2
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rec = compute(name, Path(tmp))
            if argv[0] == "record":
                save(name, rec)
                print(f"{name}: recorded {sum(k.startswith('mask/') for k in rec)} masks, "
                      f"{sum(k.startswith('metric/') for k in rec)} metrics")
                continue
            equal, n, worst, problems = compare_exact(load(name), rec)
            failed |= bool(problems) or worst != 0.0
            print(f"{name}: {equal}/{n} masks bitwise equal, largest metric difference {worst:.3g}"
                  + "".join(f"\n  {p}" for p in problems))
    return int(failed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
