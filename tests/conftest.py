"""Test setup: use the offline dataset folder beside the checkout when there is one."""

import os
from pathlib import Path

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if "LTJAX_MANUAL_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["LTJAX_MANUAL_DIR"] = str(_SHARED)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The suite compiles the same programs many times over: in both xdist workers and in the
# dozens of subprocesses its kill-and-resume, CLI, notebook and script tests start. JAX's
# persistent compilation cache, shared by all of them, compiles each once (a cached executable
# is the compiled program itself, so nothing computed changes). Set JAX_COMPILATION_CACHE_DIR
# to use another folder (delete it freely: it is only a cache). Small programs are kept too: a
# subprocess compiles dozens of them (init, pruning, metrics). No size bound: JAX needs the
# filelock package for one (without it, setting a bound disables the cache).
import tempfile  # noqa: E402

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / "ltjax-tests-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


# Scheduling over xdist workers (``--dist loadgroup``, pyproject.toml): a test that uses a
# module-scoped fixture (a trained tiny study) runs on the worker that holds its module's other
# such tests, so the fixture is computed once; every other test goes to whichever worker is free,
# so a module of long independent tests (the guides, the notebooks) is spread over the workers
# instead of running alone at the end on one of them.
import pytest  # noqa: E402


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is not None and any(d.scope == "module" for defs in info.name2fixturedefs.values() for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
