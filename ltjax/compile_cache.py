"""JAX's persistent compilation cache for ltjax commands.

A study compiles the same programs every time it starts (the round's training program,
initialization, pruning, metrics). With the cache, the second and later runs of a
configuration load them from disk instead of compiling them. A cached executable is the
compiled program itself, so nothing computed changes.

``ltjax run`` turns it on by default in ``$LTJAX_CACHE_DIR/jax`` (``~/.cache/ltjax/jax``);
``LTJAX_COMPILE_CACHE=0`` turns it off, and a cache the user configured for JAX
(``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is used as it is. From Python, call
:func:`enable` before the first study. The folder grows with every new program shape and
may be deleted at any time. Programs that report progress through a host callback (a
progress bar) cannot be cached by JAX; everything else in such a run still is.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from ltjax.data.tfds_source import cache_dir


def enable(path: str | os.PathLike | None = None) -> Path | None:
    """Turn the cache on in ``path`` (default ``cache_dir()/"jax"``); returns the folder in use,
    or ``None`` when ``LTJAX_COMPILE_CACHE=0``. A folder already configured for JAX wins."""
    flag = os.environ.get("LTJAX_COMPILE_CACHE", "1").strip()
    if flag not in ("0", "1", ""):
        raise ValueError(f"LTJAX_COMPILE_CACHE={flag!r} is not valid: use 1 (on, the default) or 0 (off)")
    if flag == "0":
        return None
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return Path(configured)
    d = Path(path) if path is not None else cache_dir() / "jax"
    d.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(d))
    # the many small programs of a run (init, masks, metrics) each take 10-300 ms to compile
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return d
