"""Name → function tables that users extend (models, scores, round-loop parts), with one set of checks."""

from __future__ import annotations

from typing import Any, Callable


def add(table: dict[str, Callable], kind: str, name: str, fn: Any, replace: bool, what: str,
        of_type: type | None = None) -> None:
    """Put ``fn`` in ``table`` under ``name``; ``kind`` ("model", "score") and ``what`` (the
    expected callable, in words) name things in the errors. ``of_type``: ``fn`` must be an
    instance of it instead of a callable."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{kind} name {name!r} is not valid: use a Python identifier such as 'my_{kind}'")
    if not (isinstance(fn, of_type) if of_type else callable(fn)):
        raise TypeError(f"{kind} {name!r} needs {what}, got {type(fn).__name__}")
    if name in table and not replace:
        raise ValueError(f"{kind} {name!r} is already registered; pass replace=True to override it")
    table[name] = fn
