"""A ticket to carry: one round's mask of one ticket and the weights it starts from in one
.npz that NumPy reads alone, and store.save_tree's paths."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import ltjax
from ltjax import store
from ltjax.config import Config


def _run(tmp_path, **kw):
    """A run directory of two tickets and two rounds, written without training."""
    cfg = Config(name="carry", model="mlp", widths=(6,), seeds=2, seed=5, iterations=40, eval_every=20, rounds=2,
                 **kw)
    d = store.init_run(cfg, tmp_path)
    rng = np.random.default_rng(0)

    def tree():
        return {"fc1": {"kernel": rng.normal(size=(2, 4, 6)).astype(np.float32), "bias": np.zeros((2, 6), np.float32)},
                "out": {"kernel": rng.normal(size=(2, 6, 3)).astype(np.float32), "bias": np.ones((2, 3), np.float32)}}

    store.save_once(d / "theta0", tree())
    if cfg.strategy == "rewind" and cfg.rewind_iteration:
        store.save_once(d / "theta_k", tree())
    for r in range(2):
        mask = {"fc1": {"kernel": rng.random((2, 4, 6)) < 0.5 ** r, "bias": None},
                "out": {"kernel": rng.random((2, 6, 3)) < 0.8 ** r, "bias": None}}
        store.save_round(d, r, mask, tree(), {"density": [1.0, 1.0]})
    return store.load_run(d)


def test_a_ticket_holds_its_mask_and_rewind_weights_and_numpy_reads_it_alone(tmp_path):
    run = _run(tmp_path, strategy="rewind", rewind_iteration=20)
    path = ltjax.save_ticket(str(tmp_path / "t.npz"), str(run.path), 1, 1)
    assert path == tmp_path / "t.npz"
    script = ("import json, sys, numpy as np\n"
              f"f = np.load({str(path)!r})\n"
              "print(json.dumps({'keys': f.files, 'metadata': json.loads(str(f['metadata'])), "
              "'kept': int(f['mask/fc1/kernel'].sum()), 'w': float(f['weights/fc1/kernel'][0, 0]), "
              "'ltjax': 'ltjax' in sys.modules}))")
    seen = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                     check=True).stdout)
    assert not seen["ltjax"]
    assert sorted(seen["keys"]) == ["mask/fc1/kernel", "mask/out/kernel", "metadata", "weights/fc1/bias",
                                    "weights/fc1/kernel", "weights/out/bias", "weights/out/kernel"]
    mask, theta_k = run.rounds[1].mask, run.theta_k
    assert seen["kept"] == int(mask["fc1"]["kernel"][1].sum())
    assert seen["w"] == float(theta_k["fc1"]["kernel"][1, 0, 0])
    meta = seen["metadata"]
    kept = mask["fc1"]["kernel"][1].sum() + mask["out"]["kernel"][1].sum()
    assert meta["density"] == pytest.approx(kept / (24 + 18))
    assert meta["layer_density"]["out"] == pytest.approx(mask["out"]["kernel"][1].mean())
    assert {k: meta[k] for k in ("round", "ticket", "seed", "weights", "weights_iteration", "layers", "config_hash",
                                 "model", "score")} == {
        "round": 1, "ticket": 1, "seed": 6, "weights": "theta_k", "weights_iteration": 20, "layers": ["fc1", "out"],
        "config_hash": run.config.hash(), "model": "mlp", "score": "magnitude"}

    ticket = ltjax.load_ticket(str(path))
    assert ticket.metadata == meta and ticket.mask["fc1"]["bias"] is None
    np.testing.assert_array_equal(ticket.mask["out"]["kernel"], mask["out"]["kernel"][1])
    for layer in ("fc1", "out"):
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(ticket.weights[layer][leaf], theta_k[layer][leaf][1])


def test_a_reset_run_carries_theta0_and_the_last_round_by_default_index(tmp_path):
    run = _run(tmp_path, strategy="reset")
    ticket = ltjax.load_ticket(ltjax.save_ticket(tmp_path / "t.npz", run, -1, 0))
    assert ticket.metadata["weights"] == "theta0" and ticket.metadata["round"] == 1
    np.testing.assert_array_equal(ticket.weights["fc1"]["kernel"], run.theta0["fc1"]["kernel"][0])


def test_bad_rounds_tickets_destinations_and_files_are_refused(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(ValueError, match=r"round=2 is not valid: .* has completed rounds 0..1"):
        ltjax.save_ticket(tmp_path / "t.npz", run, 2, 0)
    with pytest.raises(ValueError, match=r"ticket=2 is not valid: .* has 2 tickets, 0..1"):
        ltjax.save_ticket(tmp_path / "t.npz", run, 0, 2)
    path = ltjax.save_ticket(tmp_path / "t.npz", run, 0, 0)
    with pytest.raises(FileExistsError, match="already exists; choose another path, or pass overwrite=True"):
        ltjax.save_ticket(path, run, 1, 0)
    assert ltjax.load_ticket(ltjax.save_ticket(path, run, 1, 0, overwrite=True)).metadata["round"] == 1
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="is not an ltjax ticket: it has no 'metadata' array"):
        ltjax.load_ticket(tmp_path / "other.npz")


def test_save_tree_takes_a_str_and_refuses_an_existing_destination(tmp_path):
    tree = {"a": np.arange(3.0), "b": {"c": np.ones(2, bool)}}
    store.save_tree(str(tmp_path / "tree"), tree)
    np.testing.assert_array_equal(store.load_tree(str(tmp_path / "tree"))["a"], tree["a"])
    with pytest.raises(FileExistsError, match="tree already exists: save_tree writes a new checkpoint directory"):
        store.save_tree(str(tmp_path / "tree"), tree)
