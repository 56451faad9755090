"""Kernel initializers used by the papers (biases are always 0).

* ``trunc_normal``: N(0, std²) with values beyond 2·std redrawn (Frankle & Carbin 2018,
  std 0.1). Equivalent to sampling the normal truncated to [-2·std, 2·std].
* ``glorot_normal``: N(0, 2 / (fan_in + fan_out)), *not* truncated, as PyTorch's
  ``xavier_normal_`` used by the ICLR 2019 paper and the LTH-vs-SNIP report. (JAX's own
  ``glorot_normal`` is truncated; this is not.)
* ``kaiming_normal``: N(0, 2 / fan_in), not truncated, as PyTorch's ``kaiming_normal_``
  (fan_in, ReLU gain) used by OpenLTH.
"""

from __future__ import annotations

from typing import Callable

from jax.nn import initializers as jinit

INITIALIZERS = ("trunc_normal", "glorot_normal", "kaiming_normal")


def get(name: str, *, std: float = 0.1) -> Callable:
    """Kernel initializer by name; ``std`` is used only by ``trunc_normal``."""
    if name == "trunc_normal":
        # jax's truncated_normal(stddev) draws from N(0,1) cut at ±2, times stddev.
        return jinit.truncated_normal(stddev=std)
    if name == "glorot_normal":
        return jinit.variance_scaling(1.0, "fan_avg", "normal")
    if name == "kaiming_normal":
        return jinit.variance_scaling(2.0, "fan_in", "normal")
    raise ValueError(f"unknown initializer {name!r}; valid initializers: {', '.join(INITIALIZERS)}")
