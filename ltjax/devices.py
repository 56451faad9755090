"""Placing a stack of tickets on the devices: the ticket axis is sharded, data replicated.

With T tickets and D local devices the mesh uses ``gcd(T, D)`` devices, so every device
holds the same number of tickets; compiled programs follow the input shardings (GSPMD),
so the same training code runs on one CPU, several GPUs or a TPU slice.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "tickets"


def ticket_mesh(num_tickets: int, devices=None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    n = math.gcd(num_tickets, len(devices))
    return Mesh(np.array(devices[:n]), (AXIS,))


def shard_tickets(tree: Any, mesh: Mesh) -> Any:
    """Put every array of ``tree`` on ``mesh`` split along its leading (ticket) axis."""
    return jax.device_put(tree, NamedSharding(mesh, P(AXIS)))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put every array of ``tree`` on every device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, P()))
