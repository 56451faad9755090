"""Every notebook runs top to bottom at its "ci" size (``LTJAX_NOTEBOOK_SIZE=ci``), in a fresh
process, the way ``notebooks/run.py`` runs it; any error in any cell fails the test."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
RUNNER = NOTEBOOKS[0].parent / "run.py" if NOTEBOOKS else None


def test_the_six_notebooks_exist_and_install_ltjax_first():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01_quickstart", "02_frankle2018", "03_lth_vs_snip", "04_layerwise_importance",
                     "05_early_tickets", "06_multi_seed_at_scale"]
    for p in NOTEBOOKS:
        code = [c for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "code"]
        assert "pip" in "".join(code[0]["source"]) and "install" in "".join(code[0]["source"]), p.name
        for c in code:  # plain Python, so the runner executes exactly what Colab does
            assert not any(line.lstrip().startswith(("!", "%")) for line in c["source"]), p.name


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_at_ci_size(notebook, tmp_path):
    env = dict(os.environ)
    if notebook.stem.startswith("06"):  # several devices, so the sharding cells shard something
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    r = subprocess.run([sys.executable, str(RUNNER), str(notebook), "--size", "ci", "--out", str(tmp_path / "runs")],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{notebook.name} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    assert "all" in r.stdout and "code cells ran" in r.stdout
