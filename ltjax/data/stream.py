"""Streamed data: the splits stay on the host (in memory, memory-mapped on disk, or read
record by record from a TFDS random-access source) and the trainer is fed batch by batch.

For datasets that do not fit on the device (ImageNet is 150 GB of JPEGs; decoded at 224² it
would be 190 GB). The in-memory path (:func:`ltjax.train.device_data`) stays the default
where the data fits; a study streams when its dataset is a :class:`Images` source, or when
asked (``lottery.run(stream=True)``, ``ltjax run --stream``).

**The order is the in-memory path's.** Batch ``t`` of ticket ``k`` is
:func:`ltjax.data.order.batch_indices` ``(key_k, n, B, t)``, a pure function of the ticket's
key and the global iteration, computed on the host and read from the source, so a streamed
run trains on exactly the batches an in-memory run would, and a resumed run sees the same
batches as an uninterrupted one. Augmentation stays on the device, keyed as before.

**Why random access, and why TFDS's.** A step-indexed order needs any example at any step,
so the reader must be random access. tf.data reads TFRecord files front to back (a shuffle
buffer, not a permutation of the whole set; a resumed iterator must replay its state), so
it cannot give this order. Grain can, but its samplers have their own order and it would
be one more dependency; what it reads is the same ArrayRecord files that
``tfds.data_source`` opens (TFDS ≥ 4.9, ``array_record``, both already installed with
``tensorflow-datasets``). So :func:`tfds_images` uses ``tfds.data_source``, decodes on a pool
of host threads, and :class:`Prefetcher` keeps the next batches in flight while the device
trains, so the device waits only when reading is slower than training (measured as
``wait_seconds``; see the README's streaming numbers).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import io
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np


class Images:
    """A lazy array of images: ``shape``, ``dtype``, ``len``, and ``x[idx]`` (an integer index
    array, or a slice) reads just those examples as a NumPy array. ``read(positions)`` reads
    from the underlying source; ``take(idx)`` is a lazy subset (a validation split carved out
    of train). ``token`` names the content for run identity (see :func:`ltjax.data.fingerprint`):
    the source and its version, not its bytes, which are too many to hash."""

    def __init__(self, read: Callable[[np.ndarray], np.ndarray], n: int, item_shape: tuple[int, ...],
                 dtype=np.uint8, token: str = "", index: np.ndarray | None = None):
        self._read, self._n, self._index = read, n, index
        self.dtype, self.token = np.dtype(dtype), token
        self.shape = (n if index is None else len(index), *item_shape)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, slice):
            idx = np.arange(len(self))[idx]
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        flat = idx.reshape(-1).astype(np.int64)
        if flat.size and (flat.min() < -len(self) or flat.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} examples")
        flat = flat % max(len(self), 1)
        pos = flat if self._index is None else self._index[flat]
        out = self._read(pos) if flat.size else np.zeros((0, *self.shape[1:]), self.dtype)
        return np.asarray(out, self.dtype).reshape(*idx.shape, *self.shape[1:])

    def take(self, idx: np.ndarray) -> "Images":
        """The lazy subset at positions ``idx`` (integer or boolean)."""
        idx = np.asarray(idx)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)
        base = idx if self._index is None else self._index[idx]
        sub = hashlib.sha256(base.tobytes()).hexdigest()[:12]
        return Images(self._read, self._n, self.shape[1:], self.dtype, f"{self.token}[{sub}]", base)

    def __repr__(self) -> str:
        return f"Images({self.token!r}, shape={self.shape}, dtype={self.dtype})"


def is_lazy(x: Any) -> bool:
    """Whether ``x`` is a streamed source (not an array that could go onto the device)."""
    return isinstance(x, Images)


def take(x: Any, idx: np.ndarray) -> Any:
    """``x[idx]``: a lazy subset of an :class:`Images`, a NumPy gather of an array."""
    return x.take(idx) if is_lazy(x) else x[idx]


class HostData:
    """A dataset's splits on the host, for :func:`ltjax.train.make_trainer` to stream (the
    counterpart of :class:`~ltjax.train.DeviceData`). ``prefetch``: how many batches of work
    the reader keeps ahead of the device; ``chunk_bytes``: the most image bytes one transfer
    carries (a segment of ``eval_every`` iterations is fed in chunks of whole iterations under
    it); ``threads``: the reader's decoding threads. ``stats`` accumulates what the feeding
    cost: ``wait_seconds`` the trainer spent waiting for data, ``seconds`` it spent in all,
    ``batches`` transfers."""

    def __init__(self, x_train, y_train, x_val, y_val, x_test, y_test, *, prefetch: int = 2,
                 chunk_bytes: int = 256 << 20, threads: int = 8):
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1 batch ahead, got {prefetch}")
        self.x_train, self.y_train = x_train, np.asarray(y_train, np.int32)
        self.x_val, self.y_val = x_val, np.asarray(y_val, np.int32)
        self.x_test, self.y_test = x_test, np.asarray(y_test, np.int32)
        self.prefetch, self.chunk_bytes, self.threads = prefetch, chunk_bytes, threads
        self.stats = {"wait_seconds": 0.0, "seconds": 0.0, "batches": 0}

    def item_bytes(self) -> int:
        return int(np.prod(self.x_train.shape[1:])) * np.dtype(self.x_train.dtype).itemsize


def train_examples(data, idx) -> tuple[Any, Any]:
    """``(x_train[idx], y_train[idx])`` of device data (a gather on the device) or of
    :class:`HostData` (read on the host, then put on the device): the minibatches that SNIP
    and other data-dependent scores see, whichever way the study holds its data."""
    if not isinstance(data, HostData):
        return data.x_train[idx], data.y_train[idx]
    import jax.numpy as jnp

    i = np.asarray(idx)
    x = np.asarray(data.x_train[i.reshape(-1)]).reshape(*i.shape, *data.x_train.shape[1:])
    return jnp.asarray(x), jnp.asarray(data.y_train[i])


def host_data(ds, **kwargs) -> HostData:
    """The splits of a :class:`~ltjax.data.Dataset` as :class:`HostData` (nothing is copied)."""
    return HostData(ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test, **kwargs)


def eval_batches(x, batch: int) -> list[tuple[int, int]]:
    """``(begin, end)`` of the evaluation batches over a split of ``len(x)`` examples: one
    batch when it is at most ``batch``, else whole batches, the last padded (weights 0), as
    :func:`ltjax.train.device_data` pads the in-memory split."""
    n = len(x)
    b = min(batch, n)
    return [(i, min(i + b, n)) for i in range(0, n, b)] if n else []


def read_eval(x, y, begin: int, end: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Examples ``begin:end`` of a split, zero-padded to ``size``, with their weights."""
    idx = np.arange(begin, end)
    xb, yb = np.asarray(x[idx]), np.asarray(y[idx], np.int32)
    pad = size - len(idx)
    w = np.concatenate([np.ones(len(idx), np.float32), np.zeros(pad, np.float32)])
    xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
    return xb, np.concatenate([yb, np.zeros(pad, np.int32)]), w


