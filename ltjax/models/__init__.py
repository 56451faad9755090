"""Models: Flax modules plus what ltjax needs to know about them (a :class:`Model`).

A :class:`Model` bundles a Flax module with its input shape and a rule for which leaves
are prunable. Kernels of dense and conv layers are prunable; biases and normalization
parameters are not.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from ltjax import registry
from ltjax.masks import path_str
from ltjax.models import initializers
from ltjax.models.conv import ConvNet
from ltjax.models.mlp import MLP
from ltjax.models.resnet import CifarResNet, ImageNetResNet
from ltjax.models.vgg import CifarVGG

PyTree = Any


def kernels_are_prunable(path, leaf) -> bool:
    """Default rule: a leaf is prunable iff it is named ``kernel``."""
    return path_str(path).split("/")[-1] == "kernel"


STATE = "batch_stats"  # the params-tree key holding a model's batch-norm running statistics


class Model(NamedTuple):
    """A Flax module with its input shape and its prunable-leaf rule.

    ``init(key) -> params`` and ``apply(params, x) -> logits`` are pure and vmappable.
    ``params`` is the module's ``"params"`` collection (no ``{"params": ...}`` wrapper).

    Models with batch norm (``stateful=True``; the module's ``__call__`` takes ``train``)
    keep their running statistics in the same tree under the key ``"batch_stats"``, so they
    are stored, reset and rewound with the weights (θ0 holds the initial statistics, θk
    those at iteration k) and vmap over tickets like them; no statistic is prunable.
    ``apply`` evaluates with the running statistics; ``apply_train`` normalizes with the
    batch's statistics and returns the params with updated running statistics.
    """

    module: Any
    input_shape: tuple[int, ...]
    num_outputs: int
    is_prunable: Callable[[tuple, Any], bool] = kernels_are_prunable
    stateful: bool = False

    def init(self, key: jax.Array) -> PyTree:
        x = jnp.zeros((1, *self.input_shape), jnp.float32)
        if not self.stateful:
            return self.module.init(key, x)["params"]
        v = self.module.init(key, x, train=False)
        return {**v["params"], STATE: v[STATE]}

    def _variables(self, params: PyTree) -> dict:
        if not self.stateful:
            return {"params": params}
        return {"params": {k: v for k, v in params.items() if k != STATE}, STATE: params[STATE]}

    def apply(self, params: PyTree, x: jax.Array) -> jax.Array:
        if not self.stateful:
            return self.module.apply({"params": params}, x)
        return self.module.apply(self._variables(params), x, train=False)

    def apply_train(self, params: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
        """Training-mode forward pass: ``(logits, params with updated running statistics)``."""
        if not self.stateful:
            return self.module.apply({"params": params}, x), params
        logits, new = self.module.apply(self._variables(params), x, train=True, mutable=[STATE])
        return logits, {**params, STATE: new[STATE]}


def mlp(
    widths: tuple[int, ...] = (300, 100),
    *,
    input_shape: tuple[int, ...] = (28, 28, 1),
    num_outputs: int = 10,
    init: str = "trunc_normal",
    init_std: float = 0.1,
) -> Model:
    """Fully connected ReLU network; ``widths=(300, 100)`` is LeNet-300-100, ``(h,)`` with
    ``input_shape=(2,), num_outputs=1`` is the 2-h-1 XOR network.

    Layers are named ``fc1 … fcL`` and ``out``.
    """
    kernel_init = initializers.get(init, std=init_std)
    module = MLP(widths=tuple(widths), num_outputs=num_outputs, kernel_init=kernel_init)
    return Model(module=module, input_shape=tuple(input_shape), num_outputs=num_outputs)


def _family(name: str, make_module: Callable[[tuple[int, ...], int, Callable], Any], *, widths: tuple[int, ...],
            input_shape: tuple[int, ...], init: str, stateful: bool, doc: str) -> Callable[..., Model]:
    """A model factory with ``mlp``'s keywords; ``make_module(widths, num_outputs, kernel_init)``."""

    def factory(widths: tuple[int, ...] = widths, *, input_shape: tuple[int, ...] = input_shape,
                num_outputs: int = 10, init: str = init, init_std: float = 0.1) -> Model:
        module = make_module(tuple(widths), num_outputs, initializers.get(init, std=init_std))
        return Model(module=module, input_shape=tuple(input_shape), num_outputs=num_outputs, stateful=stateful)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    return factory


def _convnet(filters):
    return lambda w, n, k: ConvNet(filters=filters, widths=w, num_outputs=n, kernel_init=k)


_CONV = dict(widths=(256, 256), input_shape=(32, 32, 3), init="glorot_normal", stateful=False)
_BN = dict(widths=(), input_shape=(32, 32, 3), init="kaiming_normal", stateful=True)

conv2 = _family("conv2", _convnet((64,)), **_CONV, doc=(
    "Conv-2 of Frankle & Carbin (ICLR 2019, Figure 2): ``64, 64, pool``, then FC ``widths``.\n\n"
    "Layers ``conv1, conv2, fc1 … fcL, out``; ``widths`` are the hidden FC widths (default 256, 256)."))
conv4 = _family("conv4", _convnet((64, 128)), **_CONV, doc=(
    "Conv-4 of Frankle & Carbin (ICLR 2019, Figure 2): ``64, 64, pool, 128, 128, pool``, then FC "
    "``widths``. Layers ``conv1 … conv4, fc1 … fcL, out``."))
conv6 = _family("conv6", _convnet((64, 128, 256)), **_CONV, doc=(
    "Conv-6 of Frankle & Carbin (ICLR 2019, Figure 2): ``64, 64, pool, 128, 128, pool, 256, 256, "
    "pool``, then FC ``widths``. Layers ``conv1 … conv6, fc1 … fcL, out``."))
resnet20 = _family("resnet20", lambda w, n, k: CifarResNet(depth=20, num_outputs=n, kernel_init=k), **_BN, doc=(
    "ResNet-20 for CIFAR-10 (He et al. 2016; OpenLTH ``cifar_resnet_20``), with batch norm; "
    "``widths`` is ignored (the architecture is fixed); 270,896 weights."))
resnet56 = _family("resnet56", lambda w, n, k: CifarResNet(depth=56, num_outputs=n, kernel_init=k), **_BN, doc=(
    "ResNet-56 for CIFAR-10 (He et al. 2016; OpenLTH ``cifar_resnet_56``), with batch norm."))
resnet18 = _family("resnet18", lambda w, n, k: ImageNetResNet(depth=18, num_outputs=n, small_inputs=True,
                                                              kernel_init=k),
                   **{**_BN, "input_shape": (64, 64, 3)}, doc=(
    "ResNet-18 with a 3×3 stride-1 stem and no max pool, the usual form for 64×64 TinyImageNet "
    "images (the layerwise-importance paper's ResNet-18); batch norm; ``widths`` is ignored."))
resnet50 = _family("resnet50", lambda w, n, k: ImageNetResNet(depth=50, num_outputs=n, kernel_init=k),
                   **{**_BN, "input_shape": (224, 224, 3)}, doc=(
    "ResNet-50 in the ImageNet form (torchvision v1.5 bottlenecks); batch norm; ``widths`` is ignored."))
vgg16 = _family("vgg16", lambda w, n, k: CifarVGG(num_outputs=n, kernel_init=k), **_BN, doc=(
    "VGG-16 for CIFAR-10 with batch norm (OpenLTH ``cifar_vgg_16``); ``widths`` is ignored."))


MODELS: dict[str, Callable[..., Model]] = {"mlp": mlp, "conv2": conv2, "conv4": conv4, "conv6": conv6,
                                           "resnet20": resnet20, "resnet56": resnet56, "resnet18": resnet18,
                                           "resnet50": resnet50, "vgg16": vgg16}


def register(name: str, factory: Callable[..., Model], *, replace: bool = False) -> None:
    """Make ``factory`` available as ``Config(model=name)`` and :func:`build`. The factory takes
    ``mlp``'s keywords (``widths``, ``input_shape``, ``num_outputs``, ``init``, ``init_std``;
    it may ignore some) and returns a :class:`Model`. A name already taken raises unless
    ``replace``. Registration lives in this process: register before ``lottery.run``."""
    registry.add(MODELS, "model", name, factory, replace, "a factory function returning a Model")


def build(name: str, **kwargs) -> Model:
    """Model by registry name; an unknown name raises with the valid choices."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


__all__ = [
    "CifarResNet", "CifarVGG", "ConvNet", "ImageNetResNet", "MLP", "Model", "STATE", "build", "conv2", "conv4", "conv6", "initializers",
    "kernels_are_prunable", "mlp", "register", "resnet18", "resnet20", "resnet50", "resnet56", "vgg16", "MODELS",
]
