"""Placing a stack of tickets on the devices: the ticket axis is sharded, data replicated.

With T tickets and D devices (every process's, see :mod:`ltjax.distributed`) the mesh uses
``min(T, D)`` devices. A stack whose ticket count the mesh divides is split along the ticket
axis, so each device holds T / D tickets. A count it does not divide (15 tickets on 8
devices) cannot be split evenly, so between programs such a stack is replicated, and the
training program (``make_trainer`` with ``mesh=``) pads it inside the compiled program to
the next multiple with copies of the last ticket, trains the padded stack sharded (2 tickets
per device for 15 on 8) and drops the copies. Compiled programs follow the input shardings
(GSPMD), so the same training code runs on one CPU, several GPUs or a TPU slice.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ltjax import distributed

AXIS = "tickets"
DATA = "data"


def ticket_mesh(num_tickets: int, devices=None, data: int = 1) -> Mesh:
    """A mesh over ``devices``, by default every device of the program: this process's, or after
    :func:`ltjax.distributed.initialize` every process's (one global mesh; see ``docs/scale.md``).

    ``data=1``: a 1-D ``tickets`` mesh over the first ``min(num_tickets, len(devices))`` devices.
    ``data=k > 1``: a 2-D ``tickets × data`` mesh of ``min(num_tickets, len(devices) // k) × k``
    devices: each ticket's minibatch is split over the ``k`` devices of its ``data`` row (the
    gradient, and batch-norm statistics, reduced over the whole batch), tickets over the rows."""
    devices = list(devices if devices is not None else jax.devices())
    if isinstance(data, bool) or not isinstance(data, int) or data < 1 or len(devices) % data:
        divisors = ", ".join(str(k) for k in range(1, len(devices) + 1) if len(devices) % k == 0)
        raise ValueError(f"data={data!r} is not valid: the devices per ticket, a positive integer dividing the "
                         f"{len(devices)} devices (e.g. {divisors})")
    if data == 1:
        return Mesh(np.array(devices[:max(1, min(num_tickets, len(devices)))]), (AXIS,))
    rows = max(1, min(num_tickets, len(devices) // data))
    return Mesh(np.array(devices[:rows * data]).reshape(rows, data), (AXIS, DATA))


def ticket_devices(mesh: Mesh) -> int:
    """How many ways ``mesh`` splits the ticket axis."""
    return mesh.shape[AXIS]


def data_devices(mesh: Mesh | None) -> int:
    """How many devices share one ticket's minibatch (1 without a ``data`` axis)."""
    return 1 if mesh is None or DATA not in mesh.axis_names else mesh.shape[DATA]


def shard_tickets(tree: Any, mesh: Mesh) -> Any:
    """Put every array of ``tree`` on ``mesh``: split along its leading (ticket) axis where the
    mesh divides it, replicated where it does not (see the module docstring)."""
    return jax.tree.map(lambda a: distributed.put(a, ticket_sharding(np.shape(a), mesh)), tree)


def ticket_sharding(shape: tuple[int, ...], mesh: Mesh) -> NamedSharding:
    """Where :func:`shard_tickets` puts an array of ``shape``: split along the ticket axis if the
    mesh divides it, else replicated."""
    return NamedSharding(mesh, P(AXIS) if len(shape) and shape[0] % ticket_devices(mesh) == 0 else P())


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put every array of ``tree`` on every device of ``mesh``."""
    return jax.tree.map(lambda a: distributed.put(a, NamedSharding(mesh, P())), tree)


def padded_count(num_tickets: int, mesh: Mesh) -> int:
    """The smallest multiple of the mesh's ticket-axis size that holds ``num_tickets``."""
    n = ticket_devices(mesh)
    return -(-num_tickets // n) * n


def pad_tickets(tree: Any, count: int) -> Any:
    """Inside a traced program: extend every leading axis to ``count`` with copies of the last
    ticket (real weights, so padding never produces NaNs that a reduction could see)."""
    def pad(a):
        extra = count - a.shape[0]
        return a if extra == 0 else jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)])

    return jax.tree.map(pad, tree)


def constrain_tickets(tree: Any, mesh: Mesh) -> Any:
    """Inside a traced program: ask for ``tree`` split along the ticket axis over ``mesh``."""
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, P(AXIS)))
