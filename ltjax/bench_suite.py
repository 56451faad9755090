"""``ltjax bench --suite``: ticket-steps per second and device memory against the number of
vmapped tickets, for LeNet-300-100 (batch 60), Conv-2 (batch 60; also with patch convolutions,
``conv2_patches``) and ResNet-20 (batch 128).

For each model and each T in ``tickets``: one program trains T tickets vmapped (ltjax's
trainer: masks, on-device batches, optax SGD with momentum; evaluation off) on synthetic
arrays of the dataset's shape (throughput does not depend on pixel values), timed best of
``repeats`` after a compiling call. The baseline is the same model trained one ticket at a time
(T = 1): T tickets that way take T times as long, so ``speedup`` = ticket-steps/s(T) /
steps/s(1), and ``efficiency`` = speedup / T (1.0: vmapping T tickets is as fast per ticket as
one; the goal on an accelerator is ≥ 0.8 until it saturates). Where PyTorch is importable, a
plain PyTorch loop of the same network, batch and optimizer (its own device: CUDA if
available) is timed in the same process: ``vs_torch`` = ltjax's ticket-steps/s / PyTorch's
steps/s. Float32 arithmetic is compared like for like: on a GPU, JAX's default precision lets
matmuls and convolutions use TF32 tensor cores, so the PyTorch loop is timed with TF32 allowed
too (``torch.backends.cuda.matmul.allow_tf32`` and ``cudnn.allow_tf32``), and again with
PyTorch's own default (TF32 for convolutions only), both recorded. Device memory per program is
XLA's analysis of one vmapped training step (state of the T tickets plus one step's
temporaries). It needs no TensorFlow or TFDS.

``budget_s`` bounds each model's time: once it is spent, larger T are not started (recorded as
skipped), so a run on a lent machine with a fixed time ends with every model measured.
``bench.json`` and ``bench.md`` are rewritten after every measurement, so an interrupted run
keeps what it measured.

    ltjax bench --suite --tickets 1,2,4,8,16,32,64 --out bench/   # writes bench.json and bench.md
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np

from ltjax import data as D
from ltjax import models
from ltjax.bench import train_rate
from ltjax.memory import step_memory_analysis
from ltjax.train import TrainSpec

#: name: (model factory, batch, input shape)
MODELS = {
    "lenet300_100": (lambda: models.mlp((300, 100), init="glorot_normal"), 60, (28, 28, 1)),
    "conv2": (lambda: models.conv2(), 60, (32, 32, 3)),
    # Conv-2 with its convolutions as matmuls over patches (vmapped: batched matmuls)
    "conv2_patches": (lambda: _conv2_patches(), 60, (32, 32, 3)),
    "resnet20": (lambda: models.resnet20(), 128, (32, 32, 3)),
}
def _conv2_patches() -> models.Model:
    m = models.conv2()
    return m._replace(module=m.module.clone(conv_impl="patches"))


SPEC = dict(optimizer="momentum", lr=0.01, momentum=0.9)


def synthetic_dataset(shape, batch: int) -> D.Dataset:
    """Random uint8 images of ``shape`` and labels in 0..9, 8 batches of ``batch`` (training split only)."""
    rng = np.random.default_rng(0)
    n = 8 * batch
    x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    empty = np.zeros((0, *shape), np.uint8), np.zeros(0, np.int32)
    c = shape[-1]
    return D.Dataset("synthetic", x, rng.integers(0, 10, n).astype(np.int32), *empty, *empty,
                     (0.5,) * c, (0.25,) * c, 10)


def program_memory(model: models.Model, spec: TrainSpec, tickets: int) -> int | None:
    """Bytes of one vmapped training step of ``tickets`` tickets (arguments + temporaries), from
    XLA's memory analysis of the compiled step; ``None`` where the backend reports none."""
    a = step_memory_analysis(model, spec, tickets)
    return None if a is None else int(a.argument_size_in_bytes + a.temp_size_in_bytes)


def ltjax_rate(model: models.Model, batch: int, tickets: int, steps: int, repeats: int, ds: D.Dataset) -> float:
    """Steps per second of one program training ``tickets`` tickets vmapped."""
    return train_rate(batch, tickets, steps, steps, ds, repeats=repeats, model=model, optimizer=SPEC)


