"""Mid-round checkpoints (ltjax.midround, Config.checkpoint_every): a run killed inside a round
resumes from its last saved segment and ends bitwise where an uninterrupted run ends; SIGTERM stops
a run where its state is saved; the setting is validated and hashed only when set."""

import os
import signal
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from ltjax import lottery, midround, presets
from ltjax.config import ConfigError
from ltjax.store import load_run

# θk (iterations 0-200) and each round (200-400) train in two segments, a save between them
CFG = presets.get("lenet_mnist_iclr2019").replace(
    widths=(64,), iterations=400, eval_every=100, seeds=2, rounds=2, strategy="rewind", rewind_iteration=200,
    checkpoint_every=100)
_SCRIPT = """
import sys
from ltjax import lottery, presets
cfg = presets.get("lenet_mnist_iclr2019").replace(widths=(64,), iterations=400, eval_every=100, seeds=2, rounds=2,
                                                  strategy="rewind", rewind_iteration=200, checkpoint_every=100)
lottery.run(cfg, sys.argv[1], progress=False, log=print)
"""


def _quiet(_):
    pass


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_checkpoint_every_is_checked_and_hashed_only_when_set():
    with pytest.raises(ConfigError, match=r"checkpoint_every=150.*multiple of eval_every=100"):
        CFG.replace(checkpoint_every=150).validate()
    with pytest.raises(ConfigError, match="checkpoint_every"):
        CFG.replace(checkpoint_every=-100).validate()
    plain = CFG.replace(checkpoint_every=0)
    assert plain.hash() == presets.get("lenet_mnist_iclr2019").replace(
        widths=(64,), iterations=400, eval_every=100, seeds=2, rounds=2, strategy="rewind",
        rewind_iteration=200).hash() != CFG.hash()
    assert CFG.replace(**{"training.checkpoint_every": 200}).checkpoint_every == 200


def test_killed_inside_a_round_resumes_from_its_checkpoint_and_ends_bitwise_as_uninterrupted(tmp_path):
    """SIGKILL right after θk's state at iteration 100 is saved, then (in the next process) right
    after round 1's state at iteration 300 is saved, each with the next segment already training;
    each rerun resumes at the saved iteration, and the finished run's every array and metric equal
    an uninterrupted run's. The mid-round state is gone once the run is done. Without checkpoints
    the same study computes the same masks (the segments continue the optimizer exactly)."""
    ref = lottery.run(CFG, tmp_path / "ref", progress=False, log=_quiet)
    env = {k: v for k, v in os.environ.items() if k != "LTJAX_FAULT"}
    outs = []
    for fault in ("round0.at100", "round1.at300", None):
        proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "run")], capture_output=True, text=True,
                              env={**env, "LTJAX_FAULT": fault} if fault else env, timeout=600)
        assert proc.returncode == (-signal.SIGKILL if fault else 0), proc.stderr[-2000:]
        outs.append(proc.stdout)
        (d,) = list((tmp_path / "run").iterdir())
        assert (d / "partial").exists() == bool(fault)
    assert "round 0: resuming at iteration 100 from its mid-round checkpoint" in outs[1]
    assert "round 1: resuming at iteration 300 from its mid-round checkpoint" in outs[2]
    run = load_run(d)
    for ra, rb in zip(ref.rounds, run.rounds, strict=True):
        for x, y in zip(_leaves((ra.mask, ra.params)), _leaves((rb.mask, rb.params)), strict=True):
            np.testing.assert_array_equal(x, y)
        ma = {k: v for k, v in ra.metrics.items() if k != "seconds"}
        mb = {k: v for k, v in rb.metrics.items() if k != "seconds"}
        np.testing.assert_equal(ma, mb)
    whole = lottery.run(CFG.replace(checkpoint_every=0), tmp_path / "whole", progress=False, log=_quiet)
    for ra, rb in zip(ref.rounds, whole.rounds, strict=True):
        for x, y in zip(_leaves(ra.mask), _leaves(rb.mask), strict=True):
            np.testing.assert_array_equal(x, y)
        # Adam's bias correction fuses differently in programs of other lengths: float32 rounding
        np.testing.assert_allclose(ra.metrics["curves"]["test_acc"], rb.metrics["curves"]["test_acc"], atol=2e-3)


def test_sigterm_stops_where_the_state_is_saved_and_the_rerun_continues(tmp_path, monkeypatch):
    """A SIGTERM seen during the first segment (of θk's training) stops the run once that
    segment's state is saved (Preempted, naming the iteration); running again finishes it, equal to an uninterrupted
    run. The handler is the process's own again afterwards."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be set from the main thread")
    cfg = CFG.replace(rounds=1)
    before = signal.getsignal(signal.SIGTERM)
    real = midround.Watch.__enter__

    def enter_and_signal(self):
        out = real(self)
        os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler's preemption notice, once the watch is on
        return out

    monkeypatch.setattr(midround.Watch, "__enter__", enter_and_signal)
    with pytest.raises(midround.Preempted, match=r"SIGTERM at iteration 100 of round 0"):
        lottery.run(cfg, tmp_path / "run", progress=False, log=_quiet)
    assert signal.getsignal(signal.SIGTERM) is before
    monkeypatch.setattr(midround.Watch, "__enter__", real)
    (d,) = list((tmp_path / "run").iterdir())
    assert (d / "partial").exists()
    run = lottery.run(cfg, tmp_path / "run", progress=False, log=_quiet)
    ref = lottery.run(cfg, tmp_path / "ref", progress=False, log=_quiet)
    for x, y in zip(_leaves((run.rounds[0].mask, run.rounds[0].params)),
                    _leaves((ref.rounds[0].mask, ref.rounds[0].params)), strict=True):
        np.testing.assert_array_equal(x, y)
