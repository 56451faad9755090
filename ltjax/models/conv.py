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

import contextlib
import functools
import threading
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap

_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, k: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=_DN)


@functools.lru_cache(maxsize=None)
def _kernel_grad_op(kh: int, kw: int) -> Callable:
    """``(x, g) -> dk``, the kernel gradient of a ``kh×kw`` SAME convolution written as an ordinary
    NHWC convolution: dk[h, w, i, o] = Σ_{n,y,x} x_pad[n, y+h, x+w, i] · g[n, y, x, o] is a
    convolution of x (batch i, features n) with g (features n → o)."""
    ph, pw = (kh - 1) // 2, (kw - 1) // 2

    def dk(x, g):
        out = lax.conv_general_dilated(
            jnp.transpose(x, (3, 1, 2, 0)),  # (in, H, W, batch): batch of input channels
            jnp.transpose(g, (1, 2, 0, 3)),  # (H, W, batch, out): a "kernel" over the image
            (1, 1), ((ph, kh - 1 - ph), (pw, kw - 1 - pw)), dimension_numbers=_DN,
        )  # (in, kh, kw, out)
        return jnp.transpose(out, (1, 2, 0, 3))

    return _one_ticket_at_a_time(dk, weight=None)


_GROUPED = threading.local()


@contextlib.contextmanager
def grouped_convolutions():
    """While tracing inside this context, a vmapped convolution whose kernel is batched becomes one
    grouped convolution (JAX's own batching rule) rather than one convolution per ticket: for a
    program that vmaps a ticket axis sharded over devices by GSPMD, where a loop over that axis
    would run the devices' tickets one device after another. ltjax's own mesh path
    (:func:`ltjax.train.map_tickets`) no longer needs it: it maps each device's own tickets
    inside ``shard_map``, so every device runs the per-ticket form on its share."""
    before = getattr(_GROUPED, "on", False)
    _GROUPED.on = True
    try:
        yield
    finally:
        _GROUPED.on = before


UNROLL_TICKETS = 16  # up to this many tickets, one op per ticket in the program; above, a loop over them


def _one_ticket_at_a_time(op: Callable, weight: int | None) -> Callable:
    """``op(a, b)`` (two arrays) with a batching rule for tickets: where argument ``weight`` is
    not batched, the batch axis is folded into the images' batch axis (one convolution); otherwise
    each element of the batch gets its own op (up to :data:`UNROLL_TICKETS`, which XLA schedules
    side by side: Conv-2's training steps with 2 tickets reach 1.3× one ticket's throughput on a
    2-core CPU, against 0.93× for a ``lax.map`` loop over them) or, for more, a loop. JAX's own
    rule would turn a batch of kernels into a grouped convolution, which XLA:CPU and XLA:GPU run
    several times slower than the same convolutions one by one (Conv-2, 2 tickets: 0.49× and
    0.35× of one ticket's throughput)."""
    f = custom_vmap(op)

    @f.def_vmap
    def rule(n, batched, a, b):
        if getattr(_GROUPED, "on", False):
            return jax.vmap(op, in_axes=tuple(0 if bt else None for bt in batched))(a, b), True
        if weight is not None and not batched[weight]:
            other = 1 - weight
            args = [a, b]
            args[other] = args[other].reshape(-1, *args[other].shape[2:])
            y = f(*args)
            return y.reshape(n, -1, *y.shape[1:]), True
        a, b = (v if bt else jnp.broadcast_to(v, (n, *v.shape)) for v, bt in zip((a, b), batched))
        if n <= UNROLL_TICKETS:  # separate ops XLA can run side by side; a loop runs one at a time
            return jnp.stack([f(a[i], b[i]) for i in range(n)]), True
        return lax.map(lambda ab: f(*ab), (a, b)), True

    return f


_conv_op = _one_ticket_at_a_time(_conv, weight=1)


def _flip(k: jax.Array) -> jax.Array:
    """``(kh, kw, i, o)`` → ``(kh, kw, o, i)`` rotated by 180°: the kernel of a SAME convolution's
    input gradient (odd kernel sizes)."""
    return jnp.transpose(jnp.flip(k, (0, 1)), (0, 1, 3, 2))


@jax.custom_vjp
def conv_same(x: jax.Array, k: jax.Array) -> jax.Array:
    """Stride-1 SAME convolution, NHWC input and HWIO kernel (odd kernel sizes).

    The same function as ``lax.conv_general_dilated(x, k, (1, 1), "SAME")``, with both gradients
    written as ordinary NHWC convolutions: the input gradient is the convolution of the cotangent
    with the kernel rotated by 180° (in and out swapped), the kernel gradient a convolution of x
    (batch i, features n) with the cotangent (:func:`_kernel_grad_op`). XLA emits the default
    forms with unusual dimension numbers, which XLA:CPU runs 5× (input gradient, Conv-2's 64→64
    layer at batch 60: 131 vs 25 ms) to 100× (kernel gradient, inside a loop body such as the
    training scan, jax-ml/jax#12868) slower; the explicit forms are equally exact and fast on
    every backend, and differentiable again (GraSP's Hessian-gradient product).

    Under ``vmap`` with a kernel per ticket, each ticket gets its own convolutions
    (:func:`_one_ticket_at_a_time`) instead of one grouped convolution.
    """
    return _conv_op(x, k)


def _conv_fwd(x, k):
    # conv_same itself (not _conv_op), so that differentiating this rule again (a gradient of a
    # gradient) also goes through the custom rules: custom_vmap has no reverse-mode rule of its own
    return conv_same(x, k), (x, k)


def _conv_bwd(res, g):
    x, k = res
    return conv_same(g, _flip(k)), kernel_grad(x, g, k.shape[0], k.shape[1]).astype(k.dtype)


conv_same.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def kernel_grad(x: jax.Array, g: jax.Array, kh: int, kw: int) -> jax.Array:
    """The kernel gradient of :func:`conv_same` for input ``x`` and output cotangent ``g``:
    ``(kh, kw, in, out)``; differentiable (both of its gradients are :func:`conv_same`)."""
    return _kernel_grad_op(kh, kw)(x, g)


def _kgrad_fwd(x, g, kh, kw):
    return kernel_grad(x, g, kh, kw), (x, g)


def _kgrad_bwd(kh, kw, res, c):
    x, g = res  # dk = Σ x_pad[y+h, x+w, i] g[y, x, o]: linear in x (a flipped conv of g) and in g (a conv of x)
    return conv_same(g, _flip(c)).astype(x.dtype), conv_same(x, c).astype(g.dtype)


kernel_grad.defvjp(_kgrad_fwd, _kgrad_bwd)


def conv_patches(x: jax.Array, k: jax.Array) -> jax.Array:
    """The same stride-1 SAME convolution as :func:`conv_same`, as one matmul over image patches:
    the ``kh·kw`` shifted copies of the padded input, concatenated along channels in the kernel's
    (h, w, i) order, times the kernel reshaped to ``(kh·kw·in, out)``.

    Equal to :func:`conv_same` up to float32 summation order. Under ``vmap`` over tickets (a
    kernel per ticket) it becomes one batched matmul (:func:`conv_same` gives each ticket its own
    convolution instead); it costs ``kh·kw`` times the input's memory for the patches.
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
