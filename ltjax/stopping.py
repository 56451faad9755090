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
