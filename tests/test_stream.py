"""Streamed data (ltjax.data.stream): the host reads each minibatch in the in-memory path's
order and the trainer computes the same study; lazy sources index, subset and fingerprint
without reading everything; the prefetcher keeps order and reports its errors."""

import jax
import numpy as np
import pytest

from ltjax import data as D
from ltjax import lottery, presets
from ltjax.config import ConfigError
from ltjax.data import stream
from tests.helpers import assert_masks_agree

CFG = presets.get("lenet_mnist_iclr2019").replace(
    widths=(64,), iterations=400, eval_every=100, seeds=2, rounds=3, strategy="rewind", rewind_iteration=200,
    controls=("reinit",), scores=("magnitude", "snip"))


def _quiet(_):
    pass


def test_a_streamed_study_computes_the_in_memory_studys_masks(tmp_path):
    """LTR with magnitude and SNIP-scored tickets (SNIP's minibatch is read from the host too)
    and a reinit control, 3 rounds, streamed and in memory. The streamed program takes the
    batches as arguments instead of gathering them on the device, so XLA may fuse and sum in
    another order: weights agree to float32 rounding (round 0's curves to 1e-5 on accuracies,
    1e-4 relative on losses), and a score within rounding of its threshold may fall either
    side. So masks: exact per-layer counts, and at most a rounding swap or so per layer
    (``assert_masks_agree``; measured here: rounds 0-1 bitwise equal, round 2's SNIP ticket 12
    of 50,176 first-layer weights); later rounds' test accuracies within 0.01."""
    a = lottery.run(CFG, tmp_path / "memory", progress=False, log=_quiet)
    b = lottery.run(CFG, tmp_path / "stream", progress=False, log=_quiet, stream=True)
    assert a.path.name == b.path.name  # the same configuration: streaming is not part of the hash
    for r in range(CFG.rounds):
        ra, rb = a.rounds[r], b.rounds[r]
        assert_masks_agree(ra.mask, rb.mask)
        for k, v in ra.metrics["remaining"].items():
            np.testing.assert_array_equal(v, rb.metrics["remaining"][k])
        ca, cb = ra.metrics["curves"], rb.metrics["curves"]
        np.testing.assert_allclose(ca["test_acc"], cb["test_acc"], atol=1e-5 if r == 0 else 1e-2)
        if r == 0:
            for k in ("val_acc", "train_acc"):
                np.testing.assert_allclose(ca[k], cb[k], atol=1e-5, err_msg=k)
            for k in ("val_loss", "test_loss", "train_loss"):
                np.testing.assert_allclose(ca[k], cb[k], rtol=1e-4, err_msg=k)
        else:
            np.testing.assert_allclose(ra.metrics["controls"]["reinit"]["test_acc_at_es"],
                                       rb.metrics["controls"]["reinit"]["test_acc_at_es"], atol=1e-2)


def test_images_read_index_and_subset_lazily():
    reads = []
    base = np.arange(50 * 2 * 2, dtype=np.uint8).reshape(50, 2, 2, 1)

    def read(pos):
        reads.append(np.asarray(pos).copy())
        return base[pos]

    x = stream.Images(read, 50, (2, 2, 1), np.uint8, "toy")
    assert x.shape == (50, 2, 2, 1) and len(x) == 50 and D.is_lazy(x) and not D.is_lazy(base)
    idx = np.array([[3, 7], [49, 0]])
    np.testing.assert_array_equal(x[idx], base[idx])
    np.testing.assert_array_equal(x[2:5], base[2:5])
    np.testing.assert_array_equal(x[-1:], base[-1:])
    sub = x.take(np.arange(50) % 3 == 0)  # lazy: nothing read
    n_reads = len(reads)
    assert len(sub) == 17 and len(reads) == n_reads
    np.testing.assert_array_equal(sub[np.array([0, 1, 16])], base[[0, 3, 48]])
    np.testing.assert_array_equal(reads[-1], [0, 3, 48])  # only the asked examples were read
    assert sub.token != x.token and x.take(np.arange(50) % 3 == 0).token == sub.token
    with pytest.raises(IndexError, match="out of range for 17"):
        sub[np.array([17])]


