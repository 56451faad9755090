"""Models: Flax modules plus what ltjax needs to know about them (a :class:`Model`).

A :class:`Model` bundles a Flax module with its input shape and a rule for which leaves
are prunable. Kernels of dense and conv layers are prunable; biases and normalization
parameters are not.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from ltjax.masks import path_str
from ltjax.models import initializers
from ltjax.models.conv import ConvNet
from ltjax.models.mlp import MLP

PyTree = Any


def kernels_are_prunable(path, leaf) -> bool:
    """Default rule: a leaf is prunable iff it is named ``kernel``."""
    return path_str(path).split("/")[-1] == "kernel"


class Model(NamedTuple):
    """A Flax module with its input shape and its prunable-leaf rule.

    ``init(key) -> params`` and ``apply(params, x) -> logits`` are pure and vmappable.
    ``params`` is the module's ``"params"`` collection (no ``{"params": ...}`` wrapper).
    """

    module: Any
    input_shape: tuple[int, ...]
    num_outputs: int
    is_prunable: Callable[[tuple, Any], bool] = kernels_are_prunable

    def init(self, key: jax.Array) -> PyTree:
        return self.module.init(key, jnp.zeros((1, *self.input_shape), jnp.float32))["params"]

    def apply(self, params: PyTree, x: jax.Array) -> jax.Array:
        return self.module.apply({"params": params}, x)


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


def _conv(
    filters: tuple[int, ...],
    widths: tuple[int, ...],
    input_shape: tuple[int, ...],
    num_outputs: int,
    init: str,
    init_std: float,
) -> Model:
    kernel_init = initializers.get(init, std=init_std)
    module = ConvNet(filters=tuple(filters), widths=tuple(widths), num_outputs=num_outputs,
                     kernel_init=kernel_init)
    return Model(module=module, input_shape=tuple(input_shape), num_outputs=num_outputs)


def conv2(
    widths: tuple[int, ...] = (256, 256),
    *,
    input_shape: tuple[int, ...] = (32, 32, 3),
    num_outputs: int = 10,
    init: str = "glorot_normal",
    init_std: float = 0.1,
) -> Model:
    """Conv-2 of Frankle & Carbin (ICLR 2019, Figure 2): ``64, 64, pool``, then FC ``widths``.

    Layers ``conv1, conv2, fc1 … fcL, out``; ``widths`` are the hidden FC widths.
    """
    return _conv((64,), widths, input_shape, num_outputs, init, init_std)


def conv4(
    widths: tuple[int, ...] = (256, 256),
    *,
    input_shape: tuple[int, ...] = (32, 32, 3),
    num_outputs: int = 10,
    init: str = "glorot_normal",
    init_std: float = 0.1,
) -> Model:
    """Conv-4 of Frankle & Carbin (ICLR 2019, Figure 2): ``64, 64, pool, 128, 128, pool``,
    then FC ``widths``. Layers ``conv1 … conv4, fc1 … fcL, out``.
    """
    return _conv((64, 128), widths, input_shape, num_outputs, init, init_std)


def conv6(
    widths: tuple[int, ...] = (256, 256),
    *,
    input_shape: tuple[int, ...] = (32, 32, 3),
    num_outputs: int = 10,
    init: str = "glorot_normal",
    init_std: float = 0.1,
) -> Model:
    """Conv-6 of Frankle & Carbin (ICLR 2019, Figure 2): ``64, 64, pool, 128, 128, pool,
    256, 256, pool``, then FC ``widths``. Layers ``conv1 … conv6, fc1 … fcL, out``.
    """
    return _conv((64, 128, 256), widths, input_shape, num_outputs, init, init_std)


MODELS: dict[str, Callable[..., Model]] = {"mlp": mlp, "conv2": conv2, "conv4": conv4, "conv6": conv6}


def build(name: str, **kwargs) -> Model:
    """Model by registry name; an unknown name raises with the valid choices."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


__all__ = [
    "ConvNet", "MLP", "Model", "build", "conv2", "conv4", "conv6", "initializers",
    "kernels_are_prunable", "mlp", "MODELS",
]
