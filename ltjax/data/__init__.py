"""Datasets as arrays: TFDS image datasets (decoded once, cached), TinyImageNet, the 4-point
XOR set, synthetic stand-ins of each image dataset's shape, a seeded validation split, and
on-device normalization.

Images stay ``uint8`` (N, H, W, C) on the device; :func:`normalize` turns a gathered batch
into float32 ``(x/255 - mean) / std`` inside the compiled program.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from ltjax.data.stream import Images, is_lazy, synthetic_images, take, tfds_images
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
    return take(x, ~val), y[~val], take(x, val), y[val]


SYNTHETIC_PREFIX = "synthetic_"
SYNTHETIC_SIZES = (1024, 256)  # train, test examples of a synthetic dataset


# Datasets too large for the device, read from disk as they train (:mod:`ltjax.data.stream`):
# ImageNet (ILSVRC-2012) through TFDS, its per-channel mean and std the common torchvision ones.
SYNTHETIC_STREAMED_SIZES = (1024, 16)  # train, test examples of a synthetic streamed dataset (each 150 kB at 224²)
STREAMED = {"imagenet2012": (1000, (224, 224, 3), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


def names() -> list[str]:
    """Every dataset name :func:`load` accepts."""
    return [*DATASETS, *STREAMED, "xor", *(SYNTHETIC_PREFIX + n for n in (*DATASETS, *STREAMED))]


def _streamed(name: str, validation_size: int, split_seed: int, data_dir, manual_dir) -> Dataset:
    """A :data:`STREAMED` dataset (or its ``synthetic_`` stand-in, generated on demand at the
    real image shape) as lazy :class:`~ltjax.data.stream.Images`: the test set is TFDS's
    ``validation`` split, the validation set carved out of train as for every dataset."""
    base = name[len(SYNTHETIC_PREFIX):] if name.startswith(SYNTHETIC_PREFIX) else name
    classes, shape, mean, std = STREAMED[base]
    if base != name:
        (x, y), (xt, yt) = (synthetic_images(classes, shape, n, split_seed, s)
                            for n, s in zip(SYNTHETIC_STREAMED_SIZES, ("train", "test")))
    else:
        _prepare_streamed(base, data_dir, manual_dir)
        (x, y), (xt, yt) = (tfds_images(base, s, data_dir=data_dir, size=shape[0]) for s in ("train", "validation"))
    x_tr, y_tr, x_val, y_val = split_validation(x, y, validation_size, split_seed)
    return Dataset(name, x_tr, y_tr, x_val, y_val, xt, yt, mean, std, classes)


def _prepare_streamed(name: str, data_dir, manual_dir) -> None:
    """TFDS's own preparation of ``name`` as ArrayRecord files (random access), once, from the
    archives in the manual directory (ImageNet cannot be downloaded: it needs a login)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return
    manual = resolve_manual_dir(name, manual_dir)
    if manual is None or not any(manual.glob("ILSVRC2012_img_*.tar")):
        raise DataUnavailableError(
            f"dataset {name!r} is not prepared in {builder.data_dir} and no manual directory holds its archives: download "
            f"ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org (a login is needed) "
            f"into a directory and pass it as manual_dir (--manual-dir); TFDS then converts them once to ArrayRecord "
            f"files (about 150 GB) that ltjax reads as it trains")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))


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
    name,
    *,
    validation_size: int = 5000,
    split_seed: int = 0,
    data_dir: str | None = None,
    manual_dir: str | None = None,
) -> Dataset:
    """Load a dataset by name (one of :func:`names`) with a validation split, or take your own
    arrays (see :func:`from_arrays`).

    ``synthetic_<name>`` gives :func:`synthetic_arrays` of dataset ``name`` (seeded by
    ``split_seed``) with that dataset's normalization constants.
    """
    if not isinstance(name, str):
        return from_arrays(name, validation_size=validation_size, split_seed=split_seed)
    if name == "xor":
        x, y = xor()
        empty = (x[:0], y[:0])
        return Dataset("xor", x, y, *empty, x, y, (0.0,), (1.0,), 2)
    if name.removeprefix(SYNTHETIC_PREFIX) in STREAMED:
        return _streamed(name, validation_size, split_seed, data_dir, manual_dir)
    if name.startswith(SYNTHETIC_PREFIX) and name[len(SYNTHETIC_PREFIX):] in DATASETS:
        info = DATASETS[name[len(SYNTHETIC_PREFIX):]]
        arrays = synthetic_arrays(name[len(SYNTHETIC_PREFIX):], split_seed)
    else:
        info = DATASETS.get(name)
        arrays = load_arrays(name, data_dir=data_dir, manual_dir=manual_dir)
    x_tr, y_tr, x_val, y_val = split_validation(arrays["x_train"], arrays["y_train"], validation_size, split_seed)
    return Dataset(name, x_tr, y_tr, x_val, y_val, arrays["x_test"], arrays["y_test"],
                   info.mean, info.std, info.num_classes)