class Prefetcher:
    """Runs ``make(job)`` for each job of ``jobs`` in order on a background thread, at most
    ``depth`` ahead of the consumer; iterate to get the results in order. Time the consumer
    spends blocked is added to ``stats["wait_seconds"]``. An exception in ``make`` is raised
    in the consumer; ``close()`` (or leaving a ``with`` block) stops the thread."""

    def __init__(self, jobs: Iterable, make: Callable, depth: int, stats: dict | None = None):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.stats = stats if stats is not None else {"wait_seconds": 0.0, "batches": 0}
        self._thread = threading.Thread(target=self._run, args=(iter(jobs), make), daemon=True, name="ltjax-feed")
        self._thread.start()

    def _put(self, entry) -> bool:
        """Queue ``entry`` unless the consumer has closed; False once it has (never blocks past close)."""
        while not self._stop.is_set():
            try:
                self._q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, jobs, make) -> None:
        try:
            for job in jobs:
                if not self._put((True, make(job))):
                    return
        except BaseException as e:  # noqa: BLE001  (re-raised in the consumer)
            self._put((False, e))
            return
        self._put((False, None))

    def __iter__(self):
        return self

    def __next__(self):
        t0 = time.perf_counter()
        ok, item = self._q.get()
        self.stats["wait_seconds"] = self.stats.get("wait_seconds", 0.0) + time.perf_counter() - t0
        if not ok:
            if item is None:
                raise StopIteration
            raise item
        self.stats["batches"] = self.stats.get("batches", 0) + 1
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- sources -----------------------------------------------------------------------------------

