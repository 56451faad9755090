"""Convolution speed, before and after a change to ``ltjax/models/conv.py``, in one process.

Loads ``conv_same`` from the module as it was at git revision ``--old`` beside the working
tree's, and times training steps of the bench suite's networks (synthetic data, SGD with
momentum, every step one compiled scan) with each, for 1 and 2 vmapped tickets, interleaved
and best of 3, so both sides see the same machine load. Prints ticket-steps/s, the fraction of
the measured float32 matmul peak (XLA's FLOP count of one step) and the ratios.

    python experiments/conv_ab.py --old c9569e4 --models conv2,resnet20

Run from a git checkout (it reads the old module with ``git show``).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

from ltjax import bench, bench_suite
from ltjax import masks as M
from ltjax.models import conv as C
from ltjax.models import resnet as R
from ltjax.train import TrainSpec, device_data, make_trainer


def old_conv_same(rev: str):
    """``conv_same`` of ``ltjax/models/conv.py`` at ``rev`` (the module up to its first Flax class)."""
    src = subprocess.run(["git", "show", f"{rev}:ltjax/models/conv.py"], capture_output=True, text=True,
                         check=True).stdout
    path = Path(tempfile.mkdtemp()) / "conv_old.py"
    path.write_text(src[:src.index("class Conv3x3")])
    spec = importlib.util.spec_from_file_location("conv_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["conv_old"] = module
    spec.loader.exec_module(module)
    return module.conv_same


def use(conv_same) -> None:
    """Make Conv-2 / VGG (``Conv3x3``) and the ResNets compute their convolutions with ``conv_same``."""
    C.CONV_IMPLS["xla"] = conv_same
    R.conv_same = conv_same


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", default="c9569e4", help="git revision of the 'before' conv.py")
    p.add_argument("--models", default="conv2,resnet20", help="bench suite networks (conv2, resnet20)")
    p.add_argument("--steps", type=int, default=10, help="timed iterations per measurement")
    a = p.parse_args()
    impls = {"before": old_conv_same(a.old), "now": C.conv_same}
    peak = bench.matmul_peak()
    print(f"jax {jax.__version__} on {jax.devices()[0]}; float32 matmul peak {peak / 1e9:.1f} GFLOP/s", flush=True)
    for name in a.models.split(","):
        factory, batch, shape = bench_suite.MODELS[name]
        model = factory()
        flops = bench.xla_step_flops(model, batch)
        ds = bench_suite.synthetic_dataset(shape, batch)
        data = device_data(ds)
        spec = TrainSpec(batch_size=batch, eval_every=a.steps, **bench_suite.SPEC)
        runs = {}
        for side, conv_same in impls.items():
            use(conv_same)
            for tickets in (1, 2):
                train = make_trainer(model, spec, ds.mean, ds.std)  # traced now, with this side's conv
                keys = jax.random.split(jax.random.PRNGKey(0), tickets)
                params = jax.vmap(model.init)(keys)
                mask = jax.vmap(lambda q: M.make_mask(q, model.is_prunable))(params)
                args = (params, mask, keys, data, 0, a.steps)
                jax.block_until_ready(train(*args))  # compile
                runs[side, tickets] = (train, args)
        use(impls["now"])
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(3):
            for k, (train, args) in runs.items():
                t = time.perf_counter()
                jax.block_until_ready(train(*args))
                best[k] = min(best[k], time.perf_counter() - t)
        print(f"{name}, batch {batch}, {flops / 1e9:.1f} GFLOP per step")
        for (side, tickets), s in best.items():
            rate = a.steps * tickets / s
            one = a.steps / best[side, 1]
            print(f"  {side:6s} T={tickets}: {rate:6.2f} ticket-steps/s  {rate * flops / peak:6.1%} of peak  "
                  f"{rate / one:.2f}x its one ticket  {rate / (a.steps / best['before', 1]):.2f}x one ticket before",
                  flush=True)


if __name__ == "__main__":
    main()
