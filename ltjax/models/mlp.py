"""Multilayer perceptron (LeNet-300-100 and its width multiples, 2-h-1 for XOR)."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
    """Flatten, then ``Dense → ReLU`` per hidden width, then a linear ``out`` layer (logits).

    Hidden layers are named ``fc1, fc2, ...``; the output layer ``out``. Biases start at 0.
    """

    widths: tuple[int, ...] = (300, 100)
    num_outputs: int = 10
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = x.reshape((x.shape[0], -1))
        for i, w in enumerate(self.widths):
            x = nn.relu(nn.Dense(w, kernel_init=self.kernel_init, name=f"fc{i + 1}")(x))
        return nn.Dense(self.num_outputs, kernel_init=self.kernel_init, name="out")(x)
