"""How long the device waits for streamed data (:mod:`ltjax.data.stream`), in one process.

For each case, trains the same tickets on the same data twice, interleaved and best of
``--repeats``: once with the data on the device (the in-memory path) and once streamed from
the host (the reader runs ahead on a background thread). Prints, for the streamed run, the
fraction of its wall time the trainer spent blocked waiting for a batch (the input-pipeline
gap) and its iterations/s against the in-memory run's.

    python experiments/stream_gap.py                # LeNet-300-100 on MNIST's shape, Conv-2 on CIFAR's
    python experiments/stream_gap.py --resnet50     # also ResNet-50 on synthetic ImageNet (slow on a CPU)
    python experiments/stream_gap.py --decode       # only the host's JPEG decoding rate (ImageNet's reader)

Cases: LeNet-300-100, batch 60, 2 tickets (a fast step: the worst case for a host reader);
Conv-2, batch 60, 2 tickets; ResNet-50 at 224², batch 8, 1 ticket, images generated per
example on the host (synthetic_imagenet2012's reader stands in for JPEG decoding).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from ltjax import data as D
from ltjax import models
from ltjax.data import stream
from ltjax.masks import make_mask
from ltjax.train import TrainSpec, device_data, make_trainer


def _case(name, model, ds, spec, tickets, steps, repeats, in_memory=True):
    trainer = make_trainer(model, spec, ds.mean, ds.std)
    keys = jax.random.split(jax.random.PRNGKey(0), tickets)
    params = jax.vmap(model.init)(keys)
    mask = jax.vmap(lambda p: make_mask(p, model.is_prunable))(params)
    device = device_data(ds) if in_memory else None
    best = {"memory": float("inf"), "stream": float("inf"), "gap": 1.0}
    for i in range(repeats + 1):  # the first pass compiles
        if device is not None:
            t = time.perf_counter()
            jax.block_until_ready(trainer(params, mask, keys, device, 0, steps))
            if i:
                best["memory"] = min(best["memory"], time.perf_counter() - t)
        host = stream.host_data(ds)
        t = time.perf_counter()
        jax.block_until_ready(trainer(params, mask, keys, host, 0, steps))
        wall = time.perf_counter() - t
        if i and wall < best["stream"]:
            best["stream"], best["gap"] = wall, host.stats["wait_seconds"] / wall
    mem = f"{steps / best['memory']:8.2f}" if device is not None else "       -"
    ratio = f"{best['memory'] / best['stream']:5.2f}x" if device is not None else "    -"
    print(f"| {name:<42} | {mem} | {steps / best['stream']:8.2f} | {ratio} | {100 * best['gap']:5.1f}% |", flush=True)


def decode_rate(threads: int, seconds: float = 3.0) -> float:
    """Images/s that :func:`ltjax.data.stream.decode_center` turns into 224² crops on ``threads``
    threads, from JPEGs of ImageNet's typical size (500 x 375, quality 90, smooth content)."""
    import concurrent.futures as cf
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    jpegs = []
    for i in range(16):
        img = Image.fromarray(np.roll(small, i, axis=1)).resize((500, 375), Image.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        jpegs.append(buf.getvalue())
    done, t0 = 0, time.perf_counter()
    with cf.ThreadPoolExecutor(threads) as pool:
        while time.perf_counter() - t0 < seconds:
            done += len(list(pool.map(stream.decode_center, jpegs * 4)))
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--resnet50", action="store_true", help="also ResNet-50 on 224x224 synthetic ImageNet")
    ap.add_argument("--decode", action="store_true", help="only the JPEG decode + resize rate of ImageNet's reader")
    a = ap.parse_args()
    if a.decode:
        import os

        for t in sorted({1, os.cpu_count() or 1}):
            print(f"JPEG 500x375 -> 224² center crop, {t} thread(s): {decode_rate(t):.0f} images/s")
        return
    print(f"{jax.devices()[0].device_kind}, {jax.device_count()} device(s)")
    print("| case | in memory it/s | streamed it/s | streamed / in memory | waiting for data |")
    print("|---|---|---|---|---|")
    mnist = D.load("synthetic_mnist", validation_size=200)
    mlp = models.build("mlp", input_shape=mnist.x_train.shape[1:], num_outputs=10)
    spec = TrainSpec(optimizer="adam", lr=1.2e-3, batch_size=60, eval_every=100)
    _case("LeNet-300-100, batch 60, 2 tickets", mlp, mnist, spec, 2, 500, a.repeats)
    cifar = D.load("synthetic_cifar10", validation_size=200)
    conv2 = models.build("conv2", input_shape=cifar.x_train.shape[1:], num_outputs=10)
    _case("Conv-2, batch 60, 2 tickets", conv2, cifar, TrainSpec(optimizer="adam", lr=2e-4, batch_size=60,
                                                                 eval_every=20), 2, 40, a.repeats)
    if a.resnet50:
        imnet = D.load("synthetic_imagenet2012", validation_size=0)
        r50 = models.build("resnet50", input_shape=imnet.x_train.shape[1:], num_outputs=1000)
        spec = TrainSpec(optimizer="momentum", lr=0.1, batch_size=8, eval_every=4, augment="imagenet")
        _case("ResNet-50 224², batch 8, 1 ticket (streamed only)", r50, imnet, spec, 1, 8, max(1, a.repeats - 2),
              in_memory=False)


if __name__ == "__main__":
    main()
