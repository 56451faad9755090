"""Named configurations from the papers. Presets are data: ``--set key=value`` overrides any field.

Units: ``iterations`` are minibatch steps; ``prune_rate`` and ``layer_rates`` are fractions
of the *surviving* weights removed per round (sparsity steps), not densities.
"""

from __future__ import annotations

from ltjax.config import Config, ConfigError

PRESETS: dict[str, tuple[Config, str]] = {
    "lenet_mnist_2018": (
        Config(
            name="lenet_mnist_2018", dataset="mnist", model="mlp", widths=(300, 100),
            init="trunc_normal", init_std=0.1, optimizer="sgd", lr=0.05, batch_size=100,
            iterations=50_000, eval_every=100, scope="layerwise", prune_rate=0.2,
            layer_rates=(("out", 0.1),), strategy="reset", rounds=22,
        ),
        "Frankle & Carbin 2018 (arXiv v1) sec. 3-4: LeNet-300-100, N(0, 0.1²) cut at 2 std, "
        "SGD lr 0.05, batch 100, 50k iterations; per round prune 20% of each hidden layer and "
        "10% of the output layer, reset to theta0. 22 rounds: round 21 keeps 0.96% of weights.",
    ),
    "lenet_mnist_iclr2019": (
        Config(
            name="lenet_mnist_iclr2019", dataset="mnist", model="mlp", widths=(300, 100),
            init="glorot_normal", optimizer="adam", lr=1.2e-3, batch_size=60,
            iterations=50_000, eval_every=100, validation_size=5000, scope="layerwise",
            prune_rate=0.2, layer_rates=(("out", 0.1),), strategy="reset", rounds=22,
        ),
        "Frankle & Carbin ICLR 2019 / LTH-vs-SNIP report sec. 5.1: LeNet-300-100, Glorot "
        "normal, Adam 1.2e-3, batch 60, 50k iterations, 5k validation; 20% hidden / 10% "
        "output per round, reset to theta0.",
    ),
    "lenet_mnist_openlth": (
        Config(
            name="lenet_mnist_openlth", dataset="mnist", model="mlp", widths=(300, 100),
            init="kaiming_normal", optimizer="sgd", lr=0.1, batch_size=128,
            iterations=18_760, eval_every=469, scope="global", prune_rate=0.2,
            layer_rates=(), exclude=("out",), strategy="rewind", rewind_iteration=0, rounds=20,
        ),
        "Layerwise-importance paper, Appendix A (OpenLTH's lenet): Kaiming normal, SGD 0.1, "
        "batch 128, 40 epochs = 18,760 iterations (40 x 469), global magnitude pruning 20% "
        "per round excluding the output layer, rewind to iteration 0.",
    ),
}


def get(name: str) -> Config:
    """A preset by name; an unknown name raises with the valid choices."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name][0]


def describe(name: str) -> str:
    return PRESETS[name][1]
