"""Static import graph of the project's own modules (ast, nothing imported): what the
dvc.yaml deps test and the layering test read."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

SRC = ROOT / "src"


def module_file(module: str) -> Path | None:
    """The source file of a ``nextbuy`` module (a package's __init__.py), None outside the project."""
    base = SRC / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported_modules(file: Path, module_level_only: bool = False) -> set[str]:
    """``nextbuy`` modules ``file`` imports (``from pkg import name`` counts ``pkg.name`` if a module).

    Imports inside functions count too unless ``module_level_only``: a lazy import still runs
    when the stage takes that path."""
    tree = ast.parse(file.read_text())
    nodes = tree.body if module_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named = (f"{node.module}.{a.name}" for a in node.names)
            submodules = {m for m in named if module_file(m)}
            found |= submodules
            # ``from pkg import part`` depends on the part; a name defined in pkg's __init__, on pkg
            if len(submodules) < len(node.names):
                found.add(node.module)
    return {m for m in found if m.split(".")[0] == "nextbuy" and module_file(m)}


def with_parents(module: str) -> set[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def import_closure(entry: set[str]) -> set[str]:
    todo, seen = set().union(*(with_parents(m) for m in entry)), set()
    while todo:
        module = todo.pop()
        seen.add(module)
        todo |= set().union(set(), *(with_parents(m) for m in imported_modules(module_file(module)))) - seen
    return seen
