"""Reliability: SIGKILL at 20+ moments, damaged checkpoints, diverging tickets, run locks."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import lottery, presets, report, rounds, store
from ltjax.store import CorruptRunError, RunLock, RunLockedError, load_run

pytestmark = pytest.mark.slow

# Small but complete: rewinding (so theta_k is saved), 3 rounds, 2 tickets.
CFG = presets.get("lenet_mnist_iclr2019").replace(
    widths=(64,), iterations=300, eval_every=100, seeds=2, rounds=3,
    strategy="rewind", rewind_iteration=100,
)
_SETUP = """
import sys
from ltjax import lottery, presets
cfg = presets.get("lenet_mnist_iclr2019").replace(widths=(64,), iterations=300, eval_every=100, seeds=2,
                                                  rounds=3, strategy="rewind", rewind_iteration=100)
"""
_SCRIPT = _SETUP + "lottery.run(cfg, sys.argv[1], progress=False, log=lambda s: None)\n"
# A chain of runs, each in its own process, forked from one that has imported ltjax: a Python
# start and the imports once per chain instead of once per run. JAX's runtime starts in each
# child (in lottery.run), never before a fork. Prints each run's fault and exit code (-9: SIGKILL).
_CHAIN = _SETUP + """
import json, os, traceback
def run(fault):
    pid = os.fork()
    if pid == 0:
        os.environ.pop("LTJAX_FAULT", None)
        if fault:
            os.environ["LTJAX_FAULT"] = fault
        try:
            lottery.run(cfg, sys.argv[1], progress=False, log=lambda s: None)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    status = os.waitpid(pid, 0)[1]
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
print(json.dumps([[fault, run(fault)] for fault in [*sys.argv[2:], None]]))
"""


def _quiet(_):
    pass


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _same_run(a, b):
    assert len(a.rounds) == len(b.rounds) == CFG.rounds
    for x, y in zip(_leaves(a.theta0) + _leaves(a.theta_k), _leaves(b.theta0) + _leaves(b.theta_k)):
        np.testing.assert_array_equal(x, y)
    for ra, rb in zip(a.rounds, b.rounds):
        for x, y in zip(_leaves(ra.mask) + _leaves(ra.params), _leaves(rb.mask) + _leaves(rb.params)):
            np.testing.assert_array_equal(x, y)
        ma = {k: v for k, v in ra.metrics.items() if k != "seconds"}
        mb = {k: v for k, v in rb.metrics.items() if k != "seconds"}
        np.testing.assert_equal(ma, mb)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return lottery.run(CFG, tmp_path_factory.mktemp("ref"), progress=False, log=_quiet)


def _run_script(out, fault=None, timeout=300):
    env = {**os.environ}
    env.pop("LTJAX_FAULT", None)
    if fault:
        env["LTJAX_FAULT"] = fault
    return subprocess.run([sys.executable, "-c", _SCRIPT, str(out)], env=env, capture_output=True, timeout=timeout)


# Moments at which a run is killed, in the order a run reaches them (theta_k is trained and
# saved inside round 0).
_ROUND = ("start", "state.writing", "state_saved", "metrics_saved", "committed")
FAULTS = [
    "theta0.writing", "theta0.written", "round0.start", "theta_k.writing", "theta_k.written",
    *[f"round0.{stage}" for stage in _ROUND[1:]],
    "round1.start", "round1.trained", *[f"round1.{stage}" for stage in _ROUND[1:]],
    *[f"round2.{stage}" for stage in _ROUND],
]


def _kill_chain(out, faults):
    """One run killed at each fault in turn: every process resumes what the last one left and is
    killed at the next moment (faults are in the order a run reaches them), the last one finishes."""
    env = {k: v for k, v in os.environ.items() if k != "LTJAX_FAULT"}
    proc = subprocess.run([sys.executable, "-c", _CHAIN, str(out), *faults], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    codes = json.loads(proc.stdout.splitlines()[-1])
    assert codes == [[f, -signal.SIGKILL] for f in faults] + [[None, 0]], (codes, proc.stderr[-2000:])
    return out


def test_sigkill_at_20_moments_then_resume_matches_uninterrupted(tmp_path, reference):
    # Every process but the last is killed at its moment; the next resumes from what it left.
    # A resume that went wrong anywhere would change a later round's mask or the files on
    # disk, which are compared bitwise with an uninterrupted run at the end. Two chains (every
    # other moment) run side by side, so each moment is also reached from a different state.
    assert len(FAULTS) >= 20
    chains = [FAULTS[0::2], FAULTS[1::2]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        outs = list(pool.map(lambda i: _kill_chain(tmp_path / f"chain{i}", chains[i]), range(2)))
    for chain, out in zip(chains, outs):
        (d,) = list(out.iterdir())
        assert not list(d.glob("*.tmp")), chain
        _same_run(reference, load_run(d))


def test_sigkill_during_training_then_resume(tmp_path, reference):
    cfg_heavier = tmp_path / "timed"
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, str(cfg_heavier)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(cfg_heavier.glob("*/round_000")):
        time.sleep(0.02)
    time.sleep(0.5)  # inside round 1 (compile or training)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _run_script(cfg_heavier).returncode == 0
    (d,) = list(cfg_heavier.iterdir())
    _same_run(reference, load_run(d))


# -- damaged checkpoints --------------------------------------------------------------------

def _snapshot(d):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in d.rglob("*") if p.is_file() and p.name != "LOCK"}


@pytest.fixture
def finished(tmp_path, reference):
    """A copy of the reference run to damage."""
    import shutil

    d = tmp_path / "runs" / reference.path.name
    shutil.copytree(reference.path, d)
    return d


def _biggest_file(d):
    return max((p for p in d.rglob("*") if p.is_file() and p.name != store.MANIFEST), key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_round_is_reported_then_repaired(finished, reference, damage):
    victim = _biggest_file(finished / "round_001" / "state")
    data = bytearray(victim.read_bytes())
    if damage == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    else:
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(data)
    before = _snapshot(finished)

    with pytest.raises(CorruptRunError) as e:
        lottery.run(CFG, finished.parent, progress=False, log=_quiet)
    msg = str(e.value)
    assert "round 1" in msg and str(victim) in msg and "--repair" in msg
    assert _snapshot(finished) == before  # refused without touching anything

    logs = []
    lottery.run(CFG, finished.parent, progress=False, repair=True, log=logs.append)
    assert any("round 1 is damaged" in line for line in logs)
    aside = list(finished.glob("round_001.corrupt-*"))
    assert len(aside) == 1 and (aside[0] / "state").exists()  # kept, not deleted
    after = _snapshot(finished)
    untouched = [p for p in before if "round_001" not in str(p)]
    assert all(after[p] == before[p] for p in untouched)  # nothing else rewritten
    _same_run(reference, load_run(finished))
    assert load_run(finished).verify() == {}


def test_damaged_metrics_and_theta0_are_named(finished, reference):
    m = finished / "round_000" / "metrics.json"
    m.write_text(m.read_text().replace('"round": 0', '"round": 7'))
    t0 = _biggest_file(finished / "theta0")
    t0.write_bytes(t0.read_bytes()[:-10])
    problems = load_run(finished).verify()
    assert set(problems) == {"round 0", "theta0"}
    with pytest.raises(CorruptRunError, match="theta0"):
        lottery.run(CFG, finished.parent, progress=False, log=_quiet)
    lottery.run(CFG, finished.parent, progress=False, repair=True, log=_quiet)
    _same_run(reference, load_run(finished))


def test_cli_reports_damage_without_traceback(finished, capsys):
    from ltjax.cli import main

    victim = _biggest_file(finished / "round_002" / "state")
    victim.write_bytes(b"")
    args = ["run", "lenet_mnist_iclr2019", "--out", str(finished.parent), "--no-progress",
            "--seeds", "2", "--rounds", "3", "--iterations", "300",
            "--set", "widths=64", "--set", "eval_every=100", "--set", "strategy=rewind", "--set", "rewind_iteration=100"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ltjax: error:") and "round 2" in err and "Traceback" not in err


# -- diverging tickets ----------------------------------------------------------------------

def test_resume_on_different_data_is_refused(finished, monkeypatch):
    """The run records its data's fingerprint; reopening it on data that differs in one label
    raises naming both fingerprints, and changes nothing in the directory."""
    from ltjax import data as D

    recorded = json.loads((finished / "data.json").read_text())
    assert recorded["dataset"] == "mnist" and len(recorded["fingerprint"]) == 16
    before = _snapshot(finished)
    real = D.load

    def one_label_changed(*a, **kw):
        ds = real(*a, **kw)
        y = ds.y_train.copy()
        y[0] = (y[0] + 1) % 10
        return ds._replace(y_train=y)

    monkeypatch.setattr(D, "load", one_label_changed)
    with pytest.raises(ValueError, match=f"fingerprint {recorded['fingerprint']}.*restore the original data"):
        lottery.run(CFG, finished.parent, progress=False, log=_quiet)
    assert _snapshot(finished) == before
    monkeypatch.setattr(D, "load", real)
    lottery.run(CFG, finished.parent, progress=False, log=_quiet)  # the original data reopens it


def test_fingerprint_by_hand():
    from ltjax import data as D

    a = D.load("synthetic_mnist", validation_size=10, split_seed=1)
    assert D.fingerprint(a) == D.fingerprint(D.load("synthetic_mnist", validation_size=10, split_seed=1))
    assert D.fingerprint(a) != D.fingerprint(D.load("synthetic_mnist", validation_size=11, split_seed=1))
    x = a.x_test.copy()
    x[0, 0, 0, 0] ^= 1
    assert D.fingerprint(a) != D.fingerprint(a._replace(x_test=x))
    assert D.fingerprint(a) != D.fingerprint(a._replace(name="synthetic_fashion_mnist"))
    none = D.load("synthetic_mnist", validation_size=0, split_seed=1)  # an empty split hashes too
    assert len(none.x_val) == 0 and D.fingerprint(none) != D.fingerprint(a)


def test_nan_ticket_does_not_touch_its_neighbours():
    from tests.test_train import DS, _tickets, _trainer
    from ltjax.train import device_data

    params, mask, keys = _tickets(3)
    poisoned = jax.tree.map(lambda x: x.at[1].set(jnp.nan) if x.ndim > 1 else x, params)
    train = _trainer(optimizer="adam", lr=1e-3)
    clean, c_clean = train(params, mask, keys, device_data(DS), 0, 40)
    bad, c_bad = train(poisoned, mask, keys, device_data(DS), 0, 40)
    assert np.isnan(np.asarray(c_bad.train_loss[1])).all()
    for a, b in zip(jax.tree.leaves(clean), jax.tree.leaves(bad)):
        np.testing.assert_array_equal(np.asarray(a)[[0, 2]], np.asarray(b)[[0, 2]])


def test_diverged_ticket_is_marked_frozen_and_never_prunes(tmp_path):
    cfg = CFG.replace(strategy="reset", rewind_iteration=0)
    clean = lottery.run(cfg, tmp_path / "clean", progress=False, log=_quiet)

    d = store.init_run(cfg, tmp_path / "bad")
    theta0 = jax.tree.map(np.array, clean.theta0)
    theta0["fc1"]["kernel"][1, 0, 0] = np.nan  # ticket 1 starts broken
    store.save_once(d / "theta0", theta0)
    logs = []
    bad = lottery.run(cfg, tmp_path / "bad", progress=False, log=logs.append)

    for r, rd in enumerate(bad.rounds):
        assert rd.metrics["diverged"].tolist() == [False, True]
        # ticket 0 is unaffected, bitwise
        for a, b in zip(_leaves(rd.params), _leaves(clean.rounds[r].params)):
            np.testing.assert_array_equal(a[0], b[0])
        # ticket 1's mask stays dense: its NaN scores never pruned anything
        assert all(m[1].all() for m in _leaves(rd.mask))
    assert bad.rounds[0].metrics["diverged_iteration"].tolist() == [-1, 100]
    assert any("DIVERGED 1/2" in line for line in logs)
    table = report.round_table(bad)
    assert "diverged" in table.splitlines()[2] and "1/2" in table


def test_nan_scores_never_prune():
    mask = {"w": {"kernel": jnp.ones((2, 3, 4), bool)}}
    params = {"w": {"kernel": jnp.arange(24.0).reshape(2, 3, 4).at[1, 0, 0].set(jnp.inf)}}
    cfg = CFG.replace(scope="global", layer_rates=(), exclude=())
    new = rounds.next_mask(cfg, params, mask, 1)
    assert int(new["w"]["kernel"][0].sum()) == 12 - 2 and bool(new["w"]["kernel"][1].all())


# -- concurrency ----------------------------------------------------------------------------

_HOLD = """
import sys, time
from pathlib import Path
from ltjax.store import RunLock
with RunLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(d):
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(d)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_process_is_refused_naming_the_holder(tmp_path):
    d = store.init_run(CFG, tmp_path)
    holder = _holder(d)
    try:
        with pytest.raises(RunLockedError) as e:
            lottery.run(CFG, tmp_path, progress=False, log=_quiet)
        assert f"pid {holder.pid}" in str(e.value) and str(d) in str(e.value)
        assert not list(d.glob("round_*")) and not (d / "theta0").exists()
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_killed_process_is_recovered(tmp_path):
    d = store.init_run(CFG, tmp_path)
    holder = _holder(d)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert f"pid {holder.pid}" in (d / "LOCK").read_text()  # the dead holder's record is still there
    with RunLock(d):
        assert f"pid {os.getpid()}" in (d / "LOCK").read_text()
