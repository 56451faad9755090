"""Run directories: orbax checkpoints of theta0, theta_k and every round, and ``load_run``.

Layout of ``<out>/<preset>-<config hash>/``::

    config.json                 the full configuration
    data.json                   the dataset's fingerprint (a resume on other data is refused)
    model.json                  the model's identity (a resume with another model is refused)
    LOCK                        held by the process using the run (see RunLock)
    theta0/tree/                orbax: initial params, ticket axis leading
    theta_k/tree/               orbax: params at the rewind iteration (strategy=rewind, k > 0)
    round_000/state/            orbax: {"mask", "params"} (params = trained weights)
    round_000/metrics.json      per-ticket metrics and curves of the round
    */MANIFEST.json             size and SHA-256 of every file of the directory

A round is written into ``round_NNN.tmp/``, a ``MANIFEST.json`` with the size and SHA-256
of every file is written last, the files are synced, and the directory is renamed to
``round_NNN/``: a directory named ``round_NNN`` is always a complete round, and
:func:`verify` detects one that was truncated or corrupted afterwards. ``theta0/`` and
``theta_k/`` are committed the same way. Leftovers of an interrupted write (``*.tmp``) are
removed when the run reopens; nothing else is ever deleted (a corrupted round being
recomputed is moved aside to ``round_NNN.corrupt-<time>``).

A run directory is used by one process at a time: :class:`RunLock` holds an exclusive
``flock`` on ``LOCK`` (the kernel drops it when the holder dies, so a killed run never
leaves a stale lock) and records the holder's pid, host and start time for the message
another process gets.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from ltjax import distributed, identity
from ltjax.config import Config

PyTree = Any


def run_dir(config: Config, out: str | os.PathLike) -> Path:
    return Path(out) / f"{config.name}-{config.hash()}"


MANIFEST = "MANIFEST.json"


class CorruptRunError(RuntimeError):
    """A committed part of a run directory no longer matches its manifest or can't be read."""


class RunLockedError(RuntimeError):
    """Another live process holds the run directory."""


def fault_point(name: str) -> None:
    """Test hook: SIGKILL this process at the named moment when ``$LTJAX_FAULT == name``.

    Used by the interruption tests to kill a run between any two steps of a round.
    """
    if os.environ.get("LTJAX_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def save_tree(path: str | os.PathLike, tree: PyTree, fault: str = "") -> None:
    """Save a pytree of arrays with orbax as the new directory ``path`` (synchronously; ``None``
    leaves are kept). A ``path`` that exists raises FileExistsError: a checkpoint is never
    overwritten."""
    path = Path(path).absolute()
    if path.exists():
        raise FileExistsError(f"{path} already exists: save_tree writes a new checkpoint directory and never "
                              f"overwrites one; choose another path, or delete that one first")
    # arrays spanning several processes stay sharded: each process writes its own part
    tree = jax.tree.map(lambda a: a if isinstance(a, jax.Array) and not a.is_fully_addressable else np.asarray(a), tree)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(path, tree)
    fault_point(f"{fault}.writing")
    ckpt.wait_until_finished()


def load_tree(path: str | os.PathLike, sharding: Callable[[tuple[int, ...]], jax.sharding.Sharding] | None = None
              ) -> PyTree:
    """Restore a pytree saved by :func:`save_tree` as NumPy arrays, or as arrays placed with
    ``sharding(shape)`` (each process reads only its devices' part); either way, whichever
    processes saved it."""
    path = Path(path).absolute()
    try:
        ckpt = ocp.StandardCheckpointer()
        saved = ckpt.metadata(path).item_metadata.tree
        as_ = ((lambda m: np.empty(m.shape, m.dtype)) if sharding is None else
               (lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding(m.shape))))
        return ckpt.restore(path, jax.tree.map(as_, saved))
    except Exception as e:  # orbax/tensorstore raise many kinds on damaged files
        raise CorruptRunError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from e


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file() and p.name != MANIFEST)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_committed(tmp: Path) -> None:
    """fsync every file of a directory that already has its manifest."""
    for p in [*_files(tmp), tmp / MANIFEST]:
        _fsync(p)


