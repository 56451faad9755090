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


EARLY_STOP_RULES = ("min_loss", "patience")


def patience_index(step: np.ndarray, acc: np.ndarray, *, every: int = 500, patience: int = 4
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Early stopping with patience, as the LTH-vs-SNIP report trains (sec. 5.1).

    The report evaluates on validation every ``every`` iterations and stops once the
    accuracy has not improved for ``patience`` evaluations in a row, keeping the best model.
    Replayed here on recorded curves: only evaluations at multiples of ``every`` count; an
    evaluation improves when its accuracy is strictly greater than the best so far (a NaN
    never improves); training "stops" at the ``patience``-th evaluation in a row without
    improvement, or at the last evaluation if that never happens.

    Args:
      step: evaluation iterations (J,); ``every`` must be a multiple of their spacing.
      acc: accuracies (..., J).
    Returns:
      ``(best, stop)``: indices into the J evaluations of the best model and of the
      evaluation at which training stopped, each shaped like ``acc.shape[:-1]``.
    """
    step = np.asarray(step)
    acc = np.asarray(acc, np.float64)
    if patience < 1 or every < 1:
        raise ValueError(f"patience={patience} and every={every} must be positive integers")
    cand = np.flatnonzero(step % every == 0)
    if len(cand) == 0:
        raise ValueError(f"no evaluation falls on a multiple of every={every} iterations (evaluations at "
                         f"{step[:3].tolist()}...); record curves with an eval_every that divides {every}")
    flat = acc.reshape(-1, acc.shape[-1])
    best = np.empty(len(flat), np.int64)
    stop = np.empty(len(flat), np.int64)
    for t, row in enumerate(flat):
        top, b, wait, s = -np.inf, cand[0], 0, cand[-1]
        for j in cand:
            if row[j] > top:
                top, b, wait = row[j], j, 0
            else:
                wait += 1
                if wait >= patience:
                    s = j
                    break
        best[t], stop[t] = b, s
    return best.reshape(acc.shape[:-1]), stop.reshape(acc.shape[:-1])


def early_stop(curves: dict[str, np.ndarray], on: str = "val", rule: str = "min_loss", *,
               every: int = 500, patience: int = 4) -> dict[str, np.ndarray]:
    """The early-stop iteration and the accuracies of the model kept there.

    Rules:
      * ``min_loss`` (Frankle & Carbin 2019): the iteration of minimum ``{on}_loss``;
      * ``patience`` (the LTH-vs-SNIP report): the best ``{on}_acc`` model under
        :func:`patience_index` (evaluations every ``every`` iterations, ``patience`` of them).

    Returns per ticket: ``early_stop_iteration``, accuracies at that iteration
    (``val_acc_at_es``, ``test_acc_at_es`` and, when the curves have it, ``train_acc_at_es``),
    ``stop_iteration`` (where the rule would have ended training; the last evaluation for
    ``min_loss``) and ``final_test_acc`` (last evaluation).
    """
    step = np.asarray(curves["step"])
    if rule == "min_loss":
        i = min_loss_index(curves[f"{on}_loss"])
        stop = np.full(i.shape, step.shape[-1] - 1)
    elif rule == "patience":
        i, stop = patience_index(step.reshape(-1, step.shape[-1])[0], curves[f"{on}_acc"], every=every,
                                 patience=patience)
    else:
        raise ValueError(f"unknown early-stop rule {rule!r}; valid rules: {', '.join(EARLY_STOP_RULES)}")
    take = lambda a, j=i: np.take_along_axis(np.asarray(a), j[..., None], -1)[..., 0]  # noqa: E731
    full_step = np.broadcast_to(step, np.shape(curves[f"{on}_acc"]))
    out = {
        "early_stop_iteration": take(full_step).astype(np.int64),
        "stop_iteration": take(full_step, stop).astype(np.int64),
        "val_acc_at_es": take(curves["val_acc"]),
        "test_acc_at_es": take(curves["test_acc"]),
        "final_test_acc": np.asarray(curves["test_acc"])[..., -1],
    }
    if "train_acc" in curves:
        out["train_acc_at_es"] = take(curves["train_acc"])
    return out


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
