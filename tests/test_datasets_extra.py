"""TinyImageNet from its archive (zip or unpacked), and the synthetic stand-in datasets."""

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from ltjax import data as D
from ltjax.config import Config, ConfigError
from ltjax.data import tiny_imagenet as T


def _jpeg(rgb, mode="RGB") -> bytes:
    im = Image.new(mode, (64, 64), rgb if mode == "RGB" else rgb[0])
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    return buf.getvalue()


WNIDS = [f"n{i:08d}" for i in range(200)][::-1]  # wnids.txt is not sorted: labels follow sorted order


def _archive_files(val=(("val_0.JPEG", 7), ("val_1.JPEG", 199), ("val_2.JPEG", 0)), bad_class=None):
    files = {"wnids.txt": ("\n".join(WNIDS) + "\n").encode()}
    for w in WNIDS:
        i = int(w[1:])
        for j in range(2):
            files[f"train/{w}/images/{w}_{j}.JPEG"] = _jpeg((i, j * 100, 50))
        files[f"train/{w}/{w}_boxes.txt"] = b"ignored"
    lines = []
    for fname, c in val:
        files[f"val/images/{fname}"] = _jpeg((c, 0, 0), mode="L" if c == 0 else "RGB")  # one grayscale
        lines.append(f"{fname}\t{bad_class or f'n{c:08d}'}\t0\t0\t63\t63")
    files["val/val_annotations.txt"] = "\n".join(lines).encode()
    return files


def _write_zip(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for rel, b in files.items():
            z.writestr(f"tiny-imagenet-200/{rel}", b)
    return path


def _write_folder(root, files):
    for rel, b in files.items():
        p = root / "tiny-imagenet-200" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b)
    return root / "tiny-imagenet-200"


def _check(a):
    assert a["x_train"].shape == (400, 64, 64, 3) and a["x_train"].dtype == np.uint8
    assert a["x_test"].shape == (3, 64, 64, 3)
    # class i is the i-th id in sorted order, whatever order wnids.txt lists them in
    assert np.array_equal(a["y_train"], np.repeat(np.arange(200), 2))
    assert np.array_equal(a["y_test"], [7, 199, 0])
    red = a["x_train"][:, 0, 0, 0].astype(int)
    assert np.all(np.abs(red - np.repeat(np.arange(200), 2)) <= 3)  # JPEG round-off
    assert np.all(np.abs(a["x_test"][2].astype(int) - 0) <= 3)  # the grayscale image, as RGB


def test_reads_the_zip_and_the_unpacked_folder_alike(tmp_path):
    files = _archive_files()
    z = _write_zip(tmp_path / T.ARCHIVE, files)
    folder = _write_folder(tmp_path / "unpacked", files)
    a, b = T.read(z), T.read(folder)
    _check(a)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert T.find(tmp_path) == z and T.find(tmp_path / "unpacked") == folder and T.find(folder) == folder


def test_load_caches_and_normalizes_like_the_tfds_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("LTJAX_CACHE_DIR", str(tmp_path / "cache"))
    _write_zip(tmp_path / T.ARCHIVE, _archive_files())
    ds = D.load("tiny_imagenet", validation_size=40, manual_dir=str(tmp_path))
    assert ds.num_classes == 200 and len(ds.x_train) == 360 and len(ds.x_val) == 40 and len(ds.x_test) == 3
    assert ds.mean == D.DATASETS["tiny_imagenet"].mean
    assert (tmp_path / "cache" / "tiny_imagenet.npz").exists()
    (tmp_path / T.ARCHIVE).unlink()  # the second load reads the cache only
    again = D.load("tiny_imagenet", validation_size=40, manual_dir=str(tmp_path))
    assert np.array_equal(again.x_train, ds.x_train)


def test_missing_or_malformed_archive_errors_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.setenv("LTJAX_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(D.DataUnavailableError, match=r"not in TFDS.*tiny-imagenet-200.zip.*--manual-dir"):
        D.load("tiny_imagenet", validation_size=0, manual_dir=str(tmp_path))
    _write_zip(tmp_path / T.ARCHIVE, _archive_files(bad_class="n99999999"))
    with pytest.raises(D.DataUnavailableError, match="names 'n99999999' for val_0.JPEG, not a class"):
        D.load("tiny_imagenet", validation_size=0, manual_dir=str(tmp_path))
    files = _archive_files()
    files["wnids.txt"] = b"n1\nn2\n"
    _write_zip(tmp_path / T.ARCHIVE, files)
    with pytest.raises(D.DataUnavailableError, match="lists 2 distinct classes, expected 200"):
        D.load("tiny_imagenet", validation_size=0, manual_dir=str(tmp_path))
    (tmp_path / T.ARCHIVE).write_bytes(b"<html>not a zip</html>")
    with pytest.raises(D.DataUnavailableError, match="cannot be read"):
        D.load("tiny_imagenet", validation_size=0, manual_dir=str(tmp_path))
    assert not (tmp_path / "cache" / "tiny_imagenet.npz").exists()  # nothing half-made was cached


@pytest.mark.parametrize("name", ["mnist", "cifar10", "tiny_imagenet"])
def test_synthetic_datasets_have_the_real_shapes_and_are_seeded(name):
    info = D.DATASETS[name]
    ds = D.load(f"synthetic_{name}", validation_size=24, split_seed=3)
    n_train, n_test = D.SYNTHETIC_SIZES
    assert ds.x_train.shape == (n_train - 24, *info.shape) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (n_test, *info.shape) and ds.num_classes == info.num_classes
    assert ds.mean == info.mean and ds.std == info.std
    counts = np.bincount(D.synthetic_arrays(name, 3)["y_train"], minlength=info.num_classes)
    assert counts.max() - counts.min() <= 1  # balanced
    again, other = D.load(f"synthetic_{name}", validation_size=24, split_seed=3), D.load(
        f"synthetic_{name}", validation_size=24, split_seed=4)
    assert np.array_equal(again.x_train, ds.x_train) and not np.array_equal(other.x_train, ds.x_train)
    # learnable: the nearest class template (the class mean of train) labels most test images
    a = D.synthetic_arrays(name, 3)
    means = np.stack([a["x_train"][a["y_train"] == c].reshape(-1, np.prod(info.shape)).mean(0)
                      for c in range(info.num_classes)])
    d = ((a["x_test"].reshape(len(a["x_test"]), -1)[:, None, :] - means[None]) ** 2).sum(-1)
    assert np.mean(d.argmin(1) == a["y_test"]) > 0.5


def test_config_accepts_the_new_dataset_names():
    for name in ("tiny_imagenet", "synthetic_cifar10", "synthetic_tiny_imagenet"):
        Config(dataset=name, validation_size=0).validate()
    with pytest.raises(ConfigError, match="synthetic_cifar10"):
        Config(dataset="synthetic_cifar").validate()
