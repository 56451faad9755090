"""Run notebooks top to bottom in a Jupyter kernel, as Colab does, the way CI checks them.

    python notebooks/run.py notebooks/01_quickstart.ipynb            # the "ci" size, in ./runs
    python notebooks/run.py --size full notebooks/*.ipynb            # the real thing (hours on a CPU)

Each notebook runs with nbclient in a fresh IPython kernel (pip install nbclient ipykernel; the
test extra has them) that inherits ``LTJAX_NOTEBOOK_SIZE`` (the notebooks' size switch) and
``LTJAX_NOTEBOOK_OUT``; figures are captured by matplotlib's inline backend, and
``--executed DIR`` writes each executed notebook, outputs included. A failing cell stops the
run with the cell and its traceback, and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def execute_in_kernel(path: Path, executed: Path | None = None, timeout: int = 1800) -> int:
    """Run one notebook in a fresh IPython kernel (nbclient); 0 on success. The kernel inherits
    this process's environment (size switch, output folder) and working directory."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    t = time.perf_counter()
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(Path.cwd())}}).execute()
    except CellExecutionError as e:
        print(f"\n{path.name}: a cell failed in the kernel:\n{e}", file=sys.stderr)
        return 1
    finally:
        if executed is not None:
            executed.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, executed / path.name)
    n = sum(c.cell_type == "code" for c in nb.cells)
    print(f"[{path.name}] all {n} code cells ran in a kernel in {time.perf_counter() - t:.1f}s", flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="+", type=Path)
    p.add_argument("--size", choices=["ci", "full"], default="ci")
    p.add_argument("--out", default="runs", help="run directories (LTJAX_NOTEBOOK_OUT)")
    p.add_argument("--executed", type=Path, help="write the executed notebooks to this folder")
    a = p.parse_args(argv)
    os.environ.update({"LTJAX_NOTEBOOK_SIZE": a.size, "LTJAX_NOTEBOOK_OUT": str(a.out)})
    failed = [nb.name for nb in a.notebooks if execute_in_kernel(nb, a.executed)]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
