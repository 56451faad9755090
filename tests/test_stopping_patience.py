"""The LTH-vs-SNIP report's early stopping (validation every 500 iterations, patience 4,
keep the best model), replayed on recorded curves."""

import numpy as np
import pytest

from ltjax import stopping


def test_patience_by_hand():
    step = np.arange(100, 6100, 100)  # evaluations every 100 iterations: 100 … 6000
    acc = np.zeros(len(step))
    # only multiples of 500 count: 500, 1000, …; improvements at 500, 1000, 1500, then none
    at = {500: 0.5, 1000: 0.7, 1500: 0.8, 2000: 0.8, 2500: 0.79, 3000: 0.8, 3500: 0.75, 4000: 0.99}
    for s, a in at.items():
        acc[step == s] = a
    acc[step == 1200] = 0.95  # between the considered evaluations: ignored
    best, stop = stopping.patience_index(step, acc, every=500, patience=4)
    assert step[best] == 1500  # ties (2000, 3000) do not improve
    assert step[stop] == 3500  # 2000, 2500, 3000, 3500: four without improvement
    # with patience 5 the 4000 evaluation is reached and wins
    best, stop = stopping.patience_index(step, acc, every=500, patience=5)
    assert step[best] == 4000


def test_patience_never_triggered_keeps_the_best_and_stops_at_the_end():
    step = np.arange(500, 3500, 500)
    acc = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.9, np.nan, 0.1, 0.2, 0.95, 0.3]])
    best, stop = stopping.patience_index(step, acc, every=500, patience=4)
    np.testing.assert_array_equal(step[best], [3000, 2500])
    np.testing.assert_array_equal(step[stop], [3000, 3000])


def test_early_stop_patience_rule_reports_the_best_models_accuracies():
    step = np.arange(500, 5500, 500)
    val = np.array([0.5, 0.6, 0.55, 0.58, 0.59, 0.57, 0.9, 0.1, 0.1, 0.1])
    curves = {"step": step, "val_acc": val, "val_loss": -val, "test_acc": val / 2, "train_acc": val / 3}
    es = stopping.early_stop(curves, "val", "patience", every=500, patience=4)
    assert es["early_stop_iteration"] == 1000 and es["stop_iteration"] == 3000
    assert es["test_acc_at_es"] == pytest.approx(0.3) and es["train_acc_at_es"] == pytest.approx(0.2)
    assert es["final_test_acc"] == pytest.approx(0.05)
    mn = stopping.early_stop(curves, "val", "min_loss")
    assert mn["early_stop_iteration"] == 3500 and mn["stop_iteration"] == 5000


def test_patience_errors_are_clear():
    with pytest.raises(ValueError, match="every=500"):
        stopping.patience_index(np.array([300, 600]), np.zeros(2), every=500)
    with pytest.raises(ValueError, match="unknown early-stop rule 'best'"):
        stopping.early_stop({"step": np.arange(2), "val_acc": np.zeros(2), "val_loss": np.zeros(2),
                             "test_acc": np.zeros(2)}, "val", "best")
