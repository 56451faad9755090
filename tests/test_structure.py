"""The package's shape, as issue 20 asks it to stay: short functions, a round loop and trainer that
read on one screen, no import cycles, low modules that import nothing above them, and no module
reaching into another's private names. Read from the source with ``ast``; nothing is imported."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "ltjax"
LOW = {"ltjax.masks": set(), "ltjax.pruning": {"ltjax.masks"}, "ltjax.scores": {"ltjax.masks", "ltjax.registry"},
       "ltjax.registry": set()}  # each low module, and the ltjax modules it may import


def _modules() -> dict[str, ast.Module]:
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        name = ".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(p.read_text(), str(p))
    return out


MODULES = _modules()


def _imports(name: str, tree: ast.Module) -> set[str]:
    """The ltjax modules ``name`` imports (``from ltjax import x`` counts as ltjax.x when x is a module)."""
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.level == 0 and (n.module or "").startswith("ltjax"):
            out |= {f"{n.module}.{a.name}" if f"{n.module}.{a.name}" in MODULES else n.module for a in n.names}
        elif isinstance(n, ast.Import):
            out |= {a.name for a in n.names if a.name.startswith("ltjax")}
    return {m for m in out if m in MODULES and m != name}


def _body_lines(fn: ast.FunctionDef) -> int:
    """Lines of a function's body, its docstring left out."""
    body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant) else fn.body
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def _functions():
    for name, tree in MODULES.items():
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{name}.{n.name}", n


def test_no_function_is_over_80_lines_and_the_loop_and_trainer_are_under_60():
    lengths = {q: _body_lines(fn) for q, fn in _functions()}
    assert not {q: n for q, n in lengths.items() if n > 80}
    for q in ("ltjax.train.make_trainer", "ltjax.loop.run", "ltjax.lottery._imp_rounds"):
        assert 0 < lengths[q] < 60, (q, lengths[q])


def test_no_import_cycles():
    graph = {m: _imports(m, t) for m, t in MODULES.items()}
    # a package importing its own submodules (ltjax.data → ltjax.data.stream) is not a cycle
    graph = {m: {i for i in deps if not i.startswith(m + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            pytest.fail("import cycle: " + " → ".join(path[path.index(m):] + [m]))
        if state.get(m) != 2:
            state[m] = 1
            for d in sorted(graph[m]):
                visit(d, path + [m])
            state[m] = 2

    for m in sorted(graph):
        visit(m, [])


@pytest.mark.parametrize("low", sorted(LOW))
def test_low_modules_import_nothing_above_them(low):
    assert _imports(low, MODULES[low]) <= LOW[low]


def test_data_imports_only_data():
    for name in [m for m in MODULES if m == "ltjax.data" or m.startswith("ltjax.data.")]:
        assert all(i.startswith("ltjax.data") for i in _imports(name, MODULES[name])), name


def test_no_module_uses_another_modules_private_names():
    found = []
    for name, tree in MODULES.items():
        aliases = {}
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.level == 0 and (n.module or "").startswith("ltjax"):
                for a in n.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{name}: from {n.module} import {a.name}")
                    if f"{n.module}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{n.module}.{a.name}"
            elif isinstance(n, ast.Import):
                aliases.update({a.asname or a.name: a.name for a in n.names if a.name.startswith("ltjax")})
        for n in ast.walk(tree):
            if (isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases
                    and n.attr.startswith("_") and not n.attr.startswith("__")):
                found.append(f"{name}: {n.value.id}.{n.attr}")
    assert not found
