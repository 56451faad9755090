"""Score functions: a float pytree shaped like the mask (``None`` on unprunable leaves).

Higher score = more important; :func:`ltjax.pruning.prune` removes the lowest-scoring
*surviving* weights, so scores of already pruned weights never matter.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

PyTree = Any
ScoreFn = Callable[[PyTree, PyTree], PyTree]


def magnitude(params: PyTree, mask: PyTree) -> PyTree:
    """Magnitude score ``s = |w|`` for every prunable weight (Han et al. 2015; Frankle & Carbin 2018).

    Args:
      params: parameter pytree of one ticket.
      mask: mask pytree; only its ``None`` pattern is used.
    Returns:
      ``|w|`` on prunable leaves, ``None`` elsewhere.
    """
    return jax.tree.map(
        lambda m, p: None if m is None else jnp.abs(p), mask, params, is_leaf=lambda x: x is None
    )


SCORES: dict[str, ScoreFn] = {"magnitude": magnitude}


def get(name: str) -> ScoreFn:
    """Score function by name; an unknown name raises with the valid choices."""
    try:
        return SCORES[name]
    except KeyError:
        raise ValueError(f"unknown score {name!r}; valid scores: {', '.join(sorted(SCORES))}") from None
