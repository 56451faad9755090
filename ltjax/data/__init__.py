"""Datasets as arrays: TFDS image datasets (decoded once, cached), TinyImageNet, the 4-point
XOR set, synthetic stand-ins of each image dataset's shape, a seeded validation split, and
on-device normalization.

Images stay ``uint8`` (N, H, W, C) on the device; :func:`normalize` turns a gathered batch
into float32 ``(x/255 - mean) / std`` inside the compiled program.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ltjax.data.tfds_source import (
    DATASETS,
    DataUnavailableError,
    cache_dir,
    load_arrays,
    resolve_manual_dir,
)


class Dataset(NamedTuple):
    """Train / validation / test arrays plus normalization constants.

    ``x_*`` are uint8 images (or float32 features for XOR), ``y_*`` int32 labels.
    When ``validation_size`` was 0, the validation arrays are empty.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int


def split_validation(x: np.ndarray, y: np.ndarray, size: int, seed: int):
    """Carve ``size`` examples, drawn uniformly without replacement with ``seed``, out of train.

    Returns ``(x_train, y_train, x_val, y_val)``; both parts keep the original order.
    """
    n = len(x)
    if not 0 <= size < n:
        raise ValueError(f"validation_size must be in [0, {n - 1}] for {n} training examples, got {size}")
    val = np.zeros(n, bool)
    val[np.random.default_rng(seed).choice(n, size, replace=False)] = True
    return x[~val], y[~val], x[val], y[val]


SYNTHETIC_PREFIX = "synthetic_"
SYNTHETIC_SIZES = (1024, 256)  # train, test examples of a synthetic dataset


def names() -> list[str]:
    """Every dataset name :func:`load` accepts."""
    return [*DATASETS, "xor", *(SYNTHETIC_PREFIX + n for n in DATASETS)]


def synthetic_arrays(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Stand-in arrays with ``name``'s image shape, class count and dtypes, for smoke runs of
    recipes whose data cannot be had here (CIFAR-10, TinyImageNet offline).

    Each class has a random template image; an example is its class's template plus uniform
    noise of twice the template's spread, so a network can learn the task above chance, and
    the labels are balanced. Deterministic in ``seed``; sizes :data:`SYNTHETIC_SIZES`.
    """
    info = DATASETS[name]
    rng = np.random.default_rng(seed)
    templates = rng.uniform(64, 192, (info.num_classes, *info.shape))
    out = {}
    for split, n in zip(("train", "test"), SYNTHETIC_SIZES):
        y = rng.permutation(np.arange(n) % info.num_classes).astype(np.int32)
        x = templates[y] + rng.uniform(-128, 128, (n, *info.shape))
        out[f"x_{split}"], out[f"y_{split}"] = np.clip(np.rint(x), 0, 255).astype(np.uint8), y
    return out


def load(
    name: str,
    *,
    validation_size: int = 5000,
    split_seed: int = 0,
    data_dir: str | None = None,
    manual_dir: str | None = None,
) -> Dataset:
    """Load a dataset by name (one of :func:`names`) with a validation split.

    ``synthetic_<name>`` gives :func:`synthetic_arrays` of dataset ``name`` (seeded by
    ``split_seed``) with that dataset's normalization constants.
    """
    if name == "xor":
        x, y = xor()
        empty = (x[:0], y[:0])
        return Dataset("xor", x, y, *empty, x, y, (0.0,), (1.0,), 2)
    if name.startswith(SYNTHETIC_PREFIX) and name[len(SYNTHETIC_PREFIX):] in DATASETS:
        info = DATASETS[name[len(SYNTHETIC_PREFIX):]]
        arrays = synthetic_arrays(name[len(SYNTHETIC_PREFIX):], split_seed)
    else:
        info = DATASETS.get(name)
        arrays = load_arrays(name, data_dir=data_dir, manual_dir=manual_dir)
    x_tr, y_tr, x_val, y_val = split_validation(arrays["x_train"], arrays["y_train"], validation_size, split_seed)
    return Dataset(name, x_tr, y_tr, x_val, y_val, arrays["x_test"], arrays["y_test"],
                   info.mean, info.std, info.num_classes)


def fingerprint(ds: Dataset) -> str:
    """A short SHA-256 over the dataset's name and every split's arrays (dtype, shape and
    bytes): run directories record it, so a run resumed on different data (changed files, a
    rebuilt cache, another split) stops with an error instead of mixing the two."""
    h = hashlib.sha256(ds.name.encode())
    for a in (ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.reshape(-1).view(np.uint8))  # flat bytes; empty splits (no validation) too
    return h.hexdigest()[:16]


def xor() -> tuple[np.ndarray, np.ndarray]:
    """The four XOR points: inputs {0,1}² as float32 (4, 2), labels ``x1 xor x2`` as int32 (4,)."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    return x, (x[:, 0] != x[:, 1]).astype(np.int32)


def normalize(x: jnp.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> jnp.ndarray:
    """uint8 images → float32 ``(x/255 - mean) / std`` (per channel); float inputs pass through."""
    if x.dtype != jnp.uint8:
        return x.astype(jnp.float32)
    scale = 1.0 / (255.0 * np.asarray(std, np.float32))
    shift = np.asarray(mean, np.float32) / np.asarray(std, np.float32)
    return x.astype(jnp.float32) * scale - shift


__all__ = [
    "fingerprint",
    "DATASETS", "Dataset", "DataUnavailableError", "SYNTHETIC_PREFIX", "cache_dir", "load", "load_arrays",
    "names", "normalize", "resolve_manual_dir", "split_validation", "synthetic_arrays", "xor",
]
