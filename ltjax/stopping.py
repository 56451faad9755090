"""Early stopping decided after the fact, from recorded curves (training never stops early).

All functions take curves with evaluations on the last axis, so they work for one ticket
``(J,)`` or a stack ``(T, J)``.
"""

from __future__ import annotations

import numpy as np


def min_loss_index(loss: np.ndarray) -> np.ndarray:
    """Index of the evaluation with the minimum loss (first one on ties; NaNs never win)."""
    loss = np.asarray(loss, np.float64)
    return np.argmin(np.where(np.isnan(loss), np.inf, loss), axis=-1)


def early_stop(curves: dict[str, np.ndarray], on: str = "val") -> dict[str, np.ndarray]:
    """Early-stop iteration = the iteration of minimum ``{on}_loss`` (Frankle & Carbin 2019).

    Returns per ticket: ``early_stop_iteration``, validation and test accuracy at that
    iteration (``val_acc_at_es``, ``test_acc_at_es``), and ``final_test_acc`` (last evaluation).
    """
    i = min_loss_index(curves[f"{on}_loss"])
    take = lambda a: np.take_along_axis(np.asarray(a), i[..., None], -1)[..., 0]  # noqa: E731
    return {
        "early_stop_iteration": take(curves["step"]).astype(np.int64),
        "val_acc_at_es": take(curves["val_acc"]),
        "test_acc_at_es": take(curves["test_acc"]),
        "final_test_acc": np.asarray(curves["test_acc"])[..., -1],
    }


def convergence_iteration(step: np.ndarray, acc: np.ndarray, *, window: int = 1000, span: int = 1000,
                          tol: float = 0.002) -> np.ndarray:
    """Convergence by the rule of Frankle & Carbin (2018), footnote 5.

    The paper: "the moment at which the 1000-iteration moving average of test accuracy
    changed by less than 0.002 for 1000 consecutive iterations", accuracy measured every
    100 iterations. Made exact here:

    * ``MA_j`` = mean of the evaluations in the last ``window`` iterations up to
      evaluation j (``window / eval_every`` evaluations; defined once that many exist);
    * ticket converges at the first evaluation step ``s_j`` such that every later moving
      average within ``span`` iterations stays within ``tol`` of ``MA_j``:
      ``|MA_i - MA_j| < tol`` for all i with ``s_j < s_i ≤ s_j + span``, and such an i at
      ``s_j + span`` exists (the whole span was observed).

    Args:
      step: evaluation iterations, (J,), evenly spaced.
      acc: accuracies, (..., J).
    Returns:
      Convergence iteration per curve, ``-1`` where the rule is never met.
    """
    step = np.asarray(step)
    acc = np.asarray(acc, np.float64)
    every = int(step[1] - step[0]) if len(step) > 1 else max(int(step[0]), 1)
    w = max(1, round(window / every))
    n = max(1, round(span / every))
    J = acc.shape[-1]
    out = np.full(acc.shape[:-1], -1, np.int64)
    if J < w + n:
        return out
    csum = np.cumsum(acc, axis=-1)
    ma = (csum[..., w - 1:] - np.concatenate([np.zeros(acc.shape[:-1] + (1,)), csum[..., :-w]], -1)) / w
    # ma[..., m] is the moving average ending at evaluation m + w - 1
    steady = np.ones(acc.shape[:-1] + (ma.shape[-1] - n,), bool)
    for i in range(1, n + 1):
        steady &= np.abs(ma[..., i: ma.shape[-1] - n + i] - ma[..., : ma.shape[-1] - n]) < tol
    hit = steady.any(-1)
    first = np.argmax(steady, -1)
    out[hit] = step[first[hit] + w - 1]
    return out
