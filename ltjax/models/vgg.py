"""VGG for CIFAR-10 with batch norm, as OpenLTH builds ``cifar_vgg_16`` for the
layerwise-importance paper.

Plan ``64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512``: each
number is a 3×3 convolution (stride 1, padding 1, with bias) followed by batch norm and
ReLU, ``M`` a 2×2 max pool; then the average over the last 2×2 map (OpenLTH's
``AvgPool2d(2)`` on 32×32 inputs; here a mean over whatever map remains, so smaller inputs
work too) and one dense output layer. Layers ``conv1 … conv13`` with ``bn1 … bn13``, then ``out``.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from ltjax.models.conv import Conv3x3, max_pool_2x2

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class CifarVGG(nn.Module):
    plan: tuple = VGG16
    num_outputs: int = 10
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        n = 0
        for item in self.plan:
            if item == "M":
                x = max_pool_2x2(x)
                continue
            n += 1
            x = Conv3x3(int(item), kernel_init=self.kernel_init, name=f"conv{n}")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=f"bn{n}")(x)
            x = nn.relu(x)
        x = jnp.mean(x, axis=(1, 2))  # OpenLTH's 2x2 average pool: on 32x32 inputs the last map is 2x2
        return nn.Dense(self.num_outputs, kernel_init=self.kernel_init, name="out")(x)