def _commit(tmp: Path, final: Path) -> None:
    """Write the manifest of ``tmp``, sync everything, then rename it to ``final`` (atomic)."""
    files = {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in _files(tmp)}
    (tmp / MANIFEST).write_text(json.dumps(files, indent=1, sort_keys=True))
    _sync_committed(tmp)
    os.replace(tmp, final)
    _fsync(final.parent)


def verify(path: Path) -> list[str]:
    """Problems of a committed directory against its manifest (empty list: intact)."""
    m = path / MANIFEST
    try:
        files = json.loads(m.read_text())
    except (OSError, ValueError) as e:
        return [f"{m} is missing or unreadable ({type(e).__name__})"]
    problems = []
    for rel, want in files.items():
        p = path / rel
        if not p.is_file():
            problems.append(f"{p} is missing")
        elif p.stat().st_size != want["size"]:
            problems.append(f"{p} has {p.stat().st_size} bytes, expected {want['size']} (truncated?)")
        elif _sha256(p) != want["sha256"]:
            problems.append(f"{p} has SHA-256 {_sha256(p)[:16]}…, expected {want['sha256'][:16]}… (corrupted)")
    extra = sorted(str(p.relative_to(path)) for p in _files(path) if str(p.relative_to(path)) not in files)
    problems += [f"{path / e} is not in the manifest" for e in extra]
    return problems


def move_aside(path: Path) -> Path:
    """Rename a corrupted directory out of the way (kept for inspection, never deleted)."""
    dest = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, dest)
    return dest