def test_synthetic_imagenet_is_generated_on_demand_at_the_real_shapes():
    ds = D.load("synthetic_imagenet2012", validation_size=24)
    assert ds.x_train.shape == (1000, 224, 224, 3) and ds.x_val.shape == (24, 224, 224, 3)
    assert ds.x_test.shape == (16, 224, 224, 3) and ds.num_classes == 1000 and D.is_lazy(ds.x_train)
    a = ds.x_train[np.array([5, 900])]
    np.testing.assert_array_equal(a, ds.x_train[np.array([5, 900])])  # the same bytes on every read
    assert a.dtype == np.uint8 and 0 < a.std()
    again = D.load("synthetic_imagenet2012", validation_size=24)
    other = D.load("synthetic_imagenet2012", validation_size=24, split_seed=1)
    assert D.fingerprint(ds) == D.fingerprint(again) != D.fingerprint(other)


def test_stream_false_on_a_streamed_dataset_is_refused_before_anything_is_written(tmp_path):
    cfg = presets.get("lenet_mnist_iclr2019").replace(dataset="synthetic_imagenet2012", validation_size=24)
    with pytest.raises(ConfigError, match="stream=False is not valid"):
        lottery.run(cfg, tmp_path, progress=False, log=_quiet, stream=False)
    assert not any(tmp_path.iterdir())


def test_imagenet_without_data_names_the_archives_and_where_to_get_them(tmp_path):
    with pytest.raises(D.DataUnavailableError, match=r"ILSVRC2012_img_train\.tar.*manual_dir"):
        D.load("imagenet2012", data_dir=str(tmp_path), manual_dir=str(tmp_path))


def test_prefetcher_keeps_order_counts_waiting_and_raises_the_readers_error():
    stats = {}
    with stream.Prefetcher(range(5), lambda j: j * j, depth=2, stats=stats) as feed:
        assert list(feed) == [0, 1, 4, 9, 16]
    assert stats["batches"] == 5 and stats["wait_seconds"] >= 0

    def bad(j):
        if j == 2:
            raise OSError("disk gone")
        return j

    with stream.Prefetcher(range(5), bad, depth=1) as feed:
        assert next(feed) == 0 and next(feed) == 1
        with pytest.raises(OSError, match="disk gone"):
            next(feed)
    # a consumer that stops early (its training failed) is never left waiting on the reader,
    # even when the reader's error or end would not fit in the full queue
    import threading
    import time

    def bad_second(j):
        if j == 1:
            raise OSError("disk gone")
        return j

    feed = stream.Prefetcher(range(3), bad_second, depth=1)
    time.sleep(0.3)  # the reader has filled the queue with job 0 and holds job 1's error
    closer = threading.Thread(target=feed.close)
    closer.start()
    closer.join(5)
    assert not closer.is_alive()
    with pytest.raises(ValueError, match="prefetch must be at least 1"):
        stream.HostData(*(np.zeros((1, 1)),) * 6, prefetch=0)


def test_decode_center_resizes_the_shorter_side_and_cuts_the_center():
    """ImageNet's host transform on a JPEG: 300 x 200 (w x h), left half red and right half
    blue; at size 32 the shorter side becomes 37 (32·256/224), the width 55, and the central
    32 columns keep both halves, red left of blue."""
    import io

    from PIL import Image

    img = np.zeros((200, 300, 3), np.uint8)
    img[:, :150, 0], img[:, 150:, 2] = 255, 255
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=95)
    out = stream.decode_center(buf.getvalue(), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert (out[:, :12, 0] > 200).all() and (out[:, :12, 2] < 60).all()
    assert (out[:, -12:, 2] > 200).all() and (out[:, -12:, 0] < 60).all()


def test_imagenet_augmentation_is_identity_at_full_area_and_keeps_shape_and_dtype():
    import jax.numpy as jnp

    from ltjax.data.augment import augment, random_resized_crop_flip

    x = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3)).astype(np.uint8)
    full = np.asarray(random_resized_crop_flip(jax.random.PRNGKey(1), jnp.asarray(x), area=(1, 1), ratio=(1, 1)))
    for a, b in zip(full, x):  # the whole image, mirrored or not
        assert np.array_equal(a, b) or np.array_equal(a, b[:, ::-1])
    y = np.asarray(augment("imagenet", jax.random.PRNGKey(2), jnp.asarray(x)))
    assert y.shape == x.shape and y.dtype == np.uint8 and not np.array_equal(y, x)
