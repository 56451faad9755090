"""Named configurations from the papers. Presets are data: ``--set key=value`` overrides any field.

Units: ``iterations`` are minibatch steps; ``prune_rate`` and ``layer_rates`` are fractions
of the *surviving* weights removed per round (sparsity steps), not densities.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

from ltjax import registry
from ltjax.config import Config, ConfigError, did_you_mean

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
            init="kaiming_normal", optimizer="sgd", lr=0.1, batch_size=128, validation_size=0,
            iterations=18_760, eval_every=469, scope="global", prune_rate=0.2,
            layer_rates=(), exclude=("out",), strategy="rewind", rewind_iteration=0, rounds=20,
        ),
        "Layerwise-importance paper, Appendix A (OpenLTH's lenet): Kaiming normal, SGD 0.1, "
        "batch 128, 40 epochs = 18,760 iterations (40 x 469: all 60k training images, no "
        "validation split), global magnitude pruning 20% per round excluding the output "
        "layer, rewind to iteration 0.",
    ),
    "resnet20_cifar10_ltr": (
        Config(
            name="resnet20_cifar10_ltr", dataset="cifar10", model="resnet20", widths=(),
            init="kaiming_normal", optimizer="momentum", lr=0.1, momentum=0.9, weight_decay=1e-4,
            lr_drops=(31_280, 46_920), batch_size=128, iterations=62_560, eval_every=40,
            validation_size=0, augment="cifar", scope="global", prune_rate=0.2, layer_rates=(),
            strategy="rewind", rewind_iteration=1000, rounds=41,
        ),
        "Layerwise-importance paper, Appendix A: ResNet-20 / CIFAR-10 (TFDS download), Kaiming normal, "
        "SGD momentum 0.9, lr 0.1, 10x drops at epochs 80 and 120, weight decay 1e-4, batch 128, "
        "160 epochs of 391 iterations, pad-crop-flip augmentation; global pruning 20% per round, 40 "
        "rounds, rewind to iteration 1000. Evaluation every 40 iterations, the largest interval "
        "dividing both 1000 and 62,560 (rounds train from iteration 1000 in whole evaluation chunks).",
    ),
    "vgg16_cifar10_ltr": (
        Config(
            name="vgg16_cifar10_ltr", dataset="cifar10", model="vgg16", widths=(),
            init="kaiming_normal", optimizer="momentum", lr=0.1, momentum=0.9, weight_decay=1e-4,
            lr_drops=(31_280, 46_920), batch_size=128, iterations=62_560, eval_every=80,
            validation_size=0, augment="cifar", scope="global", prune_rate=0.2, layer_rates=(),
            strategy="rewind", rewind_iteration=2000, rounds=36,
        ),
        "Layerwise-importance paper, Appendix A: VGG-16 / CIFAR-10 (TFDS download), the ResNet-20 "
        "recipe (SGD momentum 0.9, lr 0.1, drops at epochs 80 and 120, weight decay 1e-4, batch 128, "
        "160 epochs, augmentation), global pruning 20% per round, 35 rounds, rewind to iteration 2000; "
        "evaluation every 80 iterations, the largest interval dividing 2000 and 62,560.",
    ),
    "resnet18_tiny_imagenet_ltr": (
        Config(
            name="resnet18_tiny_imagenet_ltr", dataset="tiny_imagenet", model="resnet18", widths=(),
            init="kaiming_normal", optimizer="momentum", lr=0.2, momentum=0.9, weight_decay=1e-4,
            lr_drops=(39_100, 58_650), batch_size=256, iterations=78_200, eval_every=200,
            validation_size=0, augment="cifar", scope="global", prune_rate=0.2, layer_rates=(),
            strategy="rewind", rewind_iteration=1000, rounds=41,
        ),
        "Layerwise-importance paper, Appendix A: ResNet-18 (3x3 stem, no max pool) / TinyImageNet "
        "(Stanford's archive in the manual directory; its labelled validation set is the test set), "
        "Kaiming normal, SGD momentum 0.9, lr 0.2, 10x drops at epochs 100 and 150, weight decay 1e-4, "
        "batch 256, 200 epochs of 391 iterations, 4-pixel pad-crop-flip augmentation (the paper names "
        "none for TinyImageNet); global pruning 20% per round, 40 rounds, rewind to iteration 1000. "
        "Evaluation every 200 iterations, the largest interval dividing 1000 and 78,200.",
    ),
    # ImageNet scale (docs/scale.md): the data is streamed from TFDS's ArrayRecord files, one ticket
    # may span several devices (--devices-per-ticket), and a round saves its state every epoch.
    "resnet50_imagenet_ltr": (
        Config(
            name="resnet50_imagenet_ltr", dataset="imagenet2012", model="resnet50", widths=(),
            init="kaiming_normal", optimizer="momentum", lr=0.4, momentum=0.9, weight_decay=1e-4,
            warmup_iterations=6255, lr_drops=(37_530, 75_060, 100_080), batch_size=1024, iterations=112_590,
            eval_every=1251, checkpoint_every=1251, validation_size=0, augment="imagenet", scope="global",
            prune_rate=0.2, layer_rates=(), exclude=(), strategy="rewind", rewind_iteration=6255, rounds=9,
        ),
        "ResNet-50 / ImageNet with rewinding, the recipe of Frankle et al. 2020 (Linear Mode "
        "Connectivity and the LTH, Table 1) as OpenLTH's imagenet_resnet_50 hyperparameters give it: Kaiming "
        "normal, SGD momentum 0.9, lr 0.4 (batch 1024) with 5 epochs of linear warmup, 10x drops at "
        "epochs 30, 60 and 80, weight decay 1e-4, 90 epochs of 1,251 iterations (1,281,167 images, no "
        "validation split; TFDS's validation split is the test set), random-resized-crop and flip "
        "augmentation; global magnitude pruning 20% per round, rewind to iteration 6,255 (epoch 5: the "
        "LMC paper finds ResNet-50 stable to SGD noise only a few epochs into training, so rewinding "
        "to k = 0 fails there; --set rewind_iteration=... for another k). 9 rounds: round 8 keeps "
        "16.8% (83% sparsity; the slides quote 80%). Evaluation and a mid-round checkpoint every epoch. "
        "Reads imagenet2012 from the manual directory (ILSVRC2012_img_{train,val}.tar), streamed.",
    ),
    "synthetic_imagenet": (
        Config(
            name="synthetic_imagenet", dataset="synthetic_imagenet2012", model="resnet50", widths=(),
            init="kaiming_normal", optimizer="momentum", lr=0.4 * 2 / 1024, momentum=0.9, weight_decay=1e-4,
            warmup_iterations=1, lr_drops=(4,), batch_size=2, iterations=6, eval_every=2, checkpoint_every=2,
            validation_size=0, augment="imagenet", scope="global", prune_rate=0.2, layer_rates=(), exclude=(),
            strategy="rewind", rewind_iteration=2, rounds=2,
        ),
        "A smoke-test stand-in of resnet50_imagenet_ltr: the same network, optimizer, augmentation, "
        "pruning and rewinding, on synthetic_imagenet2012 (1,000 classes of 224x224x3 images generated "
        "on demand, so it streams like ImageNet and needs no data) at toy length: batch 2 (the lr "
        "scaled linearly), 6 iterations, rewind to 2, an evaluation and a mid-round checkpoint every "
        "2, 2 rounds. It checks the whole path end to end, not accuracy.",
    ),
    # The early-ticket paper (Appendix A): one baseline run watched epoch by epoch
    # (ltjax.early_study); iterations are whole epochs (training examples // batch, drop last).
    "resnet20_cifar10_early": (
        Config(
            name="resnet20_cifar10_early", dataset="cifar10", model="resnet20", widths=(),
            init="kaiming_normal", optimizer="momentum", lr=0.1, momentum=0.9, weight_decay=1e-4,
            lr_drops=(46_800, 62_400), batch_size=128, iterations=78_000, eval_every=390,
            validation_size=0, augment="cifar", scope="global", prune_rate=0.8, layer_rates=(),
        ),
        "Early-ticket paper, Appendix A: ResNet-20 / CIFAR-10, SGD momentum 0.9, lr 0.1, 10x drops "
        "at epochs 120 and 160, weight decay 1e-4, 200 epochs; batch 128 and pad-crop-flip (the paper "
        "names neither) = 390 iterations per epoch. Pruning: 80% global, first and last layer kept.",
    ),
    "lenet_mnist_early": (
        Config(
            name="lenet_mnist_early", dataset="mnist", model="mlp", widths=(300, 100),
            init="kaiming_normal", optimizer="momentum", lr=0.05, momentum=0.9, weight_decay=1e-4,
            lr_drops=(5_148, 6_864), batch_size=128, iterations=8_580, eval_every=429,
            validation_size=5000, scope="global", prune_rate=0.8, layer_rates=(), exclude=("out",),
        ),
        "The early-ticket recipe's shape on LeNet-300-100 / MNIST for a CPU: SGD momentum 0.9, lr "
        "0.05, weight decay 1e-4, 20 epochs of 429 iterations (55k images, batch 128), 10x drops at "
        "epochs 12 and 16 (60% and 80% of training, as 120 and 160 of 200). 80% global pruning of "
        "fc1 and fc2 (the output layer kept, as OpenLTH does: keeping fc1 too would leave one layer).",
    ),
    "conv2_fashion_mnist_early": (
        Config(
            name="conv2_fashion_mnist_early", dataset="fashion_mnist", model="conv2", widths=(256, 256),
            init="kaiming_normal", optimizer="momentum", lr=0.02, momentum=0.9, weight_decay=1e-4,
            lr_drops=(2_748, 3_664), batch_size=60, iterations=4_580, eval_every=916,
            validation_size=5000, scope="global", prune_rate=0.8, layer_rates=(),
        ),
        "The early-ticket recipe's shape on Conv-2 / Fashion-MNIST, sized for a CPU: SGD momentum "
        "0.9, lr 0.02, weight decay 1e-4, 5 epochs of 916 iterations (55k images, batch 60), 10x "
        "drops at epochs 3 and 4. 80% global pruning.",
    ),
    # The LTH-vs-SNIP report (sec. 5.1): 25 epochs, 10 pruning rounds, patience early stopping;
    # every round trains a SNIP and an iterative-SNIP network of the ticket's size beside it.
    "lenet_mnist_lth_snip": (
        Config(
            name="lenet_mnist_lth_snip", dataset="mnist", model="mlp", widths=(300, 100),
            init="glorot_normal", optimizer="adam", lr=1.2e-3, batch_size=60,
            iterations=22_900, eval_every=100, validation_size=5000, scope="layerwise",
            prune_rate=0.2, layer_rates=(("out", 0.1),), strategy="reset", rounds=11,
            early_stop="patience", patience=4, patience_every=500, controls=("snip", "isnip"),
        ),
        "LTH-vs-SNIP report sec. 5.1: LeNet-300-100 / MNIST, Glorot normal, Adam 1.2e-3, batch 60, "
        "25 epochs (22,900 iterations of 916 per epoch), 5k validation; 20% hidden / 10% output per "
        "round for 10 rounds, reset to theta0; early stop on validation accuracy every 500 iterations "
        "with patience 4; SNIP and iterative-SNIP networks of each ticket's size trained beside it.",
    ),
    "conv2_cifar10_lth_snip": (
        Config(
            name="conv2_cifar10_lth_snip", dataset="cifar10", model="conv2", widths=(256, 256),
            init="glorot_normal", optimizer="adam", lr=2e-4, batch_size=60,
            iterations=18_750, eval_every=250, validation_size=5000, scope="layerwise",
            prune_rate=0.2, layer_rates=(("conv*", 0.1), ("out", 0.1)), strategy="reset", rounds=11,
            early_stop="patience", patience=4, patience_every=500, controls=("snip", "isnip"),
        ),
        "LTH-vs-SNIP report sec. 5.1: Conv-2 / CIFAR-10 (TFDS download), Glorot normal, Adam 2e-4, "
        "batch 60, 25 epochs (18,750 iterations of 750 per epoch), 5k validation; per round conv 10%, "
        "FC 20%, output 10%, 10 rounds, reset to theta0; patience early stopping; SNIP and iterative "
        "SNIP beside each ticket.",
    ),
    "conv2_fashion_mnist_lth_snip": (
        Config(
            name="conv2_fashion_mnist_lth_snip", dataset="fashion_mnist", model="conv2", widths=(256, 256),
            init="glorot_normal", optimizer="adam", lr=2e-4, batch_size=60,
            iterations=22_900, eval_every=100, validation_size=5000, scope="layerwise",
            prune_rate=0.2, layer_rates=(("conv*", 0.1), ("out", 0.1)), strategy="reset", rounds=11,
            early_stop="patience", patience=4, patience_every=500, controls=("snip", "isnip"),
        ),
        "The Conv-2 report setting on Fashion-MNIST (28x28x1, the convolutional run that fits a "
        "CPU when shortened): Adam 2e-4, batch 60, 25 epochs, conv 10% / FC 20% / output 10%.",
    ),
    # Pruning at initialization (ltjax.at_init): every round prunes θ0 itself, before any training, to
    # the next of `densities`; the recipe of experiments/prune_at_init.py at the length of its results
    # page, so `--set score=...` names the same run directories as that page's studies.
    "lenet_mnist_prune_at_init": (
        Config(
            name="lenet_mnist_prune_at_init", dataset="mnist", model="mlp", widths=(300, 100),
            init="glorot_normal", optimizer="adam", lr=1.2e-3, batch_size=60, validation_size=5000,
            iterations=2500, eval_every=250, scope="global", layer_rates=(), exclude=(),
            mode="at_init", score="synflow", densities=(0.1, 0.01, 0.002), rounds=4,
            controls=("shuffle", "reinit", "invert"),
        ),
        "Pruning at initialization on LeNet-300-100 / MNIST (experiments/prune_at_init.py, "
        "docs/results/prune_at_init.md): theta0 pruned globally over all three layers to 10%, 1% and "
        "0.2% of its weights (rounds 1-3), then trained: Glorot normal, Adam 1.2e-3, batch 60, 2,500 "
        "iterations, 5k validation. Score: SynFlow (Tanaka et al. 2020, data-free, 100 steps); "
        "--set score=grasp (Wang et al. 2020), snip (Lee et al. 2019) or magnitude; "
        "--set mode=random_at_init --set controls=shuffle,reinit for random pruning. Beside each "
        "ticket the sanity checks of Frankle et al. 2021: its mask shuffled within each layer, its "
        "mask reinitialized, and the score inverted (the lowest-scoring weights kept).",
    ),
}


def register(name: str, config: Config, description: str = "", *, replace: bool = False) -> None:
    """Make ``config`` (which may hold your own model, optimizer, loss or arrays) the preset
    ``name`` of this process: ``presets.get(name)``, and ``ltjax run name`` where the process
    registered it. A name already taken raises unless ``replace``. A study file the command line
    can name needs no registration: see :func:`get` (``file.py:NAME``)."""
    if not isinstance(config, Config):
        raise TypeError(f"preset {name!r} needs an ltjax Config, got {type(config).__name__}")
    registry.add(PRESETS, "preset", name, (config.validate(), description or f"your own preset {name!r}"), replace,
                 "a Config", of_type=tuple)


def get(name: str) -> Config:
    """A preset by name, or the Config a Python file or module defines: ``path/to/study.py:NAME``
    or ``package.module:NAME`` (``NAME`` a Config, or a function of no arguments returning one).
    Importing the file runs it, so the study it describes may use your own Flax module, optax
    optimizer, loss and arrays (and register models or scores) with nothing installed. An
    unknown name raises with the valid choices."""
    if ":" in name:
        return _from_source(name)
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}{did_you_mean(name, PRESETS)}; valid presets: "
                          f"{', '.join(sorted(PRESETS))} (or a study file: path/to/study.py:NAME)")
    return PRESETS[name][0]


def _from_source(spec: str) -> Config:
    """The Config ``source:NAME`` names (see :func:`get`)."""
    source, _, attr = spec.rpartition(":")
    if not source or not attr.isidentifier():
        raise ConfigError(f"preset {spec!r} is not valid: a study file is named path/to/study.py:NAME or "
                          f"package.module:NAME, NAME being the Config it defines")
    try:
        if source.endswith(".py"):
            path = Path(source).resolve()
            if not path.is_file():
                raise ConfigError(f"preset {spec!r}: there is no file {source!r}")
            mod_spec = importlib.util.spec_from_file_location(f"ltjax_study_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.path.insert(0, str(path.parent))  # the study's own imports beside it
            try:
                mod_spec.loader.exec_module(module)
            finally:
                sys.path.remove(str(path.parent))
        else:
            module = importlib.import_module(source)
    except ConfigError:
        raise
    except (ImportError, ValueError, TypeError) as e:  # no such module, or not a module name at all
        raise ConfigError(f"preset {spec!r}: cannot import {source!r} ({type(e).__name__}: {e})") from e
    if not hasattr(module, attr):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, Config))
        raise ConfigError(f"preset {spec!r}: {source} defines no {attr!r}{did_you_mean(attr, found)}; "
                          f"the Configs it defines: {', '.join(found) or 'none'}")
    config = getattr(module, attr)
    if callable(config) and not isinstance(config, Config) and _takes_no_arguments(config):
        config = config()
    if not isinstance(config, Config):
        raise ConfigError(f"preset {spec!r}: {attr} is a {type(config).__name__}, not an ltjax Config "
                          f"(or a function of no arguments returning one)")
    return config.validate()


def _takes_no_arguments(fn) -> bool:
    try:
        return not any(p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                       for p in inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False


def describe(name: str) -> str:
    return PRESETS[name][1]
