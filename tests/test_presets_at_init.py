"""The pruning-at-initialization preset (``ltjax run lenet_mnist_prune_at_init``): it is the
recipe of experiments/prune_at_init.py, and run from the command line at tiny size its masks
are θ0 pruned by the score to exactly the preset's densities, beside the Frankle et al. 2021
sanity checks."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from ltjax import at_init, cli, presets, scores
from ltjax import masks as M
from ltjax.store import load_run

PRESET = "lenet_mnist_prune_at_init"
TINY_WEIGHTS = 784 * 100 + 100 * 30 + 30 * 10  # 81,700 prunable weights of the tiny run (widths 100, 30)

# The run directories of docs/results/prune_at_init.md's studies (results.json, "run"): the preset
# with `--set` names the same ones, so its numbers are that page's.
RESULTS_PAGE_RUNS = {
    (): "add6723d8415",  # synflow
    ("score=grasp",): "576e10bf47e7",
    ("pruning.scores=snip",): "e6d4f11103ad",
    ("score=magnitude",): "3ed2220aa294",
    ("mode=random_at_init", "controls=shuffle,reinit", "score=magnitude"): "b078b2fdc36a",
    ("mode=oneshot", "controls=shuffle,reinit", "score=magnitude"): "15b98418bd13",  # the lottery ticket beside them
}


def test_preset_is_the_results_pages_recipe():
    c = presets.get(PRESET)
    assert (c.mode, c.scores, c.scope, c.exclude, c.controls) == (
        "at_init", ("synflow",), "global", (), ("shuffle", "reinit", "invert"))
    assert c.densities == (0.1, 0.01, 0.002) and c.rounds == len(c.densities) + 1
    for sets, h in RESULTS_PAGE_RUNS.items():
        assert c.with_overrides(list(sets)).hash() == h, sets
    for ref in ("Tanaka et al. 2020", "Wang et al. 2020", "Frankle et al. 2021"):
        assert ref in presets.describe(PRESET)


@pytest.mark.skipif(not ((Path.home() / ".cache" / "ltjax" / "mnist.npz").exists()
                         or (Path.home() / "tensorflow_datasets" / "mnist").is_dir()
                         or (Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist").is_dir()),
                    reason="MNIST not available")
def test_tiny_run_prunes_theta0_to_exact_counts(capsys, tmp_path):
    code = cli.main(["run", PRESET, "--seeds", "2", "--rounds", "3", "--iterations", "100", "--set", "eval_every=50",
                     "--set", "widths=100,30", "--out", str(tmp_path), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "invert acc" in out and "shuffle acc" in out and "reinit acc" in out
    (run_dir,) = tmp_path.iterdir()
    _check_run(load_run(run_dir))


def _check_run(run):
    assert len(run.rounds) == 3

    # round r keeps round(d_r · 81,700) weights of the global pool (all three layers), exactly, in every ticket
    expected = {1: 8_170, 2: 817}  # 10% and 1% of 81,700
    dense = jax.tree.map(lambda m: None if m is None else m[0], run.rounds[0].mask, is_leaf=lambda x: x is None)
    assert sum(M.size(dense).values()) == TINY_WEIGHTS
    for r, keep in expected.items():
        rd = run.rounds[r]
        per_ticket = sum(np.asarray(v) for v in jax.vmap(M.count)(rd.mask).values())
        assert per_ticket.tolist() == [keep, keep], r
        np.testing.assert_allclose(rd.metrics["density"], keep / TINY_WEIGHTS)
        nonzero = jax.tree.map(lambda m, p: None if m is None else int(np.count_nonzero(np.asarray(p)[~m])),
                               rd.mask, rd.params, is_leaf=lambda x: x is None)
        assert sum(jax.tree.leaves(nonzero)) == 0, f"round {r}: pruned weights not 0 after training: {nonzero}"
        # the sanity checks keep the ticket's counts: shuffle and reinit per layer, invert the pool's total
        controls = rd.metrics["controls"]
        for name in ("shuffle", "reinit"):
            for layer, n in rd.metrics["remaining"].items():
                np.testing.assert_array_equal(np.asarray(controls[name]["remaining"][layer])[0], np.asarray(n))
        inverted = sum(np.asarray(v)[0] for v in controls["invert"]["remaining"].values())
        assert inverted.tolist() == [keep, keep]

    # the masks are θ0 pruned by SynFlow before any training (not the trained weights): the same
    # masks again from the stored θ0 alone
    from ltjax import data, lottery

    cfg = run.config
    model = lottery.build_model(cfg, data.load(cfg.dataset, validation_size=cfg.validation_size))
    prune = jax.jit(jax.vmap(lambda p, m, k: at_init.prune_at_init(
        "synflow", p, m, keep=k, batch=scores.Batch(None, None, None, model)), in_axes=(0, 0, None)))
    for r, keep in expected.items():
        again = prune(run.theta0, run.rounds[0].mask, np.int32(keep))
        for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(run.rounds[r].mask)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
