"""The ImageNet-scale path end to end, on the synthetic stand-in of ImageNet's shapes
(``synthetic_imagenet``: ResNet-50 on 224x224x3 images of 1,000 classes, streamed from the
host): 2 tickets x 2 data devices on 4 forced host devices, through the ``ltjax run``
command, SIGKILLed inside round 1 right after its mid-round checkpoint, then resumed."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from ltjax.store import load_run

pytestmark = pytest.mark.xdist_group("imagenet_smoke")


def test_synthetic_imagenet_two_rounds_on_a_tickets_by_data_mesh_killed_mid_round_and_resumed(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LTJAX_FAULT"}
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    argv = [sys.executable, "-m", "ltjax.cli", "run", "synthetic_imagenet", "--seeds", "2", "--devices-per-ticket",
            "2", "--out", str(tmp_path), "--no-progress"]
    killed = subprocess.run(argv, capture_output=True, text=True, timeout=900,
                            env={**env, "LTJAX_FAULT": "round1.at4"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (d,) = list(tmp_path.iterdir())
    assert (d / "partial").exists() and [p.name for p in d.glob("round_*")] == ["round_000"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming at round 1 of 2" in done.stdout
    assert "round 1: resuming at iteration 4 from its mid-round checkpoint" in done.stdout
    assert not (d / "partial").exists()
    run = load_run(d)
    assert [r.metrics["round"] for r in run.rounds] == [0, 1]
    r1 = run.rounds[1]
    kept = sum(np.asarray(v) for v in r1.metrics["remaining"].values())
    dense = sum(np.asarray(v) for v in run.rounds[0].metrics["remaining"].values())
    assert (np.abs(kept - 0.8 * dense) <= 1).all()  # global pruning removed 20% of each ticket's weights
    assert np.isfinite(np.asarray(r1.metrics["curves"]["test_loss"])).all()
    assert np.asarray(r1.metrics["curves"]["step"]).tolist() == [4, 6]