class RunLock:
    """Exclusive use of a run directory for the life of this object (``with RunLock(d): ...``).

    Uses ``fcntl.flock``: reliable on local filesystems (Linux, macOS, Colab's disk); some
    network filesystems do not honour it across hosts, so don't share one run directory
    between machines.
    """

    def __init__(self, d: Path):
        self.path = Path(d) / "LOCK"
        self.fd = None

    def __enter__(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        # lock_holder (ltjax runs) holds a shared lock for an instant to look: ask once more
        # (the record may be a killed holder's, so it cannot tell a look from a holder)
        for again in (True, False):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if again:
                    time.sleep(0.05)
                    continue
                holder = _record(fd)
                os.close(fd)
                raise RunLockedError(
                    f"run directory {self.path.parent} is in use by {holder or 'unknown process'}; wait for it "
                    "to finish or stop that process (a killed holder releases the lock by itself)"
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _record(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace").strip()


def lock_holder(d: str | os.PathLike) -> str | None:
    """The holder of run directory ``d``'s :class:`RunLock` as it recorded itself (``"pid 123
    on host since 2026-12-01 10:00:00"``, ``"unknown process"`` before it has), or ``None``
    when no live process holds it.

    Takes a shared lock without waiting and drops it at once: it never blocks and never
    takes the run from a holder (a ``RunLock`` taken in that instant asks once more). The
    record alone proves nothing: a killed holder leaves its record behind.
    """
    try:
        fd = os.open(Path(d) / "LOCK", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _record(fd) or "unknown process"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (a temporary file renamed over it); NumPy
    and JAX arrays and scalars become lists and numbers."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
    os.replace(tmp, path)


def _json_default(x):
    if isinstance(x, (np.ndarray, np.generic)):
        return x.tolist()
    raise TypeError(f"not JSON serializable: {type(x)}")


PARTS = "parts"


def part_path(d: Path, kind: str, key: dict) -> Path:
    """Where the finished part ``kind`` of a study with settings ``key`` is kept:
    ``<d>/parts/<kind>-<hash of key>.json``. ``key`` holds everything that decides the part's
    result (a JSON-able dict), so a part asked for with other settings is another file."""
    text = json.dumps(key, sort_keys=True, default=_json_default)
    return d / PARTS / f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"


def load_part(d: Path, kind: str, key: dict) -> dict | None:
    """The result :func:`save_part` kept for ``(kind, key)`` in run directory ``d``, or ``None``
    when that part is not finished. The file records its key, which must equal ``key``."""
    path = part_path(d, kind, key)
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
    except ValueError as e:
        raise CorruptRunError(f"{path} cannot be read ({e}); delete it to recompute that part") from e
    norm = json.loads(json.dumps(key, sort_keys=True, default=_json_default))
    if saved.get("kind") != kind or saved.get("key") != norm:
        raise CorruptRunError(f"{path} holds part {saved.get('kind')!r} with settings {saved.get('key')}, not "
                              f"{kind!r} with {norm}; delete it to recompute that part")
    return saved["result"]


def save_part(d: Path, kind: str, key: dict, result: dict) -> dict:
    """Keep ``result`` (JSON-able; arrays become lists) as the finished part ``(kind, key)`` of
    run directory ``d``, atomically; returns it as :func:`load_part` will (JSON round trip)."""
    path = part_path(d, kind, key)
    path.parent.mkdir(exist_ok=True)
    write_json(path, {"kind": kind, "key": key, "result": result})
    return json.loads(path.read_text())["result"]


def part(d: Path, kind: str, key: dict, compute) -> dict:
    """The finished part ``(kind, key)`` of ``d``: loaded when kept, else ``compute()``'d and kept."""
    done = load_part(d, kind, key)
    return done if done is not None else save_part(d, kind, key, compute())


def init_study(out: str | os.PathLike, name: str, settings: dict) -> Path:
    """Create (or reopen) the run directory of a study that is not a :class:`~ltjax.config.Config`
    run (the XOR study): ``<out>/<name>-<hash of settings>/``, with ``settings`` (JSON-able:
    everything that decides every one of its results) recorded in ``settings.json``. A reopened
    directory whose record differs raises, naming both, as :func:`init_run` does; its results
    are kept as parts (:func:`part`), so running the study again skips what is finished."""
    norm = json.loads(json.dumps(settings, sort_keys=True, default=_json_default))
    d = Path(out) / f"{name}-{hashlib.sha256(json.dumps(norm, sort_keys=True).encode()).hexdigest()[:12]}"
    path = d / "settings.json"
    was = json.loads(path.read_text()) if path.exists() else None
    if was is not None and was != norm:
        raise ValueError(f"{d} holds a {name} study with settings {was}, not {norm}: its parts would mix the two. "
                         f"Start the study elsewhere (another out directory), or restore {path}. Nothing was changed.")
    d.mkdir(parents=True, exist_ok=True)
    if was is None:
        write_json(path, norm)
    return d


def flat_leaves(tree: PyTree) -> dict:
    """A pytree's leaves as ``{"00000": leaf, ...}``, for saving a tree (such as an optimizer
    state of named tuples) that orbax would restore as plain dicts; :func:`unflat_leaves` undoes it."""
    return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree))}


def unflat_leaves(flat: dict, template: PyTree) -> PyTree:
    """The tree of ``template``'s structure holding the leaves :func:`flat_leaves` numbered."""
    return jax.tree_util.tree_unflatten(jax.tree.structure(template), [flat[k] for k in sorted(flat)])


def save_latest(path: Path, tree: PyTree) -> None:
    """Replace the checkpoint at ``path`` with ``tree`` (a resume point, of which only the newest
    is kept): ``tree`` is committed to ``path.new`` first, then swapped in, so a kill at any
    moment leaves the old or the new one; :func:`recover_latest` finishes an interrupted swap."""
    save_once(path.with_name(path.name + ".new"), tree)
    recover_latest(path)


def recover_latest(path: Path) -> None:
    """Finish a swap :func:`save_latest` left half done (``path.new`` is complete when it exists)."""
    new = path.with_name(path.name + ".new")
    if new.exists() and distributed.is_primary():
        shutil.rmtree(path, ignore_errors=True)
        new.rename(path)
    distributed.barrier("recover_latest")


def init_run(config: Config, out, data: str | None = None, model: dict | None = None) -> Path:
    """Create (or reopen) the run directory of ``config``; checks a reopened one matches.

    ``data`` is the dataset's :func:`ltjax.data.fingerprint`, recorded in ``data.json``: a
    run reopened on data with another fingerprint raises instead of training on a mix.
    ``model`` is the model's :func:`ltjax.identity.model_identity`, recorded in ``model.json``:
    a run reopened with a model that differs raises, naming what was recorded and what the
    model gives now (:func:`model_mismatch`). A directory from before a record gets it on
    reopening; a record from before some of its items gets them."""
    d = run_dir(config, out)
    cfg_path = d / "config.json"
    dataset = config.to_dict()["dataset"]
    was = json.loads((d / "data.json").read_text()).get("fingerprint") if data and (d / "data.json").exists() else None
    if was is not None and was != data:
        shown = dataset if isinstance(dataset, str) else f"your own {dataset['type']}"
        raise ValueError(f"{d} was trained on {shown!r} data with fingerprint {was}, but the data loaded now has "
                         f"fingerprint {data}: the dataset's files, cache or arrays changed since. Resuming would "
                         f"mix the two; restore the original data, or start the run elsewhere (another out "
                         f"directory or name). Nothing was changed.")
    if model:
        check_model(d, model)
    if cfg_path.exists():
        old = Config.from_dict(json.loads(cfg_path.read_text()), recorded=True)
        if old.hash() != config.hash():
            raise ValueError(f"{d} holds a run of a different configuration (hash {old.hash()})")
    if not distributed.is_primary():  # process 0 writes the records (lottery.run waits for it)
        return d
    d.mkdir(parents=True, exist_ok=True)
    if not cfg_path.exists():
        write_json(cfg_path, config.to_dict())
    if data and was is None:
        write_json(d / "data.json", {"dataset": dataset, "fingerprint": data})
    record = {"model": config.to_dict()["model"], **(model or {})}
    if model and (not (d / "model.json").exists() or json.loads((d / "model.json").read_text()) != record):
        write_json(d / "model.json", record)
    return d


def model_mismatch(d: Path, model: dict) -> str | None:
    """How ``model`` (:func:`ltjax.identity.model_identity`) differs from the model run ``d``
    recorded in ``model.json``, in words naming both; ``None`` when it agrees or ``d`` has no record."""
    path = d / "model.json"
    return identity.model_mismatch(json.loads(path.read_text()), model) if path.exists() else None


def check_model(d: Path, model: dict) -> None:
    """Raise ValueError, naming both, when ``model`` differs from the model run ``d`` recorded."""
    differs = model_mismatch(d, model)
    if differs:
        raise ValueError(f"{d} was trained with {differs}. Resuming would mix the two; restore the original model, "
                         f"or start the run elsewhere (another out directory or name); if the change does not alter "
                         f"what is trained, delete {d / 'model.json'} to record the model given now. Nothing was "
                         f"changed.")


def clear_temporaries(d: Path) -> None:
    """Remove writes interrupted by a kill (ours and orbax's own); call while holding the lock."""
    for tmp in [*d.glob("*.tmp"), *d.glob("*orbax-checkpoint-tmp*")]:
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()


def save_once(path: Path, tree: PyTree) -> None:
    """Save ``tree`` at ``path`` atomically (write ``path.tmp`` with a manifest, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    _fresh(tmp)
    save_tree(tmp / "tree", tree, fault=path.name)
    fault_point(f"{path.name}.written")
    _commit_once(tmp, path)


def _fresh(tmp: Path) -> None:
    """An empty directory ``tmp`` (made by process 0) that every process can write into."""
    if distributed.is_primary():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    distributed.barrier(f"mkdir {tmp.name}")


def _commit_once(tmp: Path, final: Path, extra: Callable[[], None] = lambda: None) -> None:
    """Once every process has written its part of ``tmp``: process 0 adds ``extra()`` and commits
    it as ``final``; every process returns once ``final`` exists."""
    distributed.barrier(f"written {tmp.name}")
    if distributed.is_primary():
        extra()
        _commit(tmp, final)
    distributed.barrier(f"committed {final.name}")


def load_once(path: Path, sharding=None) -> PyTree:
    """Load what :func:`save_once` saved (see :func:`load_tree` for ``sharding``)."""
    return load_tree(path / "tree", sharding)


def round_path(d: Path, r: int) -> Path:
    return d / f"round_{r:03d}"


def save_round(d: Path, r: int, mask: PyTree, params: PyTree, metrics: dict) -> None:
    tmp = d / f"round_{r:03d}.tmp"
    _fresh(tmp)
    save_tree(tmp / "state", {"mask": mask, "params": params}, fault=f"round{r}.state")
    fault_point(f"round{r}.state_saved")

    def write_metrics():
        write_json(tmp / "metrics.json", metrics)
        fault_point(f"round{r}.metrics_saved")

    _commit_once(tmp, round_path(d, r), write_metrics)
    fault_point(f"round{r}.committed")


def load_round_state(d: Path, r: int, sharding=None) -> dict:
    """Round r's ``{"mask", "params"}`` (see :func:`load_tree` for ``sharding``)."""
    return load_tree(round_path(d, r) / "state", sharding)


def completed_rounds(d: Path) -> list[int]:
    """Indices of the committed rounds (directories ``round_NNN`` with a manifest), sorted."""
    out = []
    for p in d.glob("round_[0-9][0-9][0-9]"):
        if (p / MANIFEST).exists():
            out.append(int(p.name[6:]))
    return sorted(out)


def find_runs(parent: str | os.PathLike) -> list[Path]:
    """The run directories directly under ``parent`` (folders with a ``config.json``), sorted
    by name; ``[]`` when it has none or is not a directory."""
    p = Path(parent)
    return sorted(d for d in p.iterdir() if (d / "config.json").is_file()) if p.is_dir() else []


def adopt(src: Path, dst: Path, parts: list[str]) -> list[str]:
    """Copy committed parts (``theta0``, ``round_003``, ...) of run ``src`` into run ``dst``.

    For studies that share a prefix with another run (an LTH_flip run repeats its parent's
    rounds before the flip): only parts intact in ``src`` and absent from ``dst`` are copied,
    each through a temporary directory and an atomic rename, and verified after the copy.
    Returns the parts copied.
    """
    copied = []
    for part in parts:
        s, d = src / part, dst / part
        if d.exists() or not (s / MANIFEST).exists() or verify(s):
            continue
        tmp = dst / f"{part}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(s, tmp)
        if verify(tmp):
            shutil.rmtree(tmp)
            continue
        _sync_committed(tmp)
        os.replace(tmp, d)
        _fsync(dst)
        copied.append(part)
    return copied


class Round:
    """One completed round; ``mask`` and ``params`` load from disk on first access."""

    def __init__(self, path: Path):
        self.path = path
        self.index = int(path.name.split("_")[1])

    @functools.cached_property
    def _state(self) -> dict:
        try:
            return load_tree(self.path / "state")
        except CorruptRunError as e:
            raise CorruptRunError(f"round {self.index}: {e}") from e

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
        try:
            m = json.loads((self.path / "metrics.json").read_text())
        except (OSError, ValueError) as e:
            raise CorruptRunError(f"round {self.index}: {self.path / 'metrics.json'} cannot be read ({e})") from e
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
            held = find_runs(self.path)
            hint = (f"; it holds {len(held)} run director{'y' if len(held) == 1 else 'ies'} (such as "
                    f"{held[0].name}): list them with `ltjax runs {shlex.quote(str(self.path))}`" if held else "")
            raise FileNotFoundError(f"{self.path} is not an ltjax run directory (no config.json){hint}")
        self.config = Config.from_dict(json.loads(cfg.read_text()), recorded=True)
        done = completed_rounds(self.path)
        # A round missing in the middle (moved aside as corrupt) ends the usable sequence.
        n = next((i for i, r in enumerate(done) if r != i), len(done))
        self.rounds = [Round(round_path(self.path, r)) for r in done[:n]]

    @functools.cached_property
    def theta0(self) -> PyTree:
        return load_once(self.path / "theta0")

    @functools.cached_property
    def theta_k(self) -> PyTree:
        """Params at the rewind iteration k (θ0 itself when k = 0 or the strategy is not rewind)."""
        p = self.path / "theta_k"
        return load_once(p) if p.exists() else self.theta0

    def verify(self) -> dict[str, list[str]]:
        """Problems per committed part (``theta0``, ``theta_k``, ``round 3``, ...); empty when intact."""
        parts = {name: self.path / name for name in ("theta0", "theta_k") if (self.path / name).exists()}
        parts.update({f"round {r}": round_path(self.path, r) for r in completed_rounds(self.path)})
        return {k: v for k, v in ((k, verify(p)) for k, p in parts.items()) if v}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, rounds={len(self.rounds)}, seeds={self.config.seeds})"


def load_run(path: str | os.PathLike) -> Run:
    """Load a run directory. Arrays are NumPy with the ticket axis leading."""
    return Run(path)