def threaded_reader(one: Callable[[int], np.ndarray], threads: int = 8) -> Callable[[np.ndarray], np.ndarray]:
    """``read(positions)`` from a per-example ``one(position)`` (decoding, resizing) run on a
    pool of ``threads`` host threads (JPEG decoding and PIL release the GIL)."""
    pool = cf.ThreadPoolExecutor(threads, thread_name_prefix="ltjax-read")

    def read(pos: np.ndarray) -> np.ndarray:
        return np.stack(list(pool.map(one, pos.tolist())))

    return read


def synthetic_images(num_classes: int, item_shape: tuple[int, int, int], n: int, seed: int, split: str
                     ) -> tuple[Images, np.ndarray]:
    """A stand-in split of ``n`` images generated on demand, so a dataset of ImageNet's shapes
    costs no memory: example ``i`` is its class's template (random, per ``seed``) plus uniform
    noise drawn from ``(seed, split, i)``, the same on every read. Labels are balanced."""
    rng = np.random.default_rng([seed, 7])
    small = rng.uniform(64, 192, (num_classes, 8, 8, item_shape[2])).astype(np.float32)
    rep = (-(-item_shape[0] // 8), -(-item_shape[1] // 8))
    y = np.random.default_rng([seed, len(split)]).permutation(np.arange(n) % num_classes).astype(np.int32)
    salt = 1 + ("train", "test").index(split)

    def one(i: int) -> np.ndarray:
        # a low-resolution class template, upsampled: learnable, and cheap at 224²
        t = np.kron(small[y[i]], np.ones((*rep, 1), np.float32))[:item_shape[0], :item_shape[1]]
        noise = np.random.default_rng([seed, salt, i]).integers(-96, 96, item_shape, dtype=np.int16)
        return np.clip(t + noise, 0, 255).astype(np.uint8)

    read = lambda pos: np.stack([one(int(i)) for i in pos])  # noqa: E731
    return Images(read, n, item_shape, np.uint8, f"synthetic:{num_classes}:{item_shape}:{n}:{seed}:{split}"), y


def tfds_images(name: str, split: str, *, data_dir: str | None = None, size: int = 224, threads: int = 8
                ) -> tuple[Images, np.ndarray]:
    """A TFDS split read record by record (``tfds.data_source``; the dataset must have been
    prepared with ``file_format="array_record"``), each JPEG decoded and resized on the host
    to ``size × size`` (shorter side to ``size·256/224``, then the central ``size²``: the
    standard ImageNet evaluation crop; random crops and flips run on the device).

    The labels are read in one pass over the split the first time and kept in a ``.npy``
    file beside the prepared data (a pass over ImageNet's records reads its 150 GB once)."""
    import tensorflow_datasets as tfds

    src = tfds.data_source(name, split=split, data_dir=data_dir, decoders={"image": tfds.decode.SkipDecoding()})
    n = len(src)
    info = src.dataset_info
    cache = Path(info.data_dir) / f"ltjax_labels_{split.replace('[', '_').replace(']', '_').replace(':', '-')}.npy"
    if cache.exists():
        y = np.load(cache)
    else:
        y = np.fromiter((int(src[i]["label"]) for i in range(n)), np.int32, n)
        np.save(cache, y)
    token = f"tfds:{name}:{info.version}:{split}:{n}:{size}"
    return Images(threaded_reader(lambda i: decode_center(src[i]["image"], size), threads), n, (size, size, 3),
                  np.uint8, token), y


def decode_center(jpeg: bytes, size: int = 224) -> np.ndarray:
    """An encoded image as ``size × size × 3`` uint8: decoded, its shorter side resized to
    ``size·256/224`` (bilinear), the center cut out (the standard ImageNet evaluation crop)."""
    from PIL import Image

    img = Image.open(io.BytesIO(jpeg)).convert("RGB")
    w, h = img.size
    s = round(size * 256 / 224) / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), np.uint8)


__all__ = ["HostData", "Images", "Prefetcher", "decode_center", "eval_batches", "host_data", "is_lazy", "read_eval",
           "synthetic_images", "take", "tfds_images", "threaded_reader", "train_examples"]
