"""Weight rewinding vs learning-rate rewinding vs fine-tuning (Renda, Frankle & Carbin 2020).

Three IMP runs of one recipe that differ only in ``strategy``: every round r ≥ 1 prunes the
previous round's trained weights, then retrains for the same budget, ``iterations - k``
iterations on the same batches (iterations k … iterations-1 of each seed's data order):

  rewind     θk ⊙ m, the learning-rate schedule from iteration k (weight rewinding, LTR)
  lr_rewind  the previous round's trained weights ⊙ m, the schedule from iteration k
  finetune   the previous round's trained weights ⊙ m, the schedule's last learning rate

Accuracy is the test accuracy at the end of each round's retraining (the recipe keeps no
validation split, so nothing is selected on the test set). The recipe's learning rate is
constant, under which lr_rewind and finetune are the same computation; ``--lr-drops`` gives
the schedule a step (Renda et al.'s networks all train on step schedules).

    python experiments/renda2020_lr_rewinding.py --quick
    python experiments/renda2020_lr_rewinding.py --out docs/results/renda2020_lr_rewinding
    python experiments/renda2020_lr_rewinding_report.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from ltjax import lottery, presets

STRATEGIES = ("rewind", "lr_rewind", "finetune")


def study_configs(preset: str, seeds: int, iterations: int, lr_drops: tuple[int, ...], rounds: int,
                  eval_every: int, k: int) -> dict:
    """The three runs' configurations: the preset with the CPU-scale settings, one per strategy."""
    base = presets.get(preset).replace(seeds=seeds, iterations=iterations, lr_drops=lr_drops, rounds=rounds,
                                       eval_every=eval_every, rewind_iteration=k)
    return {s: base.replace(strategy=s).validate() for s in STRATEGIES}


def summarize(run) -> list[dict]:
    """Per round: density (fraction remaining of all prunable weights, output layer included) and
    the final test accuracy of each seed, with mean, min and max over the seeds that did not diverge."""
    rows = []
    for rd in run.rounds:
        m = rd.metrics
        ok = ~np.asarray(m["diverged"], bool)
        acc = np.asarray(m["final_test_acc"], np.float64)
        rows.append({"round": rd.index, "density": float(np.mean(m["density"])),
                     "final_test_acc": [float(x) for x in acc], "diverged": int((~ok).sum()),
                     "mean": float(acc[ok].mean()) if ok.any() else None,
                     "min": float(acc[ok].min()) if ok.any() else None,
                     "max": float(acc[ok].max()) if ok.any() else None,
                     "seconds": float(m["seconds"])})
    return rows


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s, label in (("rewind", "weight rewinding"), ("lr_rewind", "learning-rate rewinding"),
                     ("finetune", "fine-tuning")):
        rows = [r for r in res["strategies"][s]["rows"] if r["mean"] is not None]
        d = [100 * r["density"] for r in rows]
        mean = np.array([100 * r["mean"] for r in rows])
        err = [mean - [100 * r["min"] for r in rows], [100 * r["max"] for r in rows] - mean]
        ax.errorbar(d, mean, yerr=err, marker="o", ms=3, capsize=2, label=label)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("test accuracy at the end of retraining (%)")
    c = res["config"]
    ax.set_title(f"{c['name']}: {c['seeds']} seed(s), {c['iterations'] - c['rewind_iteration']} retraining "
                 f"iterations/round, lr {c['lr']} ×{c['lr_drop_factor']} at {list(c['lr_drops'])}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="lenet_mnist_openlth")
    p.add_argument("--quick", action="store_true", help="about a minute: 1 seed, 3 rounds of 938 iterations")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--iterations", type=int, default=2814, help="per round (the recipe: 18,760)")
    p.add_argument("--lr-drops", default="1876", help="comma-separated iterations of 10x drops ('' for none)")
    p.add_argument("--rounds", type=int, default=15, help="rounds including the dense round 0 (the recipe: 20)")
    p.add_argument("--eval-every", type=int, default=469)
    p.add_argument("--rewind-iteration", type=int, default=0, help="k (the recipe: 0)")
    p.add_argument("--out", default="docs/results/renda2020_lr_rewinding")
    p.add_argument("--runs", default="runs", help="parent of the run directories (resumable)")
    p.add_argument("--manual-dir")
    p.add_argument("--ticket-chunk", type=int)
    a = p.parse_args(argv)
    if a.quick:
        a.seeds, a.iterations, a.lr_drops, a.rounds = 1, 938, "469", 3
    drops = tuple(int(t) for t in a.lr_drops.split(",") if t.strip())
    cfgs = study_configs(a.preset, a.seeds, a.iterations, drops, a.rounds, a.eval_every, a.rewind_iteration)
    conv_on_cpu = jax.default_backend() == "cpu" and cfgs["rewind"].model.startswith("conv")
    res = {"preset": a.preset, "quick": a.quick, "config": cfgs["rewind"].to_dict(), "strategies": {}}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{a.preset}{'_quick' if a.quick else ''}"
    seconds = dict.fromkeys(cfgs, 0.0)
    # Round by round, the three strategies in turn (``rounds`` is not part of a run's hash, so
    # each call resumes the same run one round further): a study stopped early has every
    # strategy at the same depth, and the results are written after every round.
    for r in range(1, a.rounds + 1):
        for s, cfg in cfgs.items():
            t0 = time.perf_counter()
            run = lottery.run(cfg.replace(rounds=r), a.runs, manual_dir=a.manual_dir, progress=sys.stderr.isatty(),
                              ticket_chunk=a.ticket_chunk or (1 if conv_on_cpu else None))
            seconds[s] += time.perf_counter() - t0
            res["strategies"][s] = {"run_dir": str(run.path), "wall_seconds": seconds[s], "rows": summarize(run)}
        res["rounds_done"] = r
        (out / f"{tag}.json").write_text(json.dumps(res, indent=1))
        plot(res, out / f"{tag}.png")
        print(f"round {r - 1} of every strategy done: wrote {out / (tag + '.json')} and {out / (tag + '.png')}",
              flush=True)
    return res


if __name__ == "__main__":
    main()
