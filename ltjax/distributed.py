"""Several hosts, one program: the processes of a ``jax.distributed`` job run one study together.

After :func:`initialize`, ``jax.devices()`` lists every process's devices and
:func:`ltjax.devices.ticket_mesh` builds one global mesh over them; every process runs the same
:func:`ltjax.lottery.run` (the same Python calls in the same order, as JAX's multi-controller
model asks), each feeding and computing the tickets on its own devices. What a single process
does with its arrays needs three changes, made here:

* host values become global arrays: :func:`put` gives each process's devices their part of a value
  every process holds (:func:`ltjax.devices.shard_tickets` and ``replicate`` use it);
* arrays read back on the host are gathered from all processes first (:func:`to_host`);
* the run directory, on storage every process sees, is written by one: process 0 writes the JSON
  files, manifests and renames (:func:`is_primary`), orbax checkpoints are saved by all (each
  process writes its own shards), and :func:`barrier` keeps the processes in step around them.

With one process every function here is the plain single-process operation.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import jax
import numpy as np

PyTree = Any
_BARRIERS = itertools.count()
_LOCK = threading.Lock()
BARRIER_TIMEOUT_S = 1800  # a process waits this long for the others (one saves a checkpoint, say)


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join this process to a ``jax.distributed`` job, before anything else uses JAX.

    ``coordinator`` is ``HOST:PORT`` of process 0 (all processes give the same); with no arguments
    JAX finds the job from its environment (TPU pods, SLURM, Open MPI, or ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``). On CPUs the processes exchange data with gloo
    collectives (JAX's ``jax_cpu_collectives_implementation``)."""
    if jax.config.jax_cpu_collectives_implementation in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


def spans_processes() -> bool:
    """Whether several processes run the study together (a ``jax.distributed`` job)."""
    return jax.process_count() > 1


def is_primary() -> bool:
    """Whether this process writes the run directory's files: process 0, or the only process."""
    return not spans_processes() or jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process has reached this point (no-op with one process).
    They must call the same barriers in the same order; the name labels it in a timeout's error."""
    if not spans_processes():
        return
    import orbax.checkpoint as ocp  # the jax.distributed client's barrier, not a device collective

    with _LOCK:
        key = f"ltjax-{next(_BARRIERS)}-{name}"
    ocp.multihost.get_barrier_sync_fn()(key=key, timeout_ms=BARRIER_TIMEOUT_S * 1000)


def put(a, sharding: jax.sharding.Sharding) -> jax.Array:
    """``a`` (the same value on every process: NumPy, or an array on this process's devices) as a
    global array with ``sharding``; each process places only its own devices' part. An array
    already spanning the processes is resharded."""
    if sharding.is_fully_addressable or (isinstance(a, jax.Array) and not a.is_fully_addressable):
        return jax.device_put(a, sharding)
    return jax.device_put(np.asarray(a), sharding)


def to_host(tree: PyTree) -> PyTree:
    """Every array of ``tree`` as a NumPy array on this process, gathered from the processes that
    hold its parts where this one does not hold them all (every process must call it)."""
    def get(a):
        if not isinstance(a, jax.Array) or a.is_fully_addressable:
            return jax.device_get(a)
        if a.is_fully_replicated:
            return np.asarray(a.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(a, tiled=True))

    return jax.tree.map(get, tree)
