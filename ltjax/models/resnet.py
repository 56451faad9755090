"""CIFAR ResNets with batch norm (He et al. 2016, sec. 4.2), as OpenLTH builds them for the
layerwise-importance paper: ResNet-20 and ResNet-56.

``ResNet-(6n+2)``: a 3×3 convolution with 16 filters, then three segments of ``n`` basic
blocks with 16, 32 and 64 filters (the first block of segments 2 and 3 halves the
resolution with stride 2), global average pooling and a dense output layer. A basic
block is ``conv3×3 → BN → ReLU → conv3×3 → BN``, added to the shortcut, then ReLU; where
the shape changes the shortcut is a 1×1 convolution with stride 2 followed by BN
(OpenLTH's choice; He et al.'s option B). Convolutions have no bias (BN follows). Batch
norm: momentum 0.9 for the running statistics (PyTorch's 0.1), epsilon 1e-5.

Layer names: ``conv`` (the stem), ``s{segment}b{block}conv1/2``, ``…shortcut``, with
``…bn1/bn2/shortcut_bn`` and ``bn``, and ``out``. Strided 3×3 convolutions are computed as
stride-1 convolutions sampled at every second position, which is exactly PyTorch's
``Conv2d(stride=2, padding=1)`` (XLA's own SAME padding for stride 2 would shift the
window by one pixel) and keeps the fast kernel gradient of :func:`ltjax.models.conv.conv_same`.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from ltjax.models.conv import conv_same


class Conv(nn.Module):
    """k×k convolution without bias, stride 1 or 2 (PyTorch padding (k-1)/2); HWIO ``kernel``."""

    features: int
    size: int = 3
    stride: int = 1
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        k = self.param("kernel", self.kernel_init, (self.size, self.size, x.shape[-1], self.features), jnp.float32)
        if self.size == 1:  # a 1×1 convolution is a matmul over channels: sample first, it is the same
            x = x[:, ::self.stride, ::self.stride]
            if self.stride > 1:
                # the sampled input is materialized before the matmul: XLA:GPU (jax 0.11.2) aborts
                # compiling its Triton GEMM fusion of a strided slice feeding a dot ("Check failed:
                # subdim_size_accumulator == dim_size", seen on an H200); the barrier changes no value
                x = lax.optimization_barrier(x)
            return jnp.einsum("nhwi,io->nhwo", x, k[0, 0].astype(x.dtype))
        y = conv_same(x, k.astype(x.dtype))
        return y[:, ::self.stride, ::self.stride] if self.stride > 1 else y


def _bn(train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class BasicBlock(nn.Module):
    features: int
    stride: int
    kernel_init: Callable

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        y = Conv(self.features, 3, self.stride, self.kernel_init, name="conv1")(x)
        y = nn.relu(_bn(train, "bn1")(y))
        y = Conv(self.features, 3, 1, self.kernel_init, name="conv2")(y)
        y = _bn(train, "bn2")(y)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = Conv(self.features, 1, self.stride, self.kernel_init, name="shortcut")(x)
            x = _bn(train, "shortcut_bn")(x)
        return nn.relu(y + x)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs; ``depth`` = 6n + 2 (20, 56, ...), ``width`` = 16."""

    depth: int = 20
    width: int = 16
    num_outputs: int = 10
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if (self.depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {self.depth}")
        n = (self.depth - 2) // 6
        x = Conv(self.width, 3, 1, self.kernel_init, name="conv")(x)
        x = nn.relu(_bn(train, "bn")(x))
        for s, f in enumerate((self.width, 2 * self.width, 4 * self.width)):
            for b in range(n):
                stride = 2 if s > 0 and b == 0 else 1
                x = BasicBlock(f, stride, self.kernel_init, name=f"s{s + 1}b{b + 1}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_outputs, kernel_init=self.kernel_init, name="out")(x)


class Bottleneck(nn.Module):
    """ResNet-50's block (torchvision's v1.5: the stride sits on the 3×3 convolution)."""

    features: int  # the block's inner width; it outputs 4× as many channels
    stride: int
    kernel_init: Callable

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        out = 4 * self.features
        y = nn.relu(_bn(train, "bn1")(Conv(self.features, 1, 1, self.kernel_init, name="conv1")(x)))
        y = nn.relu(_bn(train, "bn2")(Conv(self.features, 3, self.stride, self.kernel_init, name="conv2")(y)))
        y = _bn(train, "bn3")(Conv(out, 1, 1, self.kernel_init, name="conv3")(y))
        if self.stride != 1 or x.shape[-1] != out:
            x = _bn(train, "shortcut_bn")(Conv(out, 1, self.stride, self.kernel_init, name="shortcut")(x))
        return nn.relu(y + x)


class ImageNetResNet(nn.Module):
    """ResNet-18 / ResNet-50 in the ImageNet form (He et al. 2016, Table 1; torchvision):
    a 7×7 stride-2 convolution and a 3×3 stride-2 max pool, four stages of 64, 128, 256 and
    512 filters (stride 2 from the second), global average pooling, a dense output.

    ``small_inputs=True`` replaces the stem with a 3×3 stride-1 convolution and no pool, the
    usual adaptation for 32×32 and 64×64 images (TinyImageNet)."""

    depth: int = 18
    num_outputs: int = 1000
    small_inputs: bool = False
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
        if self.depth not in blocks:
            raise ValueError(f"ImageNet ResNet depth must be 18, 34 or 50, got {self.depth}")
        block = Bottleneck if self.depth == 50 else BasicBlock
        if self.small_inputs:
            x = nn.relu(_bn(train, "bn")(Conv(64, 3, 1, self.kernel_init, name="conv")(x)))
        else:
            x = nn.relu(_bn(train, "bn")(Conv(64, 7, 2, self.kernel_init, name="conv")(x)))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for s, (n, f) in enumerate(zip(blocks[self.depth], (64, 128, 256, 512))):
            for b in range(n):
                x = block(f, 2 if s > 0 and b == 0 else 1, self.kernel_init, name=f"s{s + 1}b{b + 1}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_outputs, kernel_init=self.kernel_init, name="out")(x)
