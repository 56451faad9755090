"""TFDS image datasets, decoded once and cached as ``.npz``.

Where data comes from, in order:
  1. the decoded-array cache (``$LTJAX_CACHE_DIR`` or ``~/.cache/ltjax``), read without
     importing TensorFlow, so a second load of MNIST takes well under a second;
  2. TFDS's prepared dataset in ``data_dir`` (TFDS's default, ``~/tensorflow_datasets``);
  3. TFDS preparing it: from a manual download directory (``manual_dir`` argument, else
     ``$LTJAX_MANUAL_DIR``) holding the original files, or by TFDS's own download. The
     manual files are checked first against their recorded size and SHA-256
     (:func:`verify_manual_files`), so a wrong or corrupted one is named in the error.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Mapping, NamedTuple

import numpy as np

from ltjax.data import tiny_imagenet


class FileChecksum(NamedTuple):
    size: int  # bytes
    sha256: str  # hex digest


class DatasetInfo(NamedTuple):
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    files: tuple[str, ...]  # the original files a manual download directory must hold
    host: str  # where TFDS downloads from; probed first so offline machines fail fast
    source: str  # where the original files can be fetched by hand
    checksums: Mapping[str, FileChecksum]  # per file in ``files``: what TFDS registers for it
    shape: tuple[int, int, int]  # one image, (H, W, C)


# Size and SHA-256 of the original files: the values TFDS registers for these datasets
# (tensorflow_datasets/url_checksums/{mnist,fashion_mnist}.txt), so a file that passes here
# also passes TFDS's own check. Test-checked against TFDS's registry.
_MNIST_SUMS = {
    "train-images-idx3-ubyte.gz": FileChecksum(
        9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train-labels-idx1-ubyte.gz": FileChecksum(
        28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "t10k-images-idx3-ubyte.gz": FileChecksum(
        1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "t10k-labels-idx1-ubyte.gz": FileChecksum(
        4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}
_FASHION_MNIST_SUMS = {
    "train-images-idx3-ubyte.gz": FileChecksum(
        26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    "train-labels-idx1-ubyte.gz": FileChecksum(
        29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    "t10k-images-idx3-ubyte.gz": FileChecksum(
        4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    "t10k-labels-idx1-ubyte.gz": FileChecksum(
        5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
}
# tensorflow_datasets/url_checksums/cifar10.txt (TFDS 4.9.10; cifar10 builder version 3.0.2).
# TFDS takes a file of this name from the manual directory, else downloads it from the host.
_CIFAR10_SUMS = {
    "cifar-10-binary.tar.gz": FileChecksum(
        170052171, "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
}
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        (0.1307,), (0.3081,), 10, tuple(_MNIST_SUMS), "storage.googleapis.com",
        "https://storage.googleapis.com/cvdf-datasets/mnist/", _MNIST_SUMS, (28, 28, 1),
    ),
    "fashion_mnist": DatasetInfo(
        (0.2860,), (0.3530,), 10, tuple(_FASHION_MNIST_SUMS),
        "fashion-mnist.s3-website.eu-central-1.amazonaws.com",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", _FASHION_MNIST_SUMS, (28, 28, 1),
    ),
    # Per-RGB-channel normalization of the LTH-vs-SNIP report (the common CIFAR-10 constants).
    "cifar10": DatasetInfo(
        (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), 10, tuple(_CIFAR10_SUMS),
        "www.cs.toronto.edu", "https://www.cs.toronto.edu/~kriz/", _CIFAR10_SUMS, (32, 32, 3),
    ),
    # Not in TFDS: read from Stanford's archive in the manual directory (ltjax.data.tiny_imagenet).
    # The per-channel mean and std of its training images, as commonly used.
    "tiny_imagenet": DatasetInfo(
        (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262), 200, (tiny_imagenet.ARCHIVE,),
        "cs231n.stanford.edu", "http://cs231n.stanford.edu/tiny-imagenet-200.zip", {}, tiny_imagenet.SHAPE,
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
    if (d / name).is_dir() and not (name in DATASETS and (d / DATASETS[name].files[0]).exists()):
        d = d / name
    return d


def _check_name(name: str) -> DatasetInfo:
    if name not in DATASETS:
        valid = ", ".join(sorted([*DATASETS, "xor"]))
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {valid}")
    return DATASETS[name]


def _quiet_tensorflow():
    """Import TensorFlow (for TFDS) without its C++ start-up noise and without GPUs.

    TensorFlow >= 2.18 logs from static initializers before its logging is configured, so
    ``TF_CPP_MIN_LOG_LEVEL`` cannot silence ``Could not find cuda drivers``, ``failed call to
    cuInit`` or the oneDNN notice: file descriptor 2 goes to a temporary file while TensorFlow
    loads and sets up its devices, and what it wrote is shown only if that fails. GPUs are
    hidden from it: TFDS only decodes files on the host, and a TensorFlow that initialized the
    GPU would reserve memory JAX needs."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow as tf

            try:
                tf.config.set_visible_devices([], "GPU")
            except (RuntimeError, ValueError):  # devices already initialized
                pass
            tf.config.list_logical_devices()
            import tensorflow_datasets  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _tfds_arrays(name: str, data_dir: str | None, manual_dir: Path | None) -> dict[str, np.ndarray]:
    try:
        _quiet_tensorflow()
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataUnavailableError(
            f"dataset {name!r} is not in ltjax's decoded cache ({cache_dir()}), and preparing it with TFDS "
            f"needs TensorFlow, which is not installed ({e}): pip install 'ltjax[tfds]' (or 'ltjax[tfds-cpu]' "
            f"on a machine without a GPU), or copy a decoded {name}.npz from another machine into that folder"
        ) from e

    info = DATASETS[name]
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        where = f"TFDS data_dir {builder.data_dir_root}" + (f" and manual directory {manual_dir}" if manual_dir else "")

        def unavailable(reason: str) -> DataUnavailableError:
            return DataUnavailableError(
                f"dataset {name!r} is not prepared and cannot be built: {reason} (looked in {where}). "
                f"On an offline machine put the original files ({', '.join(info.files)}, from "
                f"{info.source}) in a folder and pass it with --manual-dir DIR or LTJAX_MANUAL_DIR=DIR."
            )

        missing = [f for f in info.files if not (manual_dir / f).exists()] if manual_dir else []
        if manual_dir and len(missing) < len(info.files):
            if missing:
                raise unavailable(f"the manual directory lacks {', '.join(missing)}")
            verify_manual_files(name, manual_dir)  # TFDS's own checksum error is obscure
        else:
            # No manual directory, or one holding none of this dataset's files (e.g. a shared
            # LTJAX_MANUAL_DIR with only other datasets): TFDS downloads it itself.
            if manual_dir:
                no_files = f"the manual directory holds none of its files ({', '.join(missing)})"
            else:
                no_files = "no manual directory was given"
            if not _reachable(info.host):
                raise unavailable(f"{no_files} and {info.host} cannot be reached to download it")
            manual_dir = None
        config = tfds.download.DownloadConfig(manual_dir=str(manual_dir) if manual_dir else None)
        # TFDS extracts a manual file to <download_dir>/extracted/GZIP.<file name> and reuses
        # whatever is there: MNIST and Fashion-MNIST share their four file names, so with one
        # download_dir for all datasets the second one prepared silently got the first's images.
        # One download_dir per dataset keeps them apart.
        try:
            builder.download_and_prepare(download_dir=Path(builder.data_dir_root) / "downloads" / name,
                                         download_config=config)
        except Exception as e:  # TFDS raises many kinds (network, checksum, missing file)
            first = str(e).splitlines()[0] if str(e) else ""
            raise unavailable(f"TFDS failed with {type(e).__name__}: {first}") from e
    out = {}
    for split in ("train", "test"):
        d = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        out[f"x_{split}"] = np.asarray(d["image"], np.uint8)
        out[f"y_{split}"] = np.asarray(d["label"], np.int32)
    problem = content_problem(name, out)
    if problem:
        raise DataUnavailableError(
            f"TFDS's prepared {name!r} in {builder.data_dir} is not {name}: {problem}. It was probably built "
            f"from another dataset's files (ltjax before this check let TFDS reuse MNIST's extracted files for "
            f"Fashion-MNIST, which have the same names). Delete {builder.data_dir} and "
            f"{Path(builder.data_dir_root) / 'downloads' / 'extracted'}, then load it again.")
    return out


