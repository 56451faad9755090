"""A wrong or corrupted file in the manual download directory is reported by name, with its
expected checksum, before TFDS tries (and fails obscurely) to prepare from it."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ltjax import data as D
from ltjax.data import tfds_source

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="no offline dataset folder")

MNIST = D.DATASETS["mnist"]
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = MNIST.files


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A fresh cache dir and a fresh TFDS data_dir (never ~/tensorflow_datasets or the real cache)."""
    monkeypatch.setenv("LTJAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LTJAX_MANUAL_DIR", raising=False)
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    return data_dir


@pytest.fixture
def manual(tmp_path):
    """A writable copy of the genuine MNIST files."""
    d = tmp_path / "manual"
    d.mkdir()
    for f in MNIST.files:
        shutil.copyfile(SHARED / "mnist" / f, d / f)
    return d


def _snapshot(d: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.iterdir())}


def _load_error(manual: Path, data_dir: Path) -> str:
    before = _snapshot(manual)
    with pytest.raises(D.DataUnavailableError) as e:
        D.load_arrays("mnist", data_dir=str(data_dir), manual_dir=str(manual))
    assert _snapshot(manual) == before  # nothing modified, added or deleted by the failed check
    assert not (data_dir.parent / "cache" / "mnist.npz").exists()
    assert not any(data_dir.rglob("*.tfrecord*"))
    return str(e.value)


def _assert_named(msg: str, manual: Path, bad: list[str]) -> None:
    assert "'mnist'" in msg
    for f in bad:
        assert str(manual / f) in msg
        assert MNIST.checksums[f].sha256 in msg
        assert str(MNIST.checksums[f].size) in msg
    for f in set(MNIST.files) - set(bad):
        assert str(manual / f) not in msg  # good files are not reported as bad
        assert MNIST.checksums[f].sha256 not in msg
    # what to do: fetch the originals (all four names) from the dataset's source
    assert "Replace" in msg and MNIST.source in msg
    for f in MNIST.files:
        assert f in msg
    assert "TFDS failed" not in msg  # our check ran, not TFDS's


def test_truncated_file_named_with_expected_checksum(isolated, manual):
    path = manual / TRAIN_IMAGES
    path.write_bytes(path.read_bytes()[: 1_000_000])
    msg = _load_error(manual, isolated)
    _assert_named(msg, manual, [TRAIN_IMAGES])
    assert "truncated (1000000 of 9912422 bytes)" in msg
    assert "1 of its 4 files is not the original" in msg


def test_same_size_random_bytes_named(isolated, manual):
    path = manual / TEST_LABELS
    junk = np.random.default_rng(0).integers(0, 256, MNIST.checksums[TEST_LABELS].size, np.uint8).tobytes()
    path.write_bytes(junk)
    msg = _load_error(manual, isolated)
    _assert_named(msg, manual, [TEST_LABELS])
    assert tfds_source._sha256(path)[:16] in msg  # what was found
    assert "same size but different content" in msg and "not gzip" in msg


def test_two_bad_files_both_named(isolated, manual):
    (manual / TRAIN_LABELS).write_bytes(b"<html><body>404 Not Found</body></html>\n")
    # the decompressed IDX file saved under the .gz name
    (manual / TEST_IMAGES).write_bytes(gzip.decompress((SHARED / "mnist" / TEST_IMAGES).read_bytes()))
    msg = _load_error(manual, isolated)
    _assert_named(msg, manual, [TRAIN_LABELS, TEST_IMAGES])
    assert "2 of its 4 files are not the original" in msg
    lines = {ln.split(": expected", 1)[0].strip(): ln for ln in msg.splitlines() if ": expected sha256" in ln}
    assert set(lines) == {str(manual / TRAIN_LABELS), str(manual / TEST_IMAGES)}
    assert "HTML" in lines[str(manual / TRAIN_LABELS)]
    assert "decompressed IDX" in lines[str(manual / TEST_IMAGES)]


