"""Iterative magnitude pruning of LeNet-300-100 on MNIST (Frankle & Carbin 2018 sec. 4; ICLR 2019).

Reproduces the per-round table (density, early-stop iteration, accuracies) and the
accuracy / early-stop-iteration vs density figure, for several seeds in one program:

    python experiments/lenet_mnist_imp.py --preset lenet_mnist_iclr2019 --seeds 5
    python experiments/lenet_mnist_imp.py --seeds 2 --rounds 4 --iterations 2000   # minutes on a CPU

The figure is written next to the run directory's metrics as ``accuracy_vs_density.png``.
"""

import argparse

from ltjax import lottery, plots, presets, report


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="lenet_mnist_iclr2019", choices=sorted(presets.PRESETS))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--rounds", type=int)
    p.add_argument("--iterations", type=int)
    p.add_argument("--strategy", choices=["reset", "rewind", "continue"])
    p.add_argument("--out", default="runs")
    p.add_argument("--manual-dir")
    a = p.parse_args()

    overrides = {k: v for k, v in dict(seeds=a.seeds, rounds=a.rounds, iterations=a.iterations,
                                       strategy=a.strategy).items() if v is not None}
    config = presets.get(a.preset).replace(**overrides).validate()
    run = lottery.run(config, a.out, manual_dir=a.manual_dir)
    print(report.round_table(run))
    fig_path = run.path / "accuracy_vs_density.png"
    plots.accuracy_vs_density(run, str(fig_path))
    print(f"figure: {fig_path}")


if __name__ == "__main__":
    main()
