"""Conv-2 / Conv-4 / Conv-6: the VGG-like CIFAR-10 networks of the lottery ticket paper.

Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
Networks", ICLR 2019, Figure 2 (architectures) — as used by the "LTH vs SNIP" report
(its Table 1):

* Conv-2: ``conv 64, conv 64, pool`` then FC 256, 256, 10
* Conv-4: ``conv 64, conv 64, pool, conv 128, conv 128, pool`` then FC 256, 256, 10
* Conv-6: Conv-4 plus ``conv 256, conv 256, pool`` then FC 256, 256, 10

All convolutions are 3×3, stride 1, SAME padding, each followed by ReLU; pools are 2×2 max
pools with stride 2. On 32×32×3 CIFAR-10 inputs Conv-2 has about 4.3M weights, of which
38,592 (~38K) are convolutional (3·3·3·64 + 3·3·64·64); the rest are in ``fc1``
(16·16·64 · 256 = 4,194,304). See ``tests/test_conv.py`` for the exact counts of all three.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp


class ConvNet(nn.Module):
    """Per entry of ``filters`` a module of two ``3×3 conv → ReLU`` and a ``2×2`` max pool;
    then flatten, ``Dense → ReLU`` per entry of ``widths``, then a linear ``out`` layer (logits).

    Convolutions are named ``conv1, conv2, ...`` (numbered across modules), hidden dense
    layers ``fc1, fc2, ...``, the output layer ``out``. Kernels use ``kernel_init``
    (Flax's conv kernels are HWIO, so variance-scaling initializers see
    fan_in = 3·3·in_channels and fan_out = 3·3·out_channels, as PyTorch does); biases start at 0.
    """

    filters: tuple[int, ...] = (64,)
    widths: tuple[int, ...] = (256, 256)
    num_outputs: int = 10
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        n = 0
        for f in self.filters:
            for _ in range(2):
                n += 1
                conv = nn.Conv(f, (3, 3), strides=(1, 1), padding="SAME",
                               kernel_init=self.kernel_init, name=f"conv{n}")
                x = nn.relu(conv(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        for i, w in enumerate(self.widths):
            x = nn.relu(nn.Dense(w, kernel_init=self.kernel_init, name=f"fc{i + 1}")(x))
        return nn.Dense(self.num_outputs, kernel_init=self.kernel_init, name="out")(x)