def data_arrays(data) -> dict[str, Any]:
    """The splits of in-memory data: a :class:`~ltjax.data.Dataset`, a mapping with
    ``x_train, y_train, x_test, y_test`` (optionally ``x_val, y_val``), or a tuple
    ``(x_train, y_train, x_test, y_test)``."""
    if isinstance(data, Dataset):
        return {k: getattr(data, k) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
    if isinstance(data, tuple) and len(data) == 4:
        return dict(zip(("x_train", "y_train", "x_test", "y_test"), data))
    if isinstance(data, dict):
        need = {"x_train", "y_train", "x_test", "y_test"}
        missing = sorted(need - set(data))
        extra = sorted(set(data) - need - {"x_val", "y_val", "mean", "std", "name", "num_classes"})
        if missing or extra:
            raise TypeError(f"data must have the keys x_train, y_train, x_test, y_test (optionally x_val, y_val, "
                            f"mean, std, name, num_classes); missing {missing}, unknown {extra}")
        return dict(data)
    raise TypeError(f"data must be an ltjax.data.Dataset, a dict of arrays or a tuple (x_train, y_train, x_test, "
                    f"y_test), got {type(data).__name__}")


def from_arrays(data, *, validation_size: int = 0, split_seed: int = 0) -> Dataset:
    """A :class:`Dataset` from your own in-memory arrays (NumPy or JAX).

    ``data``: a mapping with ``x_train, y_train, x_test, y_test`` and optionally ``x_val,
    y_val`` (a validation split of your own), ``mean``, ``std`` (per channel, for uint8
    images scaled to [0, 1]), ``name`` and ``num_classes``; a tuple ``(x_train, y_train,
    x_test, y_test)``; or a :class:`Dataset`. Without a split of your own, ``validation_size``
    examples are carved out of train with ``split_seed``; with one, ``validation_size`` must
    be its size. uint8 inputs are normalized with ``mean``/``std`` (default: the training
    set's per-channel statistics); float inputs are used as they are. Labels are integers
    ``0 … num_classes-1`` (default: the largest label + 1).
    """
    if isinstance(data, Dataset):
        if len(data.x_val) != validation_size:
            raise ValueError(f"your Dataset has its own validation split of {len(data.x_val)} examples, so "
                             f"validation_size must be {len(data.x_val)}, not {validation_size}")
        return data
    a = data_arrays(data)
    arr = {k: np.asarray(v) for k, v in a.items() if k.startswith(("x_", "y_"))}
    for k in ("y_train", "y_test", "y_val"):
        if k in arr:
            if arr[k].ndim != 1 or not np.issubdtype(arr[k].dtype, np.integer):
                raise ValueError(f"{k} must be a vector of integer class labels, got dtype {arr[k].dtype} "
                                 f"shape {arr[k].shape}")
            arr[k] = arr[k].astype(np.int32)
    for split in ("train", "test", "val"):
        if f"x_{split}" in arr and len(arr[f"x_{split}"]) != len(arr.get(f"y_{split}", ())):
            raise ValueError(f"x_{split} has {len(arr[f'x_{split}'])} examples but y_{split} has "
                             f"{len(arr.get(f'y_{split}', ()))}")
    if ("x_val" in arr) != ("y_val" in arr):
        raise ValueError("give both x_val and y_val, or neither")
    if "x_val" in arr:
        if len(arr["x_val"]) != validation_size:
            raise ValueError(f"your data has its own validation split of {len(arr['x_val'])} examples, so "
                             f"validation_size must be {len(arr['x_val'])} (nothing is carved out of train), "
                             f"not {validation_size}")
        x_tr, y_tr, x_val, y_val = arr["x_train"], arr["y_train"], arr["x_val"], arr["y_val"]
    else:
        x_tr, y_tr, x_val, y_val = split_validation(arr["x_train"], arr["y_train"], validation_size, split_seed)
    x = arr["x_train"]
    if "mean" in a or "std" in a:
        mean, std = tuple(map(float, np.atleast_1d(a["mean"]))), tuple(map(float, np.atleast_1d(a["std"])))
    elif x.dtype == np.uint8:
        flat = x.reshape(-1, x.shape[-1] if x.ndim == 4 else 1).astype(np.float64) / 255.0
        mean, std = tuple(map(float, flat.mean(0))), tuple(map(float, flat.std(0)))
    else:
        mean, std = (0.0,), (1.0,)
    labels = np.concatenate([arr["y_train"], arr["y_test"], arr.get("y_val", arr["y_test"][:0])])
    num_classes = int(a.get("num_classes", int(labels.max()) + 1 if len(labels) else 0))
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, num_classes={num_classes}), found {labels.min()}…{labels.max()}")
    return Dataset(str(a.get("name", "arrays")), x_tr, y_tr, x_val, y_val, arr["x_test"], arr["y_test"],
                   mean, std, num_classes)


def fingerprint(ds: Dataset) -> str:
    """A short SHA-256 over the dataset's name and every split's arrays (dtype, shape and
    bytes): run directories record it, so a run resumed on different data (changed files, a
    rebuilt cache, another split) stops with an error instead of mixing the two."""
    h = hashlib.sha256(ds.name.encode())
    for a in (ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test):
        if is_lazy(a):  # a streamed source: named by its source, version and subset, not hashed byte by byte
            h.update(f"{a.dtype.str}{a.shape}{a.token}".encode())
            continue
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
    "data_arrays", "fingerprint", "from_arrays",
    "DATASETS", "Dataset", "DataUnavailableError", "Images", "STREAMED", "SYNTHETIC_PREFIX", "cache_dir", "is_lazy",
    "load", "load_arrays",
    "names", "normalize", "resolve_manual_dir", "split_validation", "synthetic_arrays", "xor",
]
