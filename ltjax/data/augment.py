"""On-device data augmentation, drawn from each ticket's key inside the compiled training loop.

``cifar``: the standard CIFAR training augmentation of the layerwise-importance paper's
recipes (Appendix A, as in OpenLTH and torchvision's ``RandomCrop(32, padding=4)`` +
``RandomHorizontalFlip()``): each image is zero-padded by 4 pixels on every side, a
random window of the original size is cut out (offsets uniform in 0…8 per axis), and
the result is mirrored left-right with probability 1/2. Padding happens on the raw
(uint8) pixels, before normalization, as torchvision pads the image.

``imagenet``: the standard ImageNet training augmentation (torchvision's
``RandomResizedCrop(224)`` + ``RandomHorizontalFlip()``, as OpenLTH and the ImageNet
lottery-ticket recipes use) on the host's fixed-size image (:func:`ltjax.data.stream.tfds_images`
gives the central 224² of the image resized to 256 on its shorter side): a window of
uniform area fraction in [0.08, 1] and log-uniform aspect ratio in [3/4, 4/3] (shrunk to fit
the image) is resized back to the full size (bilinear, antialiased), then mirrored with
probability 1/2. The window is cut from the 224² center, not from the full-resolution
original, so very wide crops see slightly less context than torchvision's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

AUGMENTATIONS = ("none", "cifar", "imagenet")


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


def random_resized_crop_flip(key: jax.Array, x: jax.Array, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> jax.Array:
    """Random-resized crop plus horizontal flip of a batch ``x`` (B, H, W, C), one draw per
    image, the output the input's size and dtype (rounded back for uint8)."""
    B, H, W, C = x.shape
    k_a, k_r, k_y, k_x, k_f = jax.random.split(key, 5)
    frac = jax.random.uniform(k_a, (B,), minval=area[0], maxval=area[1])
    aspect = jnp.exp(jax.random.uniform(k_r, (B,), minval=jnp.log(ratio[0]), maxval=jnp.log(ratio[1])))
    h = jnp.clip(jnp.sqrt(frac * H * W / aspect), 1.0, H)
    w = jnp.clip(jnp.sqrt(frac * H * W * aspect), 1.0, W)
    top = jax.random.uniform(k_y, (B,)) * (H - h)
    left = jax.random.uniform(k_x, (B,)) * (W - w)
    flip = jax.random.bernoulli(k_f, 0.5, (B,))

    def one(img, h, w, top, left):
        scale = jnp.stack([H / h, W / w])
        out = jax.image.scale_and_translate(img.astype(jnp.float32), (H, W, C), (0, 1), scale,
                                            -jnp.stack([top, left]) * scale, "linear")
        return out

    out = jax.vmap(one)(x, h, w, top, left)
    out = jnp.where(flip[:, None, None, None], out[:, :, ::-1, :], out)
    return jnp.clip(jnp.round(out), 0, 255).astype(x.dtype) if x.dtype == jnp.uint8 else out.astype(x.dtype)


def augment(name: str, key: jax.Array, x: jax.Array) -> jax.Array:
    """Apply augmentation ``name`` (one of :data:`AUGMENTATIONS`) to a training batch."""
    if name in ("", "none"):
        return x
    if name == "cifar":
        return random_crop_flip(key, x)
    if name == "imagenet":
        return random_resized_crop_flip(key, x)
    raise ValueError(f"unknown augmentation {name!r}; valid augmentations: {', '.join(AUGMENTATIONS)}")