def content_problem(name: str, arrays: Mapping[str, np.ndarray]) -> str | None:
    """What shows that ``arrays`` are not the dataset ``name`` (None if nothing does): the
    image shape, the label range, and the mean pixel of the training images (x / 255, per
    channel), which must be within 0.01 of the dataset's recorded mean. That tells MNIST
    (0.1307) from Fashion-MNIST (0.2860), whose files share their names."""
    info = DATASETS[name]
    x, y = arrays["x_train"], arrays["y_train"]
    if x.shape[1:] != info.shape:
        return f"its images have shape {x.shape[1:]}, expected {info.shape}"
    if len(y) and (y.min() < 0 or y.max() >= info.num_classes):
        return f"its labels span {y.min()}..{y.max()}, expected 0..{info.num_classes - 1}"
    # per-channel means from a histogram of each channel: no float copy of the images
    mean = tuple(float(np.bincount(x[..., c].ravel(), minlength=256) @ np.arange(256)) / (255 * x[..., c].size)
                 for c in range(x.shape[-1]))
    if any(abs(m - want) > 0.01 for m, want in zip(mean, info.mean)):
        got, want = ", ".join(f"{m:.4f}" for m in mean), ", ".join(f"{m:.4f}" for m in info.mean)
        return f"its training images' mean pixel is {got}, expected {want}"
    return None


