"""``ltjax bench``: LeNet-300-100 training throughput as a fraction of the machine's own peak.

The peak is the best dense float32 matmul rate measured in the same process (square
matrices of 1024 and 2048, jitted). A training step's FLOPs are counted as the matmuls
it needs: forward ``2·B·P``, weight gradients ``2·B·P``, input gradients ``2·B·(P − P₁)``
(none for the first layer), with P the number of kernel weights and P₁ those of the first
layer. Masking costs no FLOPs in this count (the masked matmuls are dense), so the
fraction of peak is the fraction of the machine's matmul rate spent on useful training.

Training is measured with the real trainer (masks, on-device batch gathering, optax
update), on MNIST-shaped synthetic uint8 data (throughput does not depend on pixel
values), with evaluation off; the evaluation overhead is then measured separately with
the presets' evaluation (5k validation + 10k test every 100 iterations).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import data as D
from ltjax import masks as M
from ltjax import models
from ltjax.train import TrainSpec, device_data, loss_and_correct, make_trainer


def matmul_peak(sizes=(1024, 2048), repeats: int = 5) -> float:
    """Best measured float32 matmul rate in FLOP/s."""
    best = 0.0
    for n in sizes:
        a = jnp.ones((n, n), jnp.float32)
        f = jax.jit(lambda x, y: x @ y)
        f(a, a).block_until_ready()
        reps = max(1, int(2e10 // (2 * n**3)))
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(reps):
                c = f(a, a)
            c.block_until_ready()
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    return best


def step_flops(model: models.Model, params, batch: int) -> float:
    """Matmul FLOPs of one training step of one ticket (see module docstring)."""
    kernels = [leaf.size for _, leaf in M.leaves_with_names(M.make_mask(params, model.is_prunable))]
    p, p1 = sum(kernels), kernels[0]
    return 2.0 * batch * (2 * p + (p - p1))


def _synthetic(n_train=55_000, n_val=5000, n_test=10_000, seed=0) -> D.Dataset:
    rng = np.random.default_rng(seed)
    img = lambda n: rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)  # noqa: E731
    lab = lambda n: rng.integers(0, 10, n).astype(np.int32)  # noqa: E731
    return D.Dataset("synthetic", img(n_train), lab(n_train), img(n_val), lab(n_val),
                     img(n_test), lab(n_test), (0.1307,), (0.3081,), 10)


def train_rate(batch: int, tickets: int, steps: int, eval_every: int, ds: D.Dataset, repeats: int = 3,
               model: models.Model | None = None, optimizer: dict | None = None) -> float:
    """Steps per second (per program: every step advances all ``tickets``), best of ``repeats``
    after a compiling call; ``optimizer``: TrainSpec fields (default plain SGD at lr 0.05)."""
    model = model or models.mlp((300, 100), init="glorot_normal")
    spec = TrainSpec(batch_size=batch, eval_every=eval_every, **(optimizer or dict(optimizer="sgd", lr=0.05)))
    train = make_trainer(model, spec, ds.mean, ds.std)
    keys = jax.random.split(jax.random.PRNGKey(0), tickets)
    params = jax.vmap(model.init)(keys)
    mask = jax.vmap(lambda p: M.make_mask(p, model.is_prunable))(params)
    data = device_data(ds)
    jax.block_until_ready(train(params, mask, keys, data, 0, steps))  # compile
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(train(params, mask, keys, data, 0, steps))
        best = min(best, time.perf_counter() - t)
    return steps / best


def xla_step_flops(model: models.Model, batch: int) -> float:
    """FLOPs of one training step's loss and gradient (one ticket), from XLA's cost analysis."""
    import optax

    params = model.init(jax.random.PRNGKey(0))
    x = jnp.zeros((batch, *model.input_shape), jnp.float32)
    y = jnp.zeros(batch, jnp.int32)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()

    cost = jax.jit(jax.grad(loss)).lower(params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def conv_bench(peak: float, steps: int = 40, baseline_steps: int = 4) -> dict:
    """Conv-2 on CIFAR-shaped data (batch 60): throughput as a fraction of the matmul peak,
    and against the same network with flax.linen.Conv (XLA's default kernel gradient,
    which XLA:CPU runs slowly inside the training scan), both in this process."""
    from ltjax.models.conv import ConvNet

    rng = np.random.default_rng(0)
    n = 600
    ds = D.Dataset("synthetic", rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                   rng.integers(0, 10, n).astype(np.int32), np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.int32),
                   np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.int32), (0.5,) * 3, (0.25,) * 3, 10)
    out = {}
    model = models.conv2()
    flops = xla_step_flops(model, 60)
    print(f"\nConv-2, 32x32x3, batch 60 ({flops / 1e9:.1f} GFLOP per step by XLA's count)")
    print(f"{'tickets':>7} {'steps/s':>9} {'ticket-steps/s':>14} {'GFLOP/s':>8} {'of peak':>8}")
    for tickets in (1, 2):
        rate = train_rate(60, tickets, steps, steps, ds, repeats=2, model=model)
        g = rate * tickets * flops / 1e9
        out[f"tickets_{tickets}"] = dict(steps_per_s=rate, gflops=g, fraction_of_peak=g * 1e9 / peak)
        print(f"{tickets:7d} {rate:9.2f} {rate * tickets:14.2f} {g:8.1f} {g * 1e9 / peak:8.1%}")
    stock = model._replace(module=ConvNet(filters=(64,), widths=(256, 256), num_outputs=10,
                                          kernel_init=model.module.kernel_init, stock_conv=True))
    base = train_rate(60, 1, baseline_steps, baseline_steps, ds, repeats=1, model=stock)
    out["stock_conv_steps_per_s"] = base
    out["speedup_vs_stock_conv"] = out["tickets_1"]["steps_per_s"] / base
    print(f"the same network with flax.linen.Conv: {base:.3f} steps/s, so ltjax's conv is "
          f"{out['speedup_vs_stock_conv']:.0f}x faster inside the training scan")
    return out


COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


_COMPILE_S = [0.0]
_LISTENING = False


def _on_compile_event(event, duration, **_):
    if event in COMPILE_EVENTS:
        _COMPILE_S[0] += duration


def _evaluation_seconds(cfg, manual_dir) -> float:
    """One in-graph-style evaluation of ``cfg``'s validation and test sets, best of 5."""
    from ltjax.lottery import build_model
    from ltjax.train import EVAL_BATCH, device_data, loss_and_correct

    ds = D.load(cfg.dataset, validation_size=cfg.validation_size, split_seed=cfg.split_seed, manual_dir=manual_dir)
    model, data = build_model(cfg, ds), device_data(ds)
    params = model.init(jax.random.PRNGKey(0))

    @jax.jit
    def evaluate(p):
        out = []
        for x, y in ((data.x_val, data.y_val), (data.x_test, data.y_test)):
            if x.shape[0]:
                b = min(EVAL_BATCH, x.shape[0])
                xs = D.normalize(x.reshape(-1, b, *x.shape[1:]), ds.mean, ds.std)
                out.append(jax.lax.map(lambda a: loss_and_correct(model.apply(p, a[0]), a[1])[0].sum(),
                                       (xs, y.reshape(-1, b))).sum())
        return sum(out)

    jax.block_until_ready(evaluate(params))
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        jax.block_until_ready(evaluate(params))
        best = min(best, time.perf_counter() - t)
    return best


