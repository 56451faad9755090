"""Run notebooks top to bottom without Jupyter, the way CI checks them.

    python notebooks/run.py notebooks/01_quickstart.ipynb            # the "ci" size, in ./runs
    python notebooks/run.py --size full notebooks/*.ipynb            # the real thing (hours on a CPU)

Each notebook's code cells run in order in one namespace, in a fresh process per notebook,
with ``LTJAX_NOTEBOOK_SIZE`` set (the notebooks' size switch) and matplotlib drawing
off-screen. The notebooks contain no IPython magics (their install cell is plain Python),
so this is what a Colab runtime executes. A failing cell stops the run with the cell's
number, its first lines and the traceback, and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path


def code_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def execute(path: Path) -> int:
    """Run one notebook in this process; 0 on success."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    namespace = {"__name__": "__main__"}
    t_all = time.perf_counter()
    for i, src in enumerate(code_cells(path), 1):
        t0 = time.perf_counter()
        try:
            exec(compile(src, f"{path.name} [cell {i}]", "exec"), namespace)
        except Exception:
            head = "\n".join("    " + line for line in src.splitlines()[:6])
            print(f"\n{path.name}: code cell {i} failed:\n{head}\n", file=sys.stderr)
            traceback.print_exc()
            return 1
        finally:
            plt.close("all")
        print(f"[{path.name}] cell {i} done in {time.perf_counter() - t0:.1f}s", flush=True)
    print(f"[{path.name}] all {i} code cells ran in {time.perf_counter() - t_all:.1f}s", flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="+", type=Path)
    p.add_argument("--size", choices=["ci", "full"], default="ci")
    p.add_argument("--out", default="runs", help="run directories (LTJAX_NOTEBOOK_OUT)")
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.in_process:
        return execute(a.notebooks[0])
    env = {**os.environ, "LTJAX_NOTEBOOK_SIZE": a.size, "LTJAX_NOTEBOOK_OUT": str(a.out), "MPLBACKEND": "Agg"}
    failed = []
    for nb in a.notebooks:
        rc = subprocess.run([sys.executable, __file__, "--in-process", str(nb)], env=env).returncode
        if rc:
            failed.append(nb.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