def _tiny_imagenet_arrays(manual_dir: Path | None) -> dict[str, np.ndarray]:
    info = DATASETS["tiny_imagenet"]
    source = tiny_imagenet.find(manual_dir)
    if source is None:
        looked = f"the manual directory {manual_dir} holds neither {tiny_imagenet.ARCHIVE} nor " \
                 f"{tiny_imagenet.FOLDER}/" if manual_dir else "no manual directory was given"
        raise DataUnavailableError(
            f"dataset 'tiny_imagenet' is not in TFDS and ltjax does not download it: {looked}. "
            f"Download {info.source} into a folder (the zip as is, or unpacked) and pass it with "
            f"--manual-dir DIR or LTJAX_MANUAL_DIR=DIR.")
    try:
        return tiny_imagenet.read(source)
    except (ValueError, OSError, zipfile.BadZipFile, KeyError) as e:
        raise DataUnavailableError(f"dataset 'tiny_imagenet' cannot be read from {source}: {e}. "
                                   f"The original archive is {info.source}.") from e


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _describe_mismatch(path: Path, want: FileChecksum) -> str | None:
    """What is wrong with ``path`` as the original file ``want`` describes, or None if it matches."""
    if not path.exists():
        return "found: no such file"
    if not path.is_file():
        return "found: not a regular file"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
        digest = _sha256(path)
    except OSError as e:
        return f"found: unreadable ({type(e).__name__}: {e.strerror or e})"
    if size == want.size and digest == want.sha256:
        return None
    found = [f"sha256 {digest[:16]}..., {size} bytes"]
    is_gzip = head[:2] == b"\x1f\x8b"
    if size < want.size and is_gzip:
        found.append(f"truncated ({size} of {want.size} bytes)")
    elif size > want.size and is_gzip:
        found.append(f"too large ({size - want.size} bytes more than expected)")
    elif size == want.size:
        found.append("same size but different content (corrupted)")
    if not is_gzip:
        if head[:3] == b"\x00\x00\x08":
            found.append("not gzip: it looks like the already decompressed IDX file")
        elif head[:1] == b"<":
            found.append("not gzip: it looks like an HTML/XML page, e.g. a saved error page")
        else:
            found.append("not gzip")
    return f"found {'; '.join(found)}"


def verify_manual_files(name: str, manual_dir: Path) -> None:
    """Check each of the dataset's files in ``manual_dir`` against its recorded size and SHA-256.

    Raises :class:`DataUnavailableError` naming every bad file with what was expected and what
    was found. Only reads the files: nothing in ``manual_dir`` is changed or removed.
    """
    info = _check_name(name)
    bad = []
    for fname, want in info.checksums.items():
        path = Path(manual_dir) / fname
        problem = _describe_mismatch(path, want)
        if problem:
            bad.append(f"  {path}: expected sha256 {want.sha256} ({want.size} bytes); {problem}")
    if bad:
        raise DataUnavailableError(
            f"dataset {name!r} cannot be prepared from the manual directory {manual_dir}: "
            f"{len(bad)} of its {len(info.checksums)} files {'is' if len(bad) == 1 else 'are'} "
            f"not the original:\n" + "\n".join(bad) + "\n"
            f"Replace {'it' if len(bad) == 1 else 'them'} with the original "
            f"{'file' if len(bad) == 1 else 'files'} from {info.source} (the still gzipped "
            f"{', '.join(info.files)}), then run again. The manual directory was left unchanged."
        )


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
    if manual_dir is not None and not Path(manual_dir).expanduser().is_dir():
        raise DataUnavailableError(f"manual directory {manual_dir} is not a directory: pass the folder that "
                                   f"holds the original files of {name!r} ({', '.join(DATASETS[name].files)})")
    path = cache_dir() / f"{name}.npz"
    cached = _read_cache(path)
    if cached is not None:
        unused = [f"{flag} {v}" for flag, v in (("manual_dir", manual_dir), ("data_dir", data_dir)) if v is not None]
        if unused:  # what the user passed is not silently ignored
            print(f"ltjax: note: {name!r} comes from the decoded cache {path}; {' and '.join(unused)} "
                  f"{'is' if len(unused) == 1 else 'are'} not read (delete that file, or set "
                  f"LTJAX_CACHE_DIR to another folder, to rebuild from them)", file=sys.stderr)
        return cached
    # One preparer at a time (two experiments, or parallel test workers, starting together):
    # the others wait for the lock, then find the cache written.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _read_cache(path)
        return cached if cached is not None else _prepare(name, path, data_dir, manual_dir)


# Written into every cache. Caches without it predate the content check (some held MNIST as
# Fashion-MNIST) and are rebuilt, which runs the check.
CACHE_FORMAT = 2


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            if "format" not in z.files or int(z["format"]) != CACHE_FORMAT:
                return None
            return {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # an unreadable (truncated, empty, foreign) cache is rebuilt


def _prepare(name: str, path: Path, data_dir: str | None, manual_dir: str | None) -> dict[str, np.ndarray]:
    if name == "tiny_imagenet":
        arrays = _tiny_imagenet_arrays(resolve_manual_dir(name, manual_dir))
    else:
        arrays = _tfds_arrays(name, data_dir, resolve_manual_dir(name, manual_dir))
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, format=np.int32(CACHE_FORMAT), **arrays)
    os.replace(tmp, path)  # atomic: a killed writer never leaves a half cache
    return arrays
