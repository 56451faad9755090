"""TFDS image datasets, decoded once and cached as ``.npz``.

Where data comes from, in order:
  1. the decoded-array cache (``$LTJAX_CACHE_DIR`` or ``~/.cache/ltjax``), read without
     importing TensorFlow, so a second load of MNIST takes well under a second;
  2. TFDS's prepared dataset in ``data_dir`` (TFDS's default, ``~/tensorflow_datasets``);
  3. TFDS preparing it: from a manual download directory (``manual_dir`` argument, else
     ``$LTJAX_MANUAL_DIR``) holding the original files, or by TFDS's own download.
"""

from __future__ import annotations

import os
import socket
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np


class DatasetInfo(NamedTuple):
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    files: tuple[str, ...]
    host: str  # where TFDS downloads from; probed first so offline machines fail fast


_IDX_FILES = (
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
)
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo((0.1307,), (0.3081,), 10, _IDX_FILES, "storage.googleapis.com"),
    "fashion_mnist": DatasetInfo(
        (0.2860,), (0.3530,), 10, _IDX_FILES, "fashion-mnist.s3-website.eu-central-1.amazonaws.com"
    ),
}


class DataUnavailableError(RuntimeError):
    """The dataset is neither cached nor prepared and could not be downloaded."""


def cache_dir() -> Path:
    return Path(os.environ.get("LTJAX_CACHE_DIR") or Path.home() / ".cache" / "ltjax")


def resolve_manual_dir(name: str, manual_dir: str | None) -> Path | None:
    """The manual download directory for ``name``: the argument, else ``$LTJAX_MANUAL_DIR``.

    A parent folder holding one subfolder per dataset (like ``shared/data``) also works.
    """
    d = manual_dir or os.environ.get("LTJAX_MANUAL_DIR")
    if not d:
        return None
    d = Path(d).expanduser()
    if (d / name).is_dir() and not (d / DATASETS[name].files[0]).exists():
        d = d / name
    return d


def _check_name(name: str) -> DatasetInfo:
    if name not in DATASETS:
        valid = ", ".join(sorted([*DATASETS, "xor"]))
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {valid}")
    return DATASETS[name]


def _tfds_arrays(name: str, data_dir: str | None, manual_dir: Path | None) -> dict[str, np.ndarray]:
    import tensorflow_datasets as tfds

    info = DATASETS[name]
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        where = f"TFDS data_dir {builder.data_dir_root}" + (f" and manual directory {manual_dir}" if manual_dir else "")

        def unavailable(reason: str) -> DataUnavailableError:
            return DataUnavailableError(
                f"dataset {name!r} is not prepared and cannot be built: {reason} (looked in {where}). "
                f"On an offline machine put the original files ({', '.join(info.files)}) in a folder "
                f"and pass it with --manual-dir DIR or LTJAX_MANUAL_DIR=DIR."
            )

        if manual_dir:
            missing = [f for f in info.files if not (manual_dir / f).exists()]
            if missing:
                raise unavailable(f"the manual directory lacks {', '.join(missing)}")
        elif not _reachable(info.host):
            raise unavailable(f"no manual directory was given and {info.host} cannot be reached to download it")
        config = tfds.download.DownloadConfig(manual_dir=str(manual_dir) if manual_dir else None)
        try:
            builder.download_and_prepare(download_config=config)
        except Exception as e:  # TFDS raises many kinds (network, checksum, missing file)
            first = str(e).splitlines()[0] if str(e) else ""
            raise unavailable(f"TFDS failed with {type(e).__name__}: {first}") from e
    out = {}
    for split in ("train", "test"):
        d = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        out[f"x_{split}"] = np.asarray(d["image"], np.uint8)
        out[f"y_{split}"] = np.asarray(d["label"], np.int32)
    return out


def _reachable(host: str, timeout: float = 5.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_arrays(
    name: str, *, data_dir: str | None = None, manual_dir: str | None = None
) -> dict[str, np.ndarray]:
    """``{"x_train", "y_train", "x_test", "y_test"}`` as uint8 images (N, H, W, C) and int32 labels."""
    _check_name(name)
    path = cache_dir() / f"{name}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                return {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # an unreadable (truncated, empty, foreign) cache is rebuilt below
    arrays = _tfds_arrays(name, data_dir, resolve_manual_dir(name, manual_dir))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)  # atomic: a killed writer never leaves a half cache
    return arrays