def round_breakdown(preset: str = "lenet_mnist_openlth", manual_dir: str | None = None,
                    iterations: int | None = None) -> dict:
    """Where one full round (1 ticket) of ``preset`` spends its time, in seconds, from one
    ``lottery.run`` in this process with JAX's persistent cache off: loading the (cached,
    decoded) dataset, tracing and compiling (JAX's own compile-time events), writing checkpoints
    (θ0 and the round; timed around the store's writers), and the rest of the round (training
    with its in-graph evaluations). The evaluation share is the time of one evaluation of the
    validation and test sets (the trainer's batches of ``train.EVAL_BATCH``, compiled alone,
    best of 5) times the number of evaluations in the round.
    ``iterations`` shortens the round (a multiple of the preset's ``eval_every``)."""
    import tempfile

    from jax import monitoring

    from ltjax import lottery, presets, store

    global _LISTENING
    if not _LISTENING:  # JAX keeps listeners for the process: register one, once
        monitoring.register_event_duration_secs_listener(_on_compile_event)
        _LISTENING = True
    compile_s = _COMPILE_S
    saved = {"s": 0.0}
    originals = {name: getattr(store, name) for name in ("save_once", "save_round")}

    def timed(fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                saved["s"] += time.perf_counter() - t
        return wrapper

    def one(cfg):
        compile_s[0], saved["s"] = 0.0, 0.0
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            lottery.run(cfg, out, manual_dir=manual_dir, progress=False, log=lambda s: None)
            return time.perf_counter() - t, compile_s[0], saved["s"]

    cfg = presets.get(preset).replace(rounds=1, seeds=1, **({"iterations": iterations} if iterations else {}))
    t = time.perf_counter()
    D.load(cfg.dataset, validation_size=cfg.validation_size, split_seed=cfg.split_seed, manual_dir=manual_dir)
    data_s = time.perf_counter() - t
    try:
        for name, fn in originals.items():
            setattr(store, name, timed(fn))
        total, comp, ckpt = one(cfg)
    finally:
        for name, fn in originals.items():
            setattr(store, name, fn)
    eval_s = _evaluation_seconds(cfg, manual_dir) * (cfg.iterations // cfg.eval_every)
    rest = total - comp - ckpt - data_s
    out = {"preset": preset, "iterations": cfg.iterations, "eval_every": cfg.eval_every, "total_s": total,
           "data_s": data_s, "compile_s": comp, "checkpoint_s": ckpt, "training_s": rest - eval_s,
           "evaluation_s": eval_s}
    rest1 = out["training_s"]
    print(f"\none full round of {preset} ({cfg.iterations} iterations, batch {cfg.batch_size}, 1 ticket, "
          f"eval every {cfg.eval_every}): {total:.1f} s = data {data_s:.1f} + compile {comp:.1f} + training "
          f"{rest1:.1f} + evaluation {eval_s:.1f} + checkpoints {ckpt:.2f}")
    return out


def main(steps: int = 2000, full_round: bool = False, manual_dir: str | None = None, conv: bool = False,
         breakdown: bool = False) -> dict:
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{jax.device_count()}: {jax.devices()[0].device_kind}")
    peak = matmul_peak()
    print(f"measured float32 matmul peak: {peak / 1e9:.1f} GFLOP/s")
    model = models.mlp((300, 100))
    params = model.init(jax.random.PRNGKey(0))
    ds_train_only = _synthetic(n_val=0, n_test=0)
    results = {"peak_gflops": peak / 1e9, "train": []}
    print(f"\n{'batch':>5} {'tickets':>7} {'steps/s':>9} {'ticket-steps/s':>14} {'GFLOP/s':>8} {'of peak':>8}")
    for batch in (60, 128):
        for tickets in (1, 8):
            n = steps if tickets == 1 else max(steps // 4, 100)
            rate = train_rate(batch, tickets, n, n, ds_train_only)
            gflops = rate * tickets * step_flops(model, params, batch) / 1e9
            results["train"].append(dict(batch=batch, tickets=tickets, steps_per_s=rate, gflops=gflops,
                                         fraction_of_peak=gflops * 1e9 / peak))
            print(f"{batch:5d} {tickets:7d} {rate:9.1f} {rate * tickets:14.1f} {gflops:8.1f} {gflops * 1e9 / peak:8.1%}")

    ds_eval = _synthetic()
    with_eval = train_rate(60, 1, steps, 100, ds_eval)
    without = train_rate(60, 1, steps, steps, _synthetic(n_val=0, n_test=0))
    overhead = without / with_eval - 1
    results["eval_overhead"] = overhead
    print(f"\nevaluation (5k val + 10k test every 100 iterations, batch 60, 1 ticket): "
          f"{with_eval:.1f} vs {without:.1f} steps/s without, overhead {overhead:.1%} of training time")

    if conv:
        results["conv2"] = conv_bench(peak)

    if full_round:
        from ltjax import lottery, presets
        import tempfile

        cfg = presets.get("lenet_mnist_iclr2019").replace(rounds=1, seeds=1)
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            lottery.run(cfg, out, manual_dir=manual_dir, progress=False, log=lambda s: None)
            results["full_round_s"] = time.perf_counter() - t
        print(f"one full round of lenet_mnist_iclr2019 (50k iterations, batch 60, 1 ticket, eval every 100, "
              f"incl. data load and compile): {results['full_round_s']:.1f} s")
    if breakdown:
        results["round_breakdown"] = round_breakdown(manual_dir=manual_dir)
    return results
