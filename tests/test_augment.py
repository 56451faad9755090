"""On-device CIFAR augmentation: every output is a 4-pixel-shifted window of the zero-padded
image, mirrored or not; draws are keyed, so reproducible, and differ across tickets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import models
from ltjax.data import Dataset
from ltjax.data.augment import augment, random_crop_flip
from ltjax.train import TrainSpec, device_data, make_trainer


def _images(n=64, h=8, w=8, c=3):
    return jnp.asarray(np.random.default_rng(0).integers(1, 256, (n, h, w, c)), jnp.uint8)  # no zero pixels


def test_each_output_is_a_window_of_the_padded_image_maybe_mirrored():
    x = _images()
    out = np.asarray(random_crop_flip(jax.random.PRNGKey(0), x))
    padded = np.pad(np.asarray(x), ((0, 0), (4, 4), (4, 4), (0, 0)))
    shifts, flips = set(), 0
    for i in range(len(x)):
        hits = [(a, b, f) for a in range(9) for b in range(9) for f in (0, 1)
                if np.array_equal(out[i], (padded[i, a:a + 8, b:b + 8] if not f else padded[i, a:a + 8, b:b + 8][:, ::-1]))]
        assert hits, f"image {i} is not a window of its padded image"
        shifts.add(hits[0][:2])
        flips += hits[0][2]
    assert len(shifts) > 20 and 16 < flips < 48  # offsets vary, about half mirrored
    assert out.dtype == np.uint8 and out.shape == x.shape


def test_keyed_and_reproducible():
    x = _images()
    a = random_crop_flip(jax.random.PRNGKey(1), x)
    np.testing.assert_array_equal(a, random_crop_flip(jax.random.PRNGKey(1), x))
    assert not np.array_equal(a, random_crop_flip(jax.random.PRNGKey(2), x))
    np.testing.assert_array_equal(augment("none", jax.random.PRNGKey(1), x), x)
    with pytest.raises(ValueError, match="valid augmentations: none, cifar"):
        augment("mixup", jax.random.PRNGKey(1), x)


def test_trainer_with_augmentation_is_deterministic_and_differs_from_none():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (128, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 128).astype(np.int32)
    ds = Dataset("t", x, y, x[:0], y[:0], x[:20], y[:20], (0.5,) * 3, (0.25,) * 3, 10)
    model = models.mlp((16,), input_shape=(8, 8, 3))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    params = models.run_init(jax.vmap(model.init), keys)
    from ltjax import masks as M

    mask = jax.vmap(lambda p: M.make_mask(p, model.is_prunable))(params)
    data = device_data(ds)
    run = lambda aug: make_trainer(model, TrainSpec(batch_size=16, eval_every=10, augment=aug), ds.mean, ds.std)(  # noqa: E731
        params, mask, keys, data, 0, 20)
    a, b, c = run("cifar"), run("cifar"), run("none")
    for u, v in zip(jax.tree.leaves(a[0]), jax.tree.leaves(b[0])):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(np.asarray(a[0]["fc1"]["kernel"]), np.asarray(c[0]["fc1"]["kernel"]))
