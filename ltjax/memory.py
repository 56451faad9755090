"""Device memory of a ticket's training step, from XLA's analysis of the compiled step, and the
number of devices a ticket's minibatch must be split over to fit (``devices_per_ticket="auto"``).

Compiled, never run: the numbers are XLA's plan for the step (``memory_analysis()``), and a
device's limit is its ``memory_stats()["bytes_limit"]`` (a CPU reports none). See
``docs/scale.md`` for what they say about ResNet-50 on ImageNet.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ltjax import masks as M
from ltjax import models
from ltjax.train import TrainSpec, loss_and_correct, make_optimizer


def step_memory_analysis(model: models.Model, spec: TrainSpec, tickets: int | None = None):
    """XLA's memory analysis of one compiled training step (minibatch of ``spec.batch_size``,
    forward, backward, masked optimizer update) of one ticket, or of ``tickets`` vmapped;
    ``None`` where the backend reports none."""
    opt = make_optimizer(spec)
    x = jnp.zeros((spec.batch_size, *model.input_shape), jnp.float32)
    y = jnp.zeros(spec.batch_size, jnp.int32)

    def init(key):
        params = model.init(key)
        return params, M.make_mask(params, model.is_prunable), opt.init(params)

    def step(params, mask, opt_state):
        def loss(p):
            logits, new = model.apply_train(M.apply_mask(p, mask), x)
            return jnp.mean(loss_and_correct(logits, y)[0]), new

        g, new = jax.grad(loss, has_aux=True)(params)
        updates, opt_state = opt.update(M.apply_mask(g, mask), opt_state, params)
        return M.apply_mask(jax.tree.map(jnp.add, new, updates), mask), opt_state

    if tickets is None:
        args, fn = init(jax.random.PRNGKey(0)), step
    else:
        args, fn = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(0), tickets)), jax.vmap(step)
    return jax.jit(fn, donate_argnums=(0, 2)).lower(*args).compile().memory_analysis()


def ticket_memory(model: models.Model, spec: TrainSpec) -> dict[str, int | None]:
    """Device memory of one ticket's training step, from XLA's analysis of the compiled step
    (one minibatch of ``spec.batch_size``, forward, backward, masked optimizer update).

    Returns bytes: ``state`` (what a ticket keeps for the whole program: weights with any
    batch-norm statistics, mask, optimizer state), ``temporaries`` (activations, gradients and
    workspace of one step, reused across steps) and ``total``; ``None`` values where the
    backend reports no analysis. A program vmapping k tickets at a time on a device needs about
    ``tickets_per_device · state + k · temporaries`` plus the dataset (replicated); choose
    ``ticket_chunk`` so that fits (see ``docs/scale.md``)."""
    analysis = step_memory_analysis(model, spec)
    if analysis is None:
        return {"state": None, "temporaries": None, "total": None}
    state = int(analysis.argument_size_in_bytes)
    temp = int(analysis.temp_size_in_bytes)
    return {"state": state, "temporaries": temp, "total": state + temp}


def device_memory(device=None) -> int | None:
    """Bytes a device lets a program use (``memory_stats()["bytes_limit"]``; None on a CPU,
    which reports none)."""
    stats = (device or jax.devices()[0]).memory_stats() or {}
    return stats.get("bytes_limit")


def choose_devices_per_ticket(model: models.Model, spec: TrainSpec, devices: int, memory: int | None = None,
                              headroom: float = 0.8, extra: int = 0) -> int:
    """The fewest devices ``k`` over which one ticket's minibatch must be split (``devices_per_ticket``)
    for its training step to fit ``headroom`` of a device's ``memory`` (default: the device's own
    limit, :func:`device_memory`): ``k`` divides both ``devices`` and the batch. ``extra``: bytes each
    device needs besides (the replicated dataset of the in-memory path).

    A device of a ``k``-row holds the ticket's whole state (weights, mask, optimizer state: each
    data device keeps a copy) and the temporaries of ``batch / k`` examples: each candidate, from
    ``k = 1`` up, is read from XLA's analysis of the step compiled at that batch (compiled, not
    run) until one fits. Returns 1 where the backend reports no memory (a CPU) and raises when
    even ``k = devices`` does not fit, naming the numbers."""
    memory = device_memory() if memory is None else memory
    if memory is None:
        return 1
    B = spec.batch_size
    need = 0
    for k in (k for k in range(1, devices + 1) if devices % k == 0 and B % k == 0):
        size = ticket_memory(model, spec._replace(batch_size=B // k))
        if size["total"] is None:
            return 1
        need = size["total"] + extra
        if need <= headroom * memory:
            return k
    raise ValueError(f"one ticket needs about {need / 2**30:.2f} GiB per device even split over all {devices} "
                     f"devices (batch {B}), more than {headroom:.0%} of the {memory / 2**30:.1f} GiB a device has: "
                     f"use more devices, a smaller batch_size, or stream the data")