def test_verify_reports_missing_and_directory(tmp_path, manual):
    (manual / TRAIN_LABELS).unlink()
    (manual / TEST_LABELS).unlink()
    (manual / TEST_LABELS).mkdir()
    with pytest.raises(D.DataUnavailableError) as e:
        tfds_source.verify_manual_files("mnist", manual)
    msg = str(e.value)
    assert f"{manual / TRAIN_LABELS}: expected sha256 {MNIST.checksums[TRAIN_LABELS].sha256}" in msg
    assert "no such file" in msg and "not a regular file" in msg
    assert str(manual / TRAIN_IMAGES) not in msg


def test_genuine_files_verify_and_prepare(isolated, tmp_path, monkeypatch):
    # symlinks to the shared originals: the check follows them and reads nothing else
    manual = tmp_path / "links"
    manual.mkdir()
    for f in MNIST.files:
        (manual / f).symlink_to(SHARED / "mnist" / f)
    for name in ("mnist", "fashion_mnist"):  # both recorded tables match the genuine files
        tfds_source.verify_manual_files(name, SHARED / name)

    hashed = []
    real = tfds_source._sha256
    monkeypatch.setattr(tfds_source, "_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    a = D.load_arrays("mnist", data_dir=str(isolated), manual_dir=str(manual))
    assert sorted(hashed) == sorted(MNIST.files)  # the check ran before TFDS prepared
    assert a["x_train"].shape == (60000, 28, 28, 1) and a["x_train"].dtype == np.uint8
    assert a["x_test"].shape == (10000, 28, 28, 1)
    assert a["y_train"].shape == (60000,) and a["y_test"].shape == (10000,)
    assert set(np.unique(a["y_test"])) == set(range(10))

    # prepared in data_dir but not in the array cache: loads from TFDS without re-hashing
    (tmp_path / "cache" / "mnist.npz").unlink()
    monkeypatch.setattr(tfds_source, "_sha256", _must_not_hash)
    b = D.load_arrays("mnist", data_dir=str(isolated), manual_dir=str(manual))
    np.testing.assert_array_equal(a["y_test"], b["y_test"])


def _must_not_hash(path):
    raise AssertionError(f"hashed {path} on a cache hit")


def test_cache_hit_skips_the_check(isolated, tmp_path, manual, monkeypatch):
    (manual / TRAIN_IMAGES).write_bytes(b"corrupt")  # would fail the check if it ran
    monkeypatch.setattr(tfds_source, "_sha256", _must_not_hash)
    monkeypatch.setattr(tfds_source, "_tfds_arrays", lambda name, data_dir, manual_dir: {
        "x_train": np.zeros((3, 2, 2, 1), np.uint8), "y_train": np.arange(3, dtype=np.int32),
        "x_test": np.zeros((1, 2, 2, 1), np.uint8), "y_test": np.zeros(1, np.int32)})
    D.load_arrays("mnist", data_dir=str(isolated), manual_dir=str(manual))  # populates the cache
    monkeypatch.setattr(tfds_source, "_tfds_arrays", lambda *a: pytest.fail("cache missed"))
    a = D.load_arrays("mnist", data_dir=str(isolated), manual_dir=str(manual))
    np.testing.assert_array_equal(a["y_train"], [0, 1, 2])


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_recorded_checksums_match_tfds_registry(name):
    import tensorflow_datasets as tfds

    url_infos = getattr(tfds.builder_cls(name), "url_infos", None)
    if not url_infos:
        pytest.skip("this TFDS version exposes no url_infos")
    registered = {os.path.basename(url): (int(i.size), i.checksum) for url, i in url_infos.items()}
    info = D.DATASETS[name]
    assert set(info.files) == set(info.checksums)
    assert {f: (c.size, c.sha256) for f, c in info.checksums.items()} == registered
    assert all(url.startswith(info.source) for url in url_infos)