def _torch_resnet20(nn, c: int):
    """OpenLTH's CIFAR ResNet-20 as :mod:`ltjax.models.resnet` builds it (no conv biases, 1×1
    strided shortcut + BN where the shape changes), in PyTorch's usual form (strided convs)."""

    class Block(nn.Module):
        def __init__(self, i, o, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o)
            self.c2, self.b2 = nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o)
            self.short = (nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o))
                          if stride != 1 or i != o else nn.Identity())

        def forward(self, x):
            y = self.b2(self.c2(nn.functional.relu(self.b1(self.c1(x)))))
            return nn.functional.relu(y + self.short(x))

    layers, i = [nn.Conv2d(c, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    for s, o in enumerate((16, 32, 64)):
        for b in range(3):
            layers.append(Block(i, o, 2 if s > 0 and b == 0 else 1))
            i = o
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def torch_network(name: str, shape):
    """The suite model ``name`` as a PyTorch module for NCHW inputs of ``shape`` (H, W, C)."""
    from torch import nn

    h, w, c = shape
    if name == "lenet300_100":
        return nn.Sequential(nn.Flatten(), nn.Linear(h * w * c, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                             nn.Linear(100, 10))
    if name in ("conv2", "conv2_patches"):
        return nn.Sequential(nn.Conv2d(c, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * (h // 2) * (w // 2), 256), nn.ReLU(),
                             nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    if name == "resnet20":
        return _torch_resnet20(nn, c)
    raise ValueError(f"no PyTorch version of suite model {name!r}; valid: {', '.join(MODELS)}")


def torch_rate(name: str, batch: int, shape, steps: int, repeats: int, tf32: bool = True) -> float | None:
    """Steps per second of a plain PyTorch loop of the same network (None: no PyTorch).
    ``tf32``: allow TF32 in matmuls and convolutions on CUDA (JAX's default precision does);
    ``False`` leaves PyTorch's own defaults."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    h, w, c = shape
    net = torch_network(name, shape).to(dev).train()
    opt = torch.optim.SGD(net.parameters(), lr=SPEC["lr"], momentum=SPEC["momentum"])
    x = torch.randn(batch, c, h, w, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    loss_fn = nn.CrossEntropyLoss()

    def run(n):
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            loss_fn(net(x), y).backward()
            opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()

    try:
        run(5)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            run(steps)
            best = min(best, time.perf_counter() - t)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    return steps / best


def _write(res: dict, out: Path | None) -> None:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(res, indent=1))
        (out / "bench.md").write_text(markdown(res))


def _precision() -> str:
    """What a float32 matmul at JAX's default precision computes here, measured: its largest
    relative error against ``precision=HIGHEST`` on 256×256 normal matrices (float32 rounding
    gives ~1e-6; TF32 or bfloat16 passes give ~1e-3)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (2, 256, 256), jax.numpy.float32)
    fast = a[0] @ a[1]
    exact = jax.numpy.matmul(a[0], a[1], precision=jax.lax.Precision.HIGHEST)
    err = float(jax.numpy.max(jax.numpy.abs(fast - exact)) / jax.numpy.max(jax.numpy.abs(exact)))
    kind = "reduced (TF32 or bfloat16 passes)" if err > 1e-4 else "full float32"
    return f"{jax.config.jax_default_matmul_precision or 'default'}: {kind}, max relative error {err:.1e} vs HIGHEST"


def suite(tickets=(1, 2, 4, 8, 16, 32, 64), names=tuple(MODELS), steps: dict | int | None = None, repeats: int = 2,
          out: str | Path | None = None, torch: bool = True, budget_s: float | None = None, log=print) -> dict:
    """Run the suite; returns (and with ``out`` writes ``bench.json`` and ``bench.md``, after every
    measurement) the results. ``budget_s``: seconds per model after which no larger T is started."""
    for name in names:
        if name not in MODELS:
            raise ValueError(f"unknown suite model {name!r}; valid: {', '.join(MODELS)}")
    if budget_s is not None and budget_s <= 0:
        raise ValueError(f"budget_s must be a positive number of seconds per model or None, got {budget_s}")
    if 1 not in tickets:
        tickets = (1, *tickets)
    default_steps = {"lenet300_100": 2000, "conv2": 200, "conv2_patches": 200, "resnet20": 200} \
        if jax.default_backend() != "cpu" else \
        {"lenet300_100": 200, "conv2": 4, "conv2_patches": 4, "resnet20": 2}
    out = None if out is None else Path(out)
    res = {"device": str(jax.devices()[0]), "backend": jax.default_backend(), "jax": jax.__version__,
           "precision": _precision(), "date": time.strftime("%Y-%m-%d"), "budget_s": budget_s, "models": {}}
    for name in names:
        factory, batch, shape = MODELS[name]
        model = factory()
        n = steps if isinstance(steps, int) else (steps or default_steps)[name]
        ds = synthetic_dataset(shape, batch)
        m = res["models"][name] = {"batch": batch, "steps": n, "torch_steps_per_s": None,
                                   "torch_default_steps_per_s": None, "rows": [], "skipped": []}
        start = time.perf_counter()
        for t in sorted(tickets):
            if budget_s is not None and m["rows"] and time.perf_counter() - start > budget_s:
                m["skipped"].append(t)
                log(f"{name}: {t:3d} tickets  skipped (the model's {budget_s:.0f} s budget is spent)")
                continue
            rate = ltjax_rate(model, batch, t, n, repeats, ds)
            row = {"tickets": t, "steps_per_s": rate, "ticket_steps_per_s": rate * t,
                   "memory_bytes": program_memory(model, TrainSpec(batch_size=batch, **SPEC), t), "vs_torch": None}
            row["speedup"] = row["ticket_steps_per_s"] / m["rows"][0]["steps_per_s"] if m["rows"] else 1.0
            row["efficiency"] = row["speedup"] / t
            m["rows"].append(row)
            log(f"{name}: {t:3d} tickets  {rate * t:10.1f} ticket-steps/s  speedup {row['speedup']:6.2f}  "
                f"efficiency {row['efficiency']:.2f}  ({time.perf_counter() - start:.0f} s)")
            _write(res, out)
        if torch:
            m["torch_steps_per_s"] = torch_rate(name, batch, shape, n, repeats, tf32=True)
            m["torch_default_steps_per_s"] = torch_rate(name, batch, shape, n, repeats, tf32=False)
        for r in m["rows"]:
            r["vs_torch"] = r["ticket_steps_per_s"] / m["torch_steps_per_s"] if m["torch_steps_per_s"] else None
        if m["torch_steps_per_s"]:
            log(f"{name}: PyTorch loop {m['torch_steps_per_s']:.1f} steps/s (TF32 allowed), "
                f"{m['torch_default_steps_per_s']:.1f} (PyTorch's defaults)")
        _write(res, out)
    return res


def summary(m: dict) -> str:
    """One line per model: the largest T still at ≥ 0.8 efficiency, and where ticket-steps/s peak."""
    rows = m["rows"]
    good = [r["tickets"] for r in rows if r["efficiency"] >= 0.8]
    top = max(rows, key=lambda r: r["ticket_steps_per_s"])
    every = len(good) == len(rows)
    return (("efficiency ≥ 0.8 at every measured T" if every else
             f"efficiency ≥ 0.8 up to T = {max(good) if good else '—'}") + "; "
            f"most ticket-steps/s at T = {top['tickets']} ({top['speedup']:.1f}× one ticket)")


def markdown(res: dict) -> str:
    """The suite's results as a Markdown table per model."""
    lines = [f"# ltjax bench --suite: {res['device']} ({res['backend']}), jax {res['jax']}, {res['date']}", "",
             f"float32 precision: {res.get('precision', 'default')}", ""]
    for name, m in res["models"].items():
        tr, td = m["torch_steps_per_s"], m.get("torch_default_steps_per_s")
        torch_text = (f"{tr:.1f} steps/s with TF32 allowed, {td:.1f} with PyTorch's defaults)" if tr and td
                      else f"{tr:.1f} steps/s)" if tr else "not run)")
        lines += [f"## {name}, batch {m['batch']} ({m['steps']} timed steps; PyTorch loop: " + torch_text, "",
                  "| tickets | steps/s | ticket-steps/s | speedup vs 1 ticket | efficiency | vs PyTorch | memory MiB |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in m["rows"]:
            mem = f"{r['memory_bytes'] / 2**20:.1f}" if r["memory_bytes"] else "—"
            vs = f"{r['vs_torch']:.2f}×" if r["vs_torch"] else "—"
            lines.append(f"| {r['tickets']} | {r['steps_per_s']:.2f} | {r['ticket_steps_per_s']:.1f} | "
                         f"{r['speedup']:.2f}× | {r['efficiency']:.2f} | {vs} | {mem} |")
        if m["rows"]:
            lines += ["", summary(m) + "."]
        if m.get("skipped"):
            lines += ["", f"Not run (time budget spent): T = {', '.join(map(str, m['skipped']))}."]
        lines.append("")
    return "\n".join(lines)
