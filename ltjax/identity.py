"""Identity of your own objects in a configuration: model, optimizer, loss and data.

A :class:`~ltjax.config.Config` field that names something (``model="mlp"``,
``optimizer="adam"``, ``dataset="mnist"``, ``loss="cross_entropy"``, ``schedule="step"``) may
hold the thing itself: a Flax module (or :class:`ltjax.models.Model`), an optax optimizer
factory ``lr -> GradientTransformation``, a loss ``(logits, labels) -> per-example loss``, a
schedule ``iteration -> learning rate``, or in-memory arrays. Nothing is registered. The run directory records
each object's :func:`describe` (in ``config.json``) and its hash names the directory, so a run
never continues on a different object:

* a module: its class (module and qualified name), its ``repr`` with memory addresses
  removed, and its class's source code; when the run starts, the shapes, dtypes and bytes
  of its parameters at ``PRNGKey(0)`` and its outputs on a fixed input are checked too
  (:func:`model_fingerprint`), so a change the repr does not show (an initializer's scale in
  a closure) is refused, not trained on;
* an optimizer, loss or schedule: what it computes on a fixed probe (three optimizer steps on
  fixed gradients with a fixed schedule; the loss of fixed logits; the learning rate at fixed
  iterations), plus its name;
* data: a SHA-256 over every array's dtype, shape and bytes.

Every run, of a named model too, records its model's :func:`model_identity` in ``model.json``
(parameter shapes and dtypes, repr, and a hash of what it computes as JAX traces it) and refuses
to resume with a model that differs (:func:`model_mismatch`), naming what was recorded and what
the model gives now.

Read back from ``config.json`` (for example by :func:`ltjax.load_run`, without your code), such
a field is an :class:`ObjectRef`: its description, enough to show, compare and hash the run;
to continue the run, pass the object itself again.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from typing import Any, NamedTuple

import numpy as np

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_CACHE: dict[int, tuple[Any, dict]] = {}


class ObjectRef(NamedTuple):
    """A user object as a finished run recorded it (see the module docstring)."""

    kind: str  # model | optimizer | loss | data
    description: dict

    def __repr__(self) -> str:
        d = self.description
        return f"<your {self.kind} {d.get('type', '?')}, fingerprint {d.get('fingerprint', '?')}>"


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
    return h.hexdigest()[:16]


def _qualname(obj) -> str:
    t = obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)
    return f"{getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', t.__class__.__name__)}"


def _source(obj) -> str:
    try:
        return inspect.getsource(obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj))
    except (OSError, TypeError):
        return ""


def _arrays_bytes(arrays) -> bytes:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.digest()


def _describe_model(m) -> dict:
    from ltjax.models import Model

    module = m.module if isinstance(m, Model) else m
    extra = ""
    if isinstance(m, Model):
        extra = json.dumps([list(m.input_shape), m.num_outputs, m.stateful, m.train_flag, list(m.rngs),
                            _qualname(m.is_prunable), _source(m.is_prunable)])
    text = _ADDRESS.sub("", repr(module))
    return {"type": _qualname(module), "repr": text[:2000],
            "fingerprint": _sha(_qualname(module), text, _source(module), extra)}


def _probe_schedule(count):
    return 0.1 / (1.0 + count)


def _describe_optimizer(opt) -> dict:
    import jax.numpy as jnp
    import optax

    tx = opt if isinstance(opt, optax.GradientTransformation) else opt(_probe_schedule)
    if not isinstance(tx, optax.GradientTransformation):
        raise TypeError(f"optimizer {opt!r} is not an optax optimizer: give a factory lr -> GradientTransformation "
                        f"(e.g. lambda lr: optax.adamw(lr, weight_decay=1e-4)) or a GradientTransformation")
    params = {"w": jnp.linspace(-1.0, 1.0, 5, dtype=jnp.float32)}
    state, outs = tx.init(params), []
    for i in range(3):
        g = {"w": jnp.sin(jnp.arange(5, dtype=jnp.float32) + i)}
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        outs.append(np.asarray(updates["w"]))
    name = _qualname(opt)
    return {"type": name, "fingerprint": _sha(name, _arrays_bytes(outs))}


def _describe_loss(fn) -> dict:
    import jax.numpy as jnp

    logits = jnp.sin(jnp.arange(40, dtype=jnp.float32)).reshape(4, 10) * 3
    labels = jnp.asarray([0, 3, 9, 3], jnp.int32)
    out = np.asarray(fn(logits, labels))
    name = _qualname(fn)
    return {"type": name, "fingerprint": _sha(name, _arrays_bytes([out]))}


def _describe_data(data) -> dict:
    from ltjax.data import data_arrays

    arrays = data_arrays(data)
    keys = [k for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test") if k in arrays]
    meta = {k: arrays[k] for k in ("mean", "std", "name", "num_classes") if k in arrays}
    return {"type": type(data).__name__, "shapes": {k: list(np.shape(arrays[k])) for k in keys},
            "fingerprint": _sha(_arrays_bytes([arrays[k] for k in keys]), json.dumps(meta, sort_keys=True,
                                                                                     default=str))}


def _describe_schedule(fn) -> dict:
    import jax.numpy as jnp

    out = [np.asarray(fn(jnp.int32(t)), np.float32) for t in (0, 1, 10, 100, 1000, 10_000, 100_000)]
    name = _qualname(fn)
    return {"type": name, "fingerprint": _sha(name, _arrays_bytes(out))}


_DESCRIBE = {"schedule": _describe_schedule, "model": _describe_model, "optimizer": _describe_optimizer,
             "loss": _describe_loss,
             "data": _describe_data}


def describe(kind: str, obj) -> dict:
    """What ``config.json`` records of a user object (cached per object)."""
    if isinstance(obj, ObjectRef):
        return obj.description
    hit = _CACHE.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    d = {"object": kind, **_DESCRIBE[kind](obj)}
    _CACHE[id(obj)] = (obj, d)
    return d


def model_fingerprint(model) -> str:
    """What a model computes: its parameters' tree, shapes and dtypes at ``PRNGKey(0)``, each
    leaf's mean and std and the logits on a fixed input (to 4 significant digits, so the same
    model on another CPU, which may round its last bits differently, has the same fingerprint)."""
    import jax
    import jax.numpy as jnp

    params = model.init(jax.random.PRNGKey(0))
    leaves, tree = jax.tree_util.tree_flatten(params)
    x = jnp.sin(jnp.arange(int(np.prod(model.input_shape)), dtype=jnp.float32)).reshape(1, *model.input_shape)
    logits = np.asarray(model.apply(params, x), np.float64)
    stats = [(np.asarray(a).dtype.str, np.shape(a), float(np.mean(a)), float(np.std(a))) for a in leaves]
    rounded = [f"{d}{s}{m:.4g}/{v:.4g}" for d, s, m, v in stats] + [f"{v:.4g}" for v in logits.ravel()]
    return _sha(str(tree), *rounded)


def model_identity(model, values: bool = False) -> dict:
    """What a run directory's ``model.json`` records of its model (any model, named or your own):

    * ``params``: each parameter's dtype and shape by path (``{"fc1/kernel": "float32[784,300]"}``);
    * ``repr``: the module's repr without memory addresses;
    * ``program``: a hash of the jaxprs of ``init``, ``apply`` and ``apply_train``, what the model
      computes as JAX ``jax`` (the version, also recorded) traces it, so a changed activation,
      initializer or parameter-free layer, which neither shapes nor repr show, changes it;
    * with ``values``, ``fingerprint``: :func:`model_fingerprint` (what your own module computes,
      as recorded before the other three existed).

    Only tracing: nothing is compiled or computed but ``fingerprint``."""
    import jax
    import jax.numpy as jnp

    from ltjax.masks import path_str

    key = jax.random.PRNGKey(0)
    params = jax.eval_shape(model.init, key)
    x = jax.ShapeDtypeStruct((1, *model.input_shape), jnp.float32)
    programs = [jax.make_jaxpr(model.init)(key), jax.make_jaxpr(model.apply)(params, x),
                jax.make_jaxpr(model.apply_train)(params, x, key)]
    out = {"params": {path_str(p): f"{a.dtype}[{','.join(map(str, a.shape))}]"
                      for p, a in jax.tree_util.tree_flatten_with_path(params)[0]},
           "repr": _ADDRESS.sub("", repr(model.module))[:2000],
           "program": _sha(*(_ADDRESS.sub("", str(j)) for j in programs)), "jax": jax.__version__}
    if values:
        out["fingerprint"] = model_fingerprint(model)
    return out


def model_mismatch(was: dict, now: dict) -> str | None:
    """How the model ``now`` differs from the model a run recorded (both :func:`model_identity`),
    in words naming both, first difference first (parameters, repr, program, fingerprint); ``None``
    when they agree on every item both records hold (the program only when one JAX version traced
    both: another version may trace the same code differently)."""
    a, b = was.get("params"), now.get("params")
    if a is not None and b is not None and a != b:
        diffs = [f"{k}: recorded {a.get(k, 'nothing')}, now {b.get(k, 'nothing')}"
                 for k in [*a, *(k for k in b if k not in a)] if a.get(k) != b.get(k)]
        return (f"a model whose parameters differ from the model given now "
                f"({'; '.join(diffs[:6])}{'; …' if len(diffs) > 6 else ''})")
    if "repr" in was and "repr" in now and was["repr"] != now["repr"]:
        return f"the model {_line(was['repr'])}; the model given now is {_line(now['repr'])}"
    if was.get("program") and was.get("jax") == now.get("jax") and was["program"] != now.get("program"):
        return (f"a model that computes something else (program {was['program']}; the model given now: "
                f"{now.get('program')}), though its parameters and repr are the same: code the repr does not "
                f"show changed (an activation, an initializer, a layer without parameters)")
    if "fingerprint" in was and "fingerprint" in now and was["fingerprint"] != now["fingerprint"]:
        return (f"a model that computes something else (fingerprint {was['fingerprint']}; the model given now: "
                f"{now['fingerprint']}), though its class, repr and source are the same: an initializer or "
                f"setting the repr does not show changed")
    return None


def _line(text: str, limit: int = 300) -> str:
    """A repr on one line, shortened."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
