"""``ltjax bench --suite``: ticket-steps per second and device memory against the number of
vmapped tickets, for LeNet-300-100 (batch 60), Conv-2 (batch 60) and ResNet-20 (batch 128).

For each model and each T in ``tickets``: one program trains T tickets vmapped (ltjax's
trainer: masks, on-device batches, optax SGD with momentum; evaluation off) on synthetic
arrays of the dataset's shape (throughput does not depend on pixel values), timed best of
``repeats`` after a compiling call. The baseline is the same model trained one ticket at a time
(T = 1): T tickets that way take T times as long, so ``speedup`` = ticket-steps/s(T) /
steps/s(1), and ``efficiency`` = speedup / T (1.0: vmapping T tickets is as fast per ticket as
one; the goal on an accelerator is ≥ 0.8 until it saturates). Where PyTorch is importable, a
plain PyTorch loop of the same network, batch and optimizer (its own device: CUDA if
available) is timed in the same process: ``vs_torch`` = ltjax's ticket-steps/s / PyTorch's
steps/s. Device memory per program is XLA's analysis of one vmapped training step (state of
the T tickets plus one step's temporaries). It needs no TensorFlow or TFDS.

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
from ltjax.bench import step_memory_analysis, train_rate
from ltjax.train import TrainSpec

#: name: (model factory, batch, input shape)
MODELS = {
    "lenet300_100": (lambda: models.mlp((300, 100), init="glorot_normal"), 60, (28, 28, 1)),
    "conv2": (lambda: models.conv2(), 60, (32, 32, 3)),
    "resnet20": (lambda: models.resnet20(), 128, (32, 32, 3)),
}
SPEC = dict(optimizer="momentum", lr=0.01, momentum=0.9)


def _dataset(shape, batch: int) -> D.Dataset:
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


def torch_rate(name: str, batch: int, shape, steps: int, repeats: int) -> float | None:
    """Steps per second of a plain PyTorch loop of the same network (None: no PyTorch, or no
    PyTorch version of this network here)."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    h, w, c = shape
    if name == "lenet300_100":
        net = nn.Sequential(nn.Flatten(), nn.Linear(h * w * c, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                            nn.Linear(100, 10))
    elif name == "conv2":
        net = nn.Sequential(nn.Conv2d(c, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * (h // 2) * (w // 2), 256), nn.ReLU(),
                            nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    else:
        return None
    net = net.to(dev)
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

    run(3)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        run(steps)
        best = min(best, time.perf_counter() - t)
    return steps / best


def suite(tickets=(1, 2, 4, 8, 16, 32, 64), names=tuple(MODELS), steps: dict | int | None = None, repeats: int = 2,
          out: str | Path | None = None, torch: bool = True, log=print) -> dict:
    """Run the suite; returns (and with ``out`` writes ``bench.json`` and ``bench.md``) the results."""
    if 1 not in tickets:
        tickets = (1, *tickets)
    default_steps = {"lenet300_100": 500, "conv2": 50, "resnet20": 50} if jax.default_backend() != "cpu" else \
        {"lenet300_100": 200, "conv2": 4, "resnet20": 2}
    res = {"device": str(jax.devices()[0]), "backend": jax.default_backend(), "jax": jax.__version__,
           "date": time.strftime("%Y-%m-%d"), "models": {}}
    for name in names:
        if name not in MODELS:
            raise ValueError(f"unknown suite model {name!r}; valid: {', '.join(MODELS)}")
        factory, batch, shape = MODELS[name]
        model = factory()
        n = steps if isinstance(steps, int) else (steps or default_steps)[name]
        ds = _dataset(shape, batch)
        rows = []
        for t in sorted(tickets):
            rate = ltjax_rate(model, batch, t, n, repeats, ds)
            rows.append({"tickets": t, "steps_per_s": rate, "ticket_steps_per_s": rate * t,
                         "memory_bytes": program_memory(model, TrainSpec(batch_size=batch, **SPEC), t)})
            base = rows[0]["steps_per_s"]
            rows[-1]["speedup"] = rows[-1]["ticket_steps_per_s"] / base
            rows[-1]["efficiency"] = rows[-1]["speedup"] / t
            log(f"{name}: {t:3d} tickets  {rate * t:10.1f} ticket-steps/s  speedup {rows[-1]['speedup']:6.2f}  "
                f"efficiency {rows[-1]['efficiency']:.2f}")
        tr = torch_rate(name, batch, shape, n, repeats) if torch else None
        for r in rows:
            r["vs_torch"] = r["ticket_steps_per_s"] / tr if tr else None
        res["models"][name] = {"batch": batch, "steps": n, "torch_steps_per_s": tr, "rows": rows}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(res, indent=1))
        (out / "bench.md").write_text(markdown(res))
    return res


def markdown(res: dict) -> str:
    """The suite's results as a Markdown table per model."""
    lines = [f"# ltjax bench --suite: {res['device']} ({res['backend']}), jax {res['jax']}, {res['date']}", ""]
    for name, m in res["models"].items():
        tr = m["torch_steps_per_s"]
        lines += [f"## {name}, batch {m['batch']} ({m['steps']} timed steps; PyTorch loop: "
                  + (f"{tr:.1f} steps/s)" if tr else "not run)"), "",
                  "| tickets | steps/s | ticket-steps/s | speedup vs 1 ticket | efficiency | vs PyTorch | memory MiB |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in m["rows"]:
            mem = f"{r['memory_bytes'] / 2**20:.1f}" if r["memory_bytes"] else "—"
            vs = f"{r['vs_torch']:.2f}×" if r["vs_torch"] else "—"
            lines.append(f"| {r['tickets']} | {r['steps_per_s']:.2f} | {r['ticket_steps_per_s']:.1f} | "
                         f"{r['speedup']:.2f}× | {r['efficiency']:.2f} | {vs} | {mem} |")
        lines.append("")
    return "\n".join(lines)
