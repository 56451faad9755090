"""Every notebook runs top to bottom at its "ci" size (``LTJAX_NOTEBOOK_SIZE=ci``) in a fresh
Jupyter kernel, the way ``notebooks/run.py`` runs it; any error in any cell fails the test."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
RUNNER = NOTEBOOKS[0].parent / "run.py" if NOTEBOOKS else None


def test_the_notebooks_exist_and_install_ltjax_first():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01_quickstart", "02_frankle2018", "03_lth_vs_snip", "04_layerwise_importance",
                     "05_early_tickets", "06_multi_seed_at_scale", "07_stability_and_prune_at_init"]
    for p in NOTEBOOKS:
        code = [c for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "code"]
        assert "pip" in "".join(code[0]["source"]) and "install" in "".join(code[0]["source"]), p.name
        for c in code:  # plain Python, so the runner executes exactly what Colab does
            assert not any(line.lstrip().startswith(("!", "%")) for line in c["source"]), p.name


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_a_kernel_at_ci_size(notebook, tmp_path):
    """In a real IPython kernel (nbclient), as Colab runs it; its figures and tables are outputs."""
    env = dict(os.environ)
    if notebook.stem.startswith("06"):  # several devices, so the sharding cells shard something
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    r = subprocess.run([sys.executable, str(RUNNER), str(notebook), "--size", "ci", "--out",
                        str(tmp_path / "runs"), "--executed", str(tmp_path / "executed")],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{notebook.name} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    assert "code cells ran in a kernel" in r.stdout
    cells = json.loads((tmp_path / "executed" / notebook.name).read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert text.strip(), f"{notebook.name} printed nothing"
    source = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    if "plt." in source or "plots." in source:  # every notebook that draws shows its figures
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{notebook.name}: no figure in its outputs"
    if "round_table" in source:
        assert "density %" in text and "test acc @es %" in text, f"{notebook.name}: no round table in its outputs"
