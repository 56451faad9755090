"""Run directories: orbax checkpoints of theta0, theta_k and every round, and ``load_run``.

Layout of ``<out>/<preset>-<config hash>/``::

    config.json                 the full configuration
    theta0/                     orbax: initial params, ticket axis leading
    theta_k/                    orbax: params at the rewind iteration (strategy=rewind, k > 0)
    round_000/state/            orbax: {"mask", "params"} (params = trained weights)
    round_000/metrics.json      per-ticket metrics and curves of the round

A round is written into ``round_NNN.tmp/`` and renamed to ``round_NNN/`` when every file
is on disk, so a directory named ``round_NNN`` is always a complete round; leftovers of
an interrupted write are removed when the run resumes.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from ltjax.config import Config

PyTree = Any


def run_dir(config: Config, out: str | os.PathLike) -> Path:
    return Path(out) / f"{config.name}-{config.hash()}"


def save_tree(path: Path, tree: PyTree) -> None:
    """Save a pytree of arrays with orbax (synchronously; ``None`` leaves are kept)."""
    tree = jax.tree.map(np.asarray, tree)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(path.absolute(), tree)
    ckpt.wait_until_finished()


def load_tree(path: Path) -> PyTree:
    """Restore a pytree saved by :func:`save_tree` as NumPy arrays."""
    return ocp.StandardCheckpointer().restore(Path(path).absolute())


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
    os.replace(tmp, path)


def _json_default(x):
    if isinstance(x, (np.ndarray, np.generic)):
        return x.tolist()
    raise TypeError(f"not JSON serializable: {type(x)}")


def init_run(config: Config, out) -> Path:
    """Create (or reopen) the run directory of ``config``; checks a reopened one matches."""
    d = run_dir(config, out)
    d.mkdir(parents=True, exist_ok=True)
    cfg_path = d / "config.json"
    if cfg_path.exists():
        old = Config.from_dict(json.loads(cfg_path.read_text()))
        if old.hash() != config.hash():
            raise ValueError(f"{d} holds a run of a different configuration (hash {old.hash()})")
    _write_json(cfg_path, config.to_dict())
    # Writes interrupted by a kill (ours and orbax's own temporaries): never counted as done.
    for tmp in [*d.glob("*.tmp"), *d.glob("*orbax-checkpoint-tmp*")]:
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    return d


def save_once(path: Path, tree: PyTree) -> None:
    """Save ``tree`` at ``path`` atomically (write ``path.tmp``, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_tree(tmp, tree)
    os.replace(tmp, path)


def save_round(d: Path, r: int, mask: PyTree, params: PyTree, metrics: dict) -> None:
    final = d / f"round_{r:03d}"
    tmp = d / f"round_{r:03d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_tree(tmp / "state", {"mask": mask, "params": params})
    _write_json(tmp / "metrics.json", metrics)
    os.replace(tmp, final)


def completed_rounds(d: Path) -> list[int]:
    """Rounds 0..n-1 that are complete on disk (stops at the first gap)."""
    done, r = [], 0
    while (d / f"round_{r:03d}" / "metrics.json").exists():
        done.append(r)
        r += 1
    return done


class Round:
    """One completed round; ``mask`` and ``params`` load from disk on first access."""

    def __init__(self, path: Path):
        self.path = path
        self.index = int(path.name.split("_")[1])

    @functools.cached_property
    def _state(self) -> dict:
        return load_tree(self.path / "state")

    @property
    def mask(self) -> PyTree:
        """Mask used in this round (bool arrays, ticket axis leading; ``None`` where unprunable)."""
        return self._state["mask"]

    @property
    def params(self) -> PyTree:
        """Trained weights at the end of the round."""
        return self._state["params"]

    @functools.cached_property
    def metrics(self) -> dict:
        """Per-ticket metrics: densities, early-stop iteration, accuracies, curves (NumPy)."""
        m = json.loads((self.path / "metrics.json").read_text())
        return _to_numpy(m)

    def __repr__(self) -> str:
        return f"Round({self.index}, density={np.mean(self.metrics['density']):.4f})"


def _to_numpy(x):
    if isinstance(x, dict):
        return {k: _to_numpy(v) for k, v in x.items()}
    if isinstance(x, list):
        return np.asarray(x)
    return x


class Run:
    """A run directory loaded back: ``config``, ``theta0``, ``theta_k``, ``rounds``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        cfg = self.path / "config.json"
        if not cfg.exists():
            raise FileNotFoundError(f"{self.path} is not an ltjax run directory (no config.json)")
        self.config = Config.from_dict(json.loads(cfg.read_text()))
        self.rounds = [Round(self.path / f"round_{r:03d}") for r in completed_rounds(self.path)]

    @functools.cached_property
    def theta0(self) -> PyTree:
        return load_tree(self.path / "theta0")

    @functools.cached_property
    def theta_k(self) -> PyTree:
        """Params at the rewind iteration k (θ0 itself when k = 0 or the strategy is not rewind)."""
        p = self.path / "theta_k"
        return load_tree(p) if p.exists() else self.theta0

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, rounds={len(self.rounds)}, seeds={self.config.seeds})"


def load_run(path: str | os.PathLike) -> Run:
    """Load a run directory. Arrays are NumPy with the ticket axis leading."""
    return Run(path)
