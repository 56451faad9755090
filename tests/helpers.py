"""Comparisons for programs that compute the same function in different shapes.

Programs of the same shape (the same per-device arithmetic) are compared bitwise. A vmapped
program and a one-by-one loop, or a sharded and an unsharded one, may sum a matmul or a
reduction in another order: float32 reassociation, about 1 ulp per operation, which training
carries on. Their weights and scores are compared to a tolerance, and the masks pruned from
them with :func:`assert_masks_agree`.
"""


import jax
import numpy as np


def assert_masks_agree(a, b, max_fraction: float = 1e-3, per_layer_counts: bool = True, batched: bool = True) -> None:
    """Masks pruned from scores that agree only to rounding.

    Exact: per ticket, the total number kept (pruning counts are exact whatever the scores),
    and with ``per_layer_counts`` (layerwise pruning) each layer's. Up to rounding: a score
    within rounding of the threshold may land on either side, so each layer may differ at
    ``2 * max(1, round(max_fraction * size))`` positions (a swap changes two). With ~1e-5
    relative rounding and scores ~4e-7 apart in a 266k-weight layer, about one such swap per
    layer is expected; 1e-3 is hundreds of times that, and any difference of method (another
    score, another count, another layer) moves far more. ``batched``: leading ticket axis."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb), (len(la), len(lb))
    totals = [0, 0]
    for x, y in zip(la, lb):
        x, y = np.asarray(x, bool), np.asarray(y, bool)
        assert x.shape == y.shape, (x.shape, y.shape)
        if not batched:
            x, y = x[None], y[None]
        fx, fy = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
        totals[0], totals[1] = totals[0] + fx.sum(1), totals[1] + fy.sum(1)
        if per_layer_counts:
            np.testing.assert_array_equal(fx.sum(1), fy.sum(1))
        allowed = 2 * max(1, round(max_fraction * fx.shape[1]))
        differ = (fx != fy).sum(1)
        assert (differ <= allowed).all(), f"masks differ at {differ.max()} of a layer's {fx.shape[1]} weights"
    np.testing.assert_array_equal(totals[0], totals[1])
