"""Build ``docs/api.md``, the API reference, from the library's docstrings.

    python docs/api.py            # rewrite docs/api.md
    python docs/api.py --check    # exit 1 if docs/api.md is out of date (the test suite runs this)

Public names are a module's ``__all__`` where it has one, else the functions and classes it
defines whose names do not start with an underscore. ``Config`` gets a table of its fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import re
import sys
from pathlib import Path

MODULES = [
    ("ltjax", "the package: `Config`, `load_run` and the core modules"),
    ("ltjax.config", "the study configuration: every field, checked before anything runs"),
    ("ltjax.presets", "the papers' recipes by name"),
    ("ltjax.masks", "masks as pytrees: make, apply, count, compare"),
    ("ltjax.scores", "weight scores: magnitude and the layerwise importance scores"),
    ("ltjax.pruning", "pruning by scores: layerwise, global, to an exact count"),
    ("ltjax.loop", "the round loop every study runs: mask, start, fit, commit; resume and SIGTERM"),
    ("ltjax.lottery", "the IMP / LTR study on the round loop: `run` a study"),
    ("ltjax.midround", "mid-round checkpoints: a round in segments, resumable, stopped by SIGTERM where saved"),
    ("ltjax.store", "run directories: atomic orbax checkpoints, `load_run`"),
    ("ltjax.ticket", "one ticket to carry: `save_ticket` / `load_ticket`, a `.npz` that NumPy reads alone"),
    ("ltjax.identity", "the recorded identity of your own model, optimizer, loss, schedule and data"),
    ("ltjax.train", "the compiled, vmapped masked trainer"),
    ("ltjax.optim", "`keep_pruned`: an optax wrapper that keeps pruned weights at 0 in any training loop"),
    ("ltjax.progress", "progress reports of long training calls: bar or plain lines"),
    ("ltjax.compile_cache", "JAX's persistent compilation cache for ltjax commands"),
    ("ltjax.devices", "placing the ticket axis on devices"),
    ("ltjax.distributed", "several hosts, one program: `initialize`, global arrays, one process writes"),
    ("ltjax.controls", "reinitialized and shuffled controls"),
    ("ltjax.snip", "SNIP and iterative SNIP"),
    ("ltjax.at_init", "pruning at initialization: SynFlow, GraSP, inverted scores, layer collapse"),
    ("ltjax.stability", "linear mode connectivity: instability of dense networks and of IMP rounds"),
    ("ltjax.supermask",
     "deconstructing lottery tickets: mask criteria, signed constants, learned supermasks (Zhou et al. 2019)"),
    ("ltjax.stopping", "early stopping rules on recorded curves"),
    ("ltjax.analysis", "analysis of masks and runs"),
    ("ltjax.early", "early tickets: per-ticket functions"),
    ("ltjax.early_study", "early tickets: studies on one watched baseline"),
    ("ltjax.report", "tables"),
    ("ltjax.plots", "figures"),
    ("ltjax.models", "models and their registry"),
    ("ltjax.data", "datasets (TFDS, TinyImageNet, synthetic arrays, XOR)"),
    ("ltjax.xor", "the XOR experiments of Frankle & Carbin (2018)"),
    ("ltjax.bench", "throughput benchmarks"),
    ("ltjax.memory", "device memory of a ticket's step, from XLA's analysis; devices per ticket"),
    ("ltjax.bench_suite", "`ltjax bench --suite`: ticket-steps/s and memory vs vmapped tickets, against PyTorch"),
]
OUT = Path(__file__).resolve().parent / "api.md"


def public(mod) -> list[str]:
    if hasattr(mod, "__all__"):
        return [n for n in mod.__all__ if not inspect.ismodule(getattr(mod, n))]
    return [n for n, o in vars(mod).items() if not n.startswith("_") and (inspect.isfunction(o) or inspect.isclass(o))
            and getattr(o, "__module__", None) == mod.__name__]


def signature(obj) -> str:
    """The signature without memory addresses (so the page is reproducible) and without Flax's
    own ``parent`` / ``name`` module arguments."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""
    if inspect.isclass(obj):
        sig = sig.replace(parameters=[q for q in sig.parameters.values() if q.name not in ("parent", "name")]
                          if any(b.__name__ == "Module" for b in obj.__mro__) else list(sig.parameters.values()))
    return re.sub(r"<function ([\w.<>]+?)(\.<locals>\.\w+)? at 0x[0-9a-f]+>", r"<function \1>", str(sig))


def config_fields(cls) -> list[str]:
    rows = ["| field | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else ""
        rows.append(f"| `{f.name}` | `{default!r}` | {f.metadata.get('help', '').replace('|', '/')} |")
    return rows


def entry(modname: str, name: str, obj) -> list[str]:
    kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else "constant"
    lines = [f"### `{modname}.{name}`", ""]
    if kind == "constant":
        return lines + [f"A constant of type `{type(obj).__name__}`.", ""]
    sig = "(...)" if name == "Config" else signature(obj)  # Config: see the field table
    lines += ["```python", f"{'class ' if kind == 'class' else ''}{name}{sig}", "```", ""]
    doc = inspect.getdoc(obj)
    if doc and not (kind == "class" and doc.startswith(f"{name}(")):  # skip dataclass auto-docs
        lines += [doc, ""]
    if dataclasses.is_dataclass(obj) and name == "Config":
        lines += config_fields(obj) + [""]
    if kind == "class":
        for mname, m in vars(obj).items():
            if mname.startswith("_") or not (inspect.isfunction(m) or isinstance(m, property)):
                continue
            mdoc = inspect.getdoc(m)
            if not mdoc:
                continue
            msig = "" if isinstance(m, property) else signature(m)
            lines += [f"- `{mname}{msig}`: " + mdoc.replace("\n", " "), ""]
    return lines


def build() -> str:
    out = ["# API reference", "",
           "Generated from the docstrings by `python docs/api.py`; do not edit by hand. "
           "Arrays of a study carry a leading ticket axis; a single ticket's functions are meant "
           "to be vmapped.", ""]
    out += [f"- [`{m}`](#{m.replace('.', '')}): {what}" for m, what in MODULES] + [""]
    for modname, what in MODULES:
        mod = importlib.import_module(modname)
        out += [f"## {modname}", "", f"*{what}*", ""]
        doc = inspect.getdoc(mod)
        if doc:
            out += [doc, ""]
        if modname == "ltjax":
            continue
        for name in public(mod):
            out += entry(modname, name, getattr(mod, name))
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true")
    a = p.parse_args(argv)
    text = build()
    if a.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python docs/api.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
