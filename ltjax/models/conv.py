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
import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, k: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=_DN)


@jax.custom_vjp
def conv_same(x: jax.Array, k: jax.Array) -> jax.Array:
    """Stride-1 SAME convolution, NHWC input and HWIO kernel (odd kernel sizes).

    The same function as ``lax.conv_general_dilated(x, k, (1, 1), "SAME")``, with the
    kernel gradient written as an ordinary NHWC convolution: dk[h, w, i, o] =
    Σ_{n,y,x} x_pad[n, y+h, x+w, i] · g[n, y, x, o] is a convolution of x (batch i, features
    n) with g (features n → o). XLA emits the default form of this gradient as a
    convolution with unusual dimension numbers, which XLA:CPU runs about 100× slower
    inside a loop body such as the training scan (jax-ml/jax#12868); the explicit form
    is equally exact and fast on every backend.
    """
    return _conv(x, k)


def _conv_fwd(x, k):
    return _conv(x, k), (x, k)


def _conv_bwd(res, g):
    x, k = res
    kh, kw = k.shape[0], k.shape[1]
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    _, dx_fn = jax.vjp(lambda a: _conv(a, k), x)
    (dx,) = dx_fn(g)
    dk = lax.conv_general_dilated(
        jnp.transpose(x, (3, 1, 2, 0)),  # (in, H, W, batch): batch of input channels
        jnp.transpose(g, (1, 2, 0, 3)),  # (H, W, batch, out): a "kernel" over the image
        (1, 1), ((ph, kh - 1 - ph), (pw, kw - 1 - pw)), dimension_numbers=_DN,
    )  # (in, kh, kw, out)
    return dx, jnp.transpose(dk, (1, 2, 0, 3)).astype(k.dtype)


conv_same.defvjp(_conv_fwd, _conv_bwd)


def conv_patches(x: jax.Array, k: jax.Array) -> jax.Array:
    """The same stride-1 SAME convolution as :func:`conv_same`, as one matmul over image patches:
    the ``kh·kw`` shifted copies of the padded input, concatenated along channels in the kernel's
    (h, w, i) order, times the kernel reshaped to ``(kh·kw·in, out)``.

    Equal to :func:`conv_same` up to float32 summation order. Under ``vmap`` over tickets (a
    kernel per ticket) it becomes a batched matmul, where a convolution becomes a grouped
    convolution, which XLA runs slowly on CPUs and GPUs; it costs ``kh·kw`` times the input's
    memory for the patches.
    """
    kh, kw, ci, co = k.shape
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    h, w = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
    patches = jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], axis=-1)
    return patches @ k.reshape(kh * kw * ci, co)


CONV_IMPLS = {"xla": conv_same, "patches": conv_patches}


def _windows(x: jax.Array) -> jax.Array:
    """``(N, H, W, C)`` → ``(N, H/2, 2, W/2, 2, C)``: the 2×2 windows (an odd last row or column dropped)."""
    n, h, w, c = x.shape
    return x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2×2 max pooling with stride 2 (NHWC; an odd last row or column is dropped), the same
    function and the same gradient as ``flax.linen.max_pool(x, (2, 2), strides=(2, 2))``, bit for
    bit, computed as a max over a reshape.

    ``max_pool``'s ``reduce_window`` differentiates to XLA's ``select_and_scatter``, which XLA:CPU
    runs about 7× slower than this (Conv-2 at batch 60: 14 vs 109 ms per pool, forward and
    backward, measured here). The gradient here is written out: each window's cotangent goes
    to its first maximal entry in row-major order, which is the entry ``select_and_scatter``
    (with ``>=``) picks, so ties are resolved the same way.
    """
    return _windows(x).max(axis=(2, 4))


def _pool_fwd(x):
    y = max_pool_2x2(x)
    return y, (x, y)


def _pool_bwd(res, g):
    x, y = res
    hit = _windows(x) == y[:, :, None, :, None, :]  # (N, H/2, dy, W/2, dx, C)
    left, right = hit[:, :, :, :, :1], hit[:, :, :, :, 1:]
    first_in_row = jnp.concatenate([left, right & ~left], axis=4)
    row_has = left | right
    no_earlier_row = jnp.concatenate([jnp.ones_like(row_has[:, :, :1]), ~row_has[:, :, :1]], axis=2)
    d = jnp.where(first_in_row & no_earlier_row, g[:, :, None, :, None, :], jnp.zeros_like(g)[:, :, None, :, None, :])
    n, hh, ww, c = y.shape
    d = d.reshape(n, 2 * hh, 2 * ww, c)
    return (jnp.pad(d, ((0, 0), (0, x.shape[1] - 2 * hh), (0, x.shape[2] - 2 * ww), (0, 0))),)


max_pool_2x2.defvjp(_pool_fwd, _pool_bwd)


class Conv3x3(nn.Module):
    """A 3×3, stride-1, SAME convolution with bias (parameters ``kernel`` HWIO and ``bias``,
    as ``flax.linen.Conv``), computed by :func:`conv_same`."""

    features: int
    kernel_init: Callable = nn.initializers.lecun_normal()
    impl: str = "xla"  # a key of CONV_IMPLS: "xla" (conv_same) or "patches" (conv_patches)

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.impl not in CONV_IMPLS:
            raise ValueError(f"conv impl {self.impl!r} is not valid; choose one of: {', '.join(CONV_IMPLS)}")
        k = self.param("kernel", self.kernel_init, (3, 3, x.shape[-1], self.features), jnp.float32)
        b = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        return CONV_IMPLS[self.impl](x, k.astype(x.dtype)) + b


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
    stock_conv: bool = False  # flax.linen.Conv with XLA's default gradient (the benchmark's baseline)
    conv_impl: str = "xla"  # Conv3x3's impl: "xla" or "patches" (a matmul, for vmapped tickets)

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        n = 0
        for f in self.filters:
            for _ in range(2):
                n += 1
                if self.stock_conv:
                    conv = nn.Conv(f, (3, 3), padding="SAME", kernel_init=self.kernel_init, name=f"conv{n}")
                else:
                    conv = Conv3x3(f, kernel_init=self.kernel_init, impl=self.conv_impl, name=f"conv{n}")
                x = nn.relu(conv(x))
            x = max_pool_2x2(x)
        x = x.reshape((x.shape[0], -1))
        for i, w in enumerate(self.widths):
            x = nn.relu(nn.Dense(w, kernel_init=self.kernel_init, name=f"fc{i + 1}")(x))
        return nn.Dense(self.num_outputs, kernel_init=self.kernel_init, name="out")(x)
