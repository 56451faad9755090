"""TinyImageNet (200 classes of 64×64 RGB images) from its original archive.

TinyImageNet is not a TFDS dataset, so ltjax reads Stanford's ``tiny-imagenet-200.zip``
(http://cs231n.stanford.edu/tiny-imagenet-200.zip) itself, from a manual download folder:
either the zip as downloaded or the folder ``tiny-imagenet-200/`` it unpacks to. The arrays
are decoded once with Pillow and cached like the TFDS datasets.

Layout read (the archive's own): ``wnids.txt`` (200 WordNet ids), ``train/<wnid>/images/*.JPEG``
(500 per class) and ``val/images/*.JPEG`` with ``val/val_annotations.txt`` (file, wnid, box).
The labelled validation set is returned as the test split (the archive's test images carry no
labels), which is how the lottery-ticket papers report TinyImageNet accuracy. Class ``i`` is the
``i``-th WordNet id in sorted order; grayscale images are converted to RGB.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

ARCHIVE = "tiny-imagenet-200.zip"
FOLDER = "tiny-imagenet-200"
NUM_CLASSES = 200
SHAPE = (64, 64, 3)


class _Tree:
    """Read-only access to the archive's files, from the zip or the unpacked folder."""

    def __init__(self, source: Path):
        self.source = source
        if source.is_file():
            self._zip = zipfile.ZipFile(source)
            self._names = set(self._zip.namelist())
        else:
            self._zip = None

    def read(self, rel: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(f"{FOLDER}/{rel}")
        return (self.source / rel).read_bytes()

    def exists(self, rel: str) -> bool:
        if self._zip is not None:
            return f"{FOLDER}/{rel}" in self._names
        return (self.source / rel).is_file()

    def list(self, rel_dir: str, suffix: str) -> list[str]:
        if self._zip is not None:
            prefix = f"{FOLDER}/{rel_dir}/"
            return sorted(n[len(FOLDER) + 1:] for n in self._names
                          if n.startswith(prefix) and n.endswith(suffix) and "/" not in n[len(prefix):])
        d = self.source / rel_dir
        return sorted(f"{rel_dir}/{p.name}" for p in d.glob(f"*{suffix}")) if d.is_dir() else []


def find(manual_dir: Path | None) -> Path | None:
    """The zip or unpacked folder in ``manual_dir`` (the folder itself may be the unpacked one)."""
    if manual_dir is None:
        return None
    for cand in (manual_dir / ARCHIVE, manual_dir / FOLDER, manual_dir):
        if cand.is_file() or (cand.is_dir() and (cand / "wnids.txt").is_file()):
            return cand
    return None


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        a = np.asarray(im.convert("RGB"), np.uint8)
    if a.shape != SHAPE:
        raise ValueError(f"image of shape {a.shape}, expected {SHAPE}")
    return a


def read(source: Path) -> dict[str, np.ndarray]:
    """``{"x_train", "y_train", "x_test", "y_test"}`` from the archive or folder ``source``.

    Raises ``ValueError`` naming the first thing that does not match the archive's layout.
    """
    t = _Tree(Path(source))
    where = f"{source}"
    if not t.exists("wnids.txt"):
        raise ValueError(f"{where} is not TinyImageNet: it has no {FOLDER}/wnids.txt")
    wnids = sorted(w.strip() for w in t.read("wnids.txt").decode().split() if w.strip())
    if len(wnids) != NUM_CLASSES or len(set(wnids)) != NUM_CLASSES:
        raise ValueError(f"{where}: wnids.txt lists {len(set(wnids))} distinct classes, expected {NUM_CLASSES}")
    label = {w: i for i, w in enumerate(wnids)}
    xs, ys = [], []
    for w in wnids:
        files = t.list(f"train/{w}/images", ".JPEG")
        if not files:
            raise ValueError(f"{where}: class {w} has no training images in train/{w}/images/")
        for f in files:
            xs.append(_decode(t.read(f)))
            ys.append(label[w])
    if not t.exists("val/val_annotations.txt"):
        raise ValueError(f"{where}: val/val_annotations.txt is missing")
    xt, yt = [], []
    for line in t.read("val/val_annotations.txt").decode().splitlines():
        if not line.strip():
            continue
        fname, w = line.split("\t")[:2]
        if w not in label:
            raise ValueError(f"{where}: val/val_annotations.txt names {w!r} for {fname}, not a class in wnids.txt")
        xt.append(_decode(t.read(f"val/images/{fname}")))
        yt.append(label[w])
    return {"x_train": np.stack(xs), "y_train": np.asarray(ys, np.int32),
            "x_test": np.stack(xt), "y_test": np.asarray(yt, np.int32)}
