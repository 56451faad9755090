"""A ticket to carry: one ticket's mask of one round and the weights it starts from, in one
``.npz`` file that NumPy reads without ltjax.

:func:`save_ticket` writes these arrays, keyed by the '/'-joined path of each leaf::

    mask/fc1/kernel        bool, one per prunable leaf (a kernel): True where the weight is kept
    weights/fc1/kernel     every leaf of the weights the run's tickets start from (biases and
    weights/fc1/bias       batch-norm statistics too), unmasked: multiply by the mask to start
    ...                    training the ticket
    metadata               a JSON string (a 0-d unicode array): see save_ticket

``np.load(path)`` gives them (``json.loads(str(f["metadata"]))`` the metadata); :func:`load_ticket`
gives them back as trees shaped like a run's, without the ticket axis.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from ltjax import masks as M
from ltjax.store import Run, load_run

PyTree = Any
FORMAT = "ltjax-ticket-1"


class Ticket(NamedTuple):
    """A ticket read back by :func:`load_ticket` (NumPy arrays, no ticket axis)."""

    mask: PyTree  # bool on the prunable leaves, None elsewhere (as a run's masks)
    weights: PyTree  # θ0 or θk, unmasked: metadata["weights"] says which
    metadata: dict


def save_ticket(path: str | os.PathLike, run: Run | str | os.PathLike, round: int, ticket: int, *,
                overwrite: bool = False) -> Path:
    """Write ticket ``ticket`` of round ``round`` of ``run`` (a :class:`~ltjax.store.Run` or its
    directory) to the ``.npz`` file ``path``, exactly that name; returns it.

    The weights are those the run rewinds to: θk, the weights at iteration k, when the run saved
    them (it rewinds to k > 0), else θ0. ``metadata`` records ``weights`` ("theta0" or "theta_k")
    and ``weights_iteration`` (k, or 0), the run's ``strategy`` (with ``continue`` a round starts
    from the previous round's trained weights; the file holds θ0), ``run`` (the directory's
    name), ``config_hash``, ``name``, ``model``, ``round``, ``ticket``, the ticket's ``seed``,
    ``score`` and sweep value, ``density`` (fraction of prunable weights kept), ``layers`` (the
    prunable layers in tree order) and ``layer_density``. Negative ``round`` counts from the last
    round. An existing ``path`` raises FileExistsError unless ``overwrite``; the file is written
    whole or not at all (a temporary file renamed over it)."""
    run = run if isinstance(run, Run) else load_run(run)
    path = Path(path)
    n_rounds, n_tickets = len(run.rounds), run.config.num_tickets()
    if not -n_rounds <= round < n_rounds:
        raise ValueError(f"round={round} is not valid: {run.path} has completed rounds 0..{n_rounds - 1}"
                         if n_rounds else f"round={round} is not valid: {run.path} has no completed round yet")
    if not 0 <= ticket < n_tickets:
        raise ValueError(f"ticket={ticket} is not valid: {run.path} has {n_tickets} tickets, 0..{n_tickets - 1}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another path, or pass overwrite=True to replace it")
    rd = run.rounds[round]
    pick = lambda tree: jax.tree.map(lambda a: np.asarray(a[ticket]), tree)  # noqa: E731
    mask = pick(rd.mask)
    rewound = (run.path / "theta_k").exists()
    config = run.config
    meta = {
        "format": FORMAT, "run": run.path.name, "config_hash": config.hash(), "name": config.name,
        "model": config.to_dict()["model"], "round": rd.index, "ticket": ticket,
        "seed": config.seed + ticket % config.seeds, "score": config.ticket_scores()[ticket],
        **({config.sweep: config.ticket_sweep()[ticket]} if config.sweep else {}),
        "strategy": config.strategy, "weights": "theta_k" if rewound else "theta0",
        "weights_iteration": config.rewind_iteration if rewound else 0,
        "density": float(M.global_density(mask)), "layers": M.layer_names(mask),
        "layer_density": {k: float(v) for k, v in M.density(mask).items()},
    }
    arrays = {**_by_path("mask", mask), **_by_path("weights", pick(run.theta_k)),
              "metadata": np.array(json.dumps(meta))}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)
    return path


def load_ticket(path: str | os.PathLike) -> Ticket:
    """Read a file :func:`save_ticket` wrote: the mask and weights as trees, and the metadata."""
    with np.load(path) as f:
        if "metadata" not in f.files:
            raise ValueError(f"{path} is not an ltjax ticket: it has no 'metadata' array (arrays: "
                             f"{', '.join(f.files[:8])}); write one with ltjax.save_ticket")
        meta = json.loads(str(f["metadata"]))
        arrays = {k: f[k] for k in f.files if k != "metadata"}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} holds a ticket in format {meta.get('format')!r}; this ltjax reads {FORMAT!r}")
    weights, mask = {}, {}
    for key, a in arrays.items():
        if key.startswith("weights/"):
            leaf = key[len("weights/"):]
            _put(weights, leaf, a)
            _put(mask, leaf, arrays.get(f"mask/{leaf}"))
    return Ticket(mask, weights, meta)


def _by_path(prefix: str, tree: PyTree) -> dict[str, np.ndarray]:
    """``{"prefix/fc1/kernel": array}`` for every leaf of ``tree`` (``None`` leaves are left out)."""
    return {f"{prefix}/{M.path_str(p)}": a for p, a in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _put(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split("/")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value
