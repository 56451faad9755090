"""Several hosts, one program, for real: two processes on the loopback address, each with two
forced host devices and gloo collectives, run one study over a global mesh of four devices, and
a single process with four devices runs the same study; their masks and weights agree bitwise.
The two-process run is killed mid-round and resumed from the checkpoints the two processes
wrote together (θ0 and the rounds sharded, the mid-round state), as a preempted job would be."""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ltjax.store import load_run

pytestmark = pytest.mark.slow

_HEAD = """
import faulthandler, signal, sys
faulthandler.register(signal.SIGUSR1)  # the test asks a stuck process where it is
"""
# the study from Python: lottery.run as in one process, after ltjax.distributed.initialize
_STUDY = _HEAD + """
process_id, processes, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
from ltjax import distributed
if processes > 1:
    distributed.initialize(f"127.0.0.1:{port}", processes, process_id)
import jax
from ltjax import lottery, presets
assert jax.device_count() == 4 and jax.local_device_count() == 4 // processes, jax.devices()
cfg = presets.get("lenet_mnist_openlth").replace(widths=(64,), iterations=100, eval_every=50, seeds=4, rounds=3,
                                                 checkpoint_every=50)
lottery.run(cfg, out, progress=False, log=print)
"""
# each process its own block of seeds on its own devices, in its own run directory: no jax.distributed
_BLOCKS = _HEAD + """
process_id, out = int(sys.argv[1]), sys.argv[4]
from ltjax import lottery, presets
cfg = presets.get("lenet_mnist_openlth").replace(widths=(64,), iterations=100, eval_every=50, seeds=2, rounds=3,
                                                 checkpoint_every=50)
lottery.run(cfg.replace(seed=cfg.seed + process_id * cfg.seeds), out, progress=False)
"""
# the same study from the command line: ltjax run ... --coordinator --num-processes --process-id
_CLI = _HEAD + """
process_id, processes, port, out = sys.argv[1:5]
from ltjax.cli import main
sys.exit(main(["run", "lenet_mnist_openlth", "--seeds", "4", "--rounds", "3", "--iterations", "100", "--set",
               "widths=64", "--set", "eval_every=50", "--set", "checkpoint_every=50", "--out", out, "--no-progress",
               "--coordinator", f"127.0.0.1:{port}", "--num-processes", processes, "--process-id", process_id]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(processes: int, out, fault: str = "", timeout: float = 240,
            script: str = _STUDY) -> list[subprocess.CompletedProcess]:
    """Start the study in ``processes`` processes (one job) and wait for all of them."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={4 // processes}",
           "JAX_PLATFORMS": "cpu", "LTJAX_FAULT": fault}
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i), str(processes), port, str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(processes)]
    end = time.monotonic() + timeout
    while any(p.poll() is None for p in procs) and time.monotonic() < end:
        time.sleep(0.5)
    stuck = [p.poll() is None for p in procs]
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGUSR1)
    time.sleep(2)
    for p in procs:
        if p.poll() is None:
            p.kill()
    done = [subprocess.CompletedProcess(p.args, p.returncode, *p.communicate()) for p in procs]
    assert not any(stuck), f"stuck after {timeout} s: " + "\n".join(
        f"process {i}:\n{p.stdout[-2000:]}\n{p.stderr[-6000:]}" for i, p in enumerate(done))
    return done


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The study in one process with four devices."""
    out = tmp_path_factory.mktemp("one")
    (one,) = _launch(1, out)
    assert one.returncode == 0, one.stderr[-3000:]
    (d,) = list(out.iterdir())
    return load_run(d)


def test_two_processes_run_one_study_and_resume_it(one_process, tmp_path):
    """4 tickets, one per device of the global mesh (2 per process). Round 2 of the two-process
    run is killed (SIGKILL, both processes) after its mid-round checkpoint at iteration 50; the
    rerun restores θ0 and round 1's masks and weights sharded, each process reading its own
    tickets, and round 2's state from the mid-round checkpoint; it is started from the command
    line (``ltjax run ... --coordinator --num-processes --process-id``). Each device runs the same
    per-device program in both layouts (training needs no communication), so the two-process
    study equals the single-process one bitwise: masks, weights and per-layer counts."""
    t1 = time.perf_counter()
    killed = _launch(2, tmp_path / "two", fault="round2.at50")
    # process 1 kills itself too, or JAX aborts it first when the coordinator (process 0) is gone
    assert killed[0].returncode == -9 and killed[1].returncode in (-9, -6), [p.stderr[-3000:] for p in killed]
    (d,) = list((tmp_path / "two").iterdir())
    assert [r.index for r in load_run(d).rounds] == [0, 1] and (d / "partial").is_dir()
    t2 = time.perf_counter()
    resumed = _launch(2, tmp_path / "two", script=_CLI)
    assert [p.returncode for p in resumed] == [0, 0], [p.stderr[-3000:] for p in resumed]
    assert "resuming at round 2" in resumed[0].stdout and "resuming at iteration 50" in resumed[0].stdout
    assert "round" not in resumed[1].stdout  # process 0 logs and reports for the job (gloo prints its connections)
    assert "final test acc %" in resumed[0].stdout  # the table of rounds
    print(f"two processes: killed after {t2 - t1:.0f} s, resumed in {time.perf_counter() - t2:.0f} s")
    a, b = one_process, load_run(d)
    assert a.path.name == d.name and len(a.rounds) == len(b.rounds) == 3
    for x, y in zip(_leaves(a.theta0), _leaves(b.theta0)):
        np.testing.assert_array_equal(x, y)
    for ra, rb in zip(a.rounds, b.rounds):
        for n, count in ra.metrics["remaining"].items():
            np.testing.assert_array_equal(count, rb.metrics["remaining"][n])
        for x, y in zip(_leaves(ra.mask) + _leaves(ra.params), _leaves(rb.mask) + _leaves(rb.params)):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(ra.metrics["final_test_acc"], rb.metrics["final_test_acc"])
    assert sorted(p.name for p in d.iterdir()) == sorted(p.name for p in a.path.iterdir())


def test_each_process_its_own_block_of_seeds(one_process, tmp_path):
    """The other way to use several hosts: independent processes (no jax.distributed), process p
    running seeds 2p, 2p + 1 on its own two devices into its own run directory. Together the
    blocks are the four-device study, bitwise."""
    blocks = _launch(2, tmp_path, script=_BLOCKS)
    assert [p.returncode for p in blocks] == [0, 0], [p.stderr[-3000:] for p in blocks]
    runs = sorted((load_run(d) for d in tmp_path.iterdir()), key=lambda r: r.config.seed)
    assert [r.config.seed for r in runs] == [one_process.config.seed, one_process.config.seed + 2]
    for p, run in enumerate(runs):
        assert len(run.rounds) == 3 and not run.verify()
        mine = lambda tree: [x[2 * p:2 * p + 2] for x in _leaves(tree)]  # noqa: E731
        for ra, rb in zip(one_process.rounds, run.rounds):
            for x, y in zip(mine(ra.mask) + mine(ra.params), _leaves(rb.mask) + _leaves(rb.params)):
                np.testing.assert_array_equal(x, y)
