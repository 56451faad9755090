"""On-device data augmentation, drawn from each ticket's key inside the compiled training loop.

``cifar``: the standard CIFAR training augmentation of the layerwise-importance paper's
recipes (Appendix A, as in OpenLTH and torchvision's ``RandomCrop(32, padding=4)`` +
``RandomHorizontalFlip()``): each image is zero-padded by 4 pixels on every side, a
random window of the original size is cut out (offsets uniform in 0…8 per axis), and
the result is mirrored left-right with probability 1/2. Padding happens on the raw
(uint8) pixels, before normalization, as torchvision pads the image.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

AUGMENTATIONS = ("none", "cifar")


def random_crop_flip(key: jax.Array, x: jax.Array, pad: int = 4) -> jax.Array:
    """Pad-and-crop plus horizontal flip of a batch ``x`` (B, H, W, C), one draw per image."""
    B, H, W, C = x.shape
    k_y, k_x, k_f = jax.random.split(key, 3)
    dy = jax.random.randint(k_y, (B,), 0, 2 * pad + 1)
    dx = jax.random.randint(k_x, (B,), 0, 2 * pad + 1)
    flip = jax.random.bernoulli(k_f, 0.5, (B,))
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    crops = jax.vmap(lambda img, a, b: lax.dynamic_slice(img, (a, b, 0), (H, W, C)))(padded, dy, dx)
    return jnp.where(flip[:, None, None, None], crops[:, :, ::-1, :], crops)


def augment(name: str, key: jax.Array, x: jax.Array) -> jax.Array:
    """Apply augmentation ``name`` (``none`` or ``cifar``) to a training batch."""
    if name in ("", "none"):
        return x
    if name == "cifar":
        return random_crop_flip(key, x)
    raise ValueError(f"unknown augmentation {name!r}; valid augmentations: {', '.join(AUGMENTATIONS)}")
