"""Imports point down the layers: domain <- mlops, release, model_card, serving <- data <-
engines <- stages <- orchestration/CLI <- DAGs, with bench/ on top; no module imports one that
imports it, and no private name crosses a package. Read from the source (ast), so a lazy
import inside a function counts as much as one at the top of a module."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import ROOT
from tests.imports import SRC, imported_modules

PACKAGE = SRC / "nextbuy"
# The layers, bottom up: a module may import its own layer and those below, never one above.
LAYERS = (
    ("nextbuy.domain",),
    ("nextbuy.mlops", "nextbuy.model_card", "nextbuy.release", "nextbuy.serving"),
    ("nextbuy.data",),
    # the Spark twins of the stages' data-heavy parts (pyspark imported lazily inside)
    ("nextbuy.engines",),
    ("nextbuy.stages",),
    # `nextbuy bench` in the CLI dispatches by name (importlib), never imports bench.
    ("nextbuy.orchestration", "nextbuy.cli", "nextbuy.pipeline"),
    ("nextbuy.bench",),
)
FORBIDDEN = {
    layer: tuple(above for higher in LAYERS[i + 1 :] for above in higher)
    for i, group in enumerate(LAYERS)
    for layer in group
}


def module_name(file) -> str:
    parts = file.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_of(layer: str) -> list[str]:
    names = (module_name(f) for f in PACKAGE.rglob("*.py"))
    return sorted(m for m in names if m == layer or m.startswith(layer + "."))


def violations(module: str, forbidden: tuple[str, ...]) -> list[str]:
    file = SRC / (module.replace(".", "/") + ".py")
    if not file.exists():
        file = SRC / module.replace(".", "/") / "__init__.py"
    return sorted(
        m for m in imported_modules(file) if any(m == f or m.startswith(f + ".") for f in forbidden)
    )


@pytest.mark.parametrize("layer", [layer for layer, above in FORBIDDEN.items() if above])
def test_layer_imports_only_downwards(layer):
    bad = {m: violations(m, FORBIDDEN[layer]) for m in modules_of(layer)}
    assert {m: v for m, v in bad.items() if v} == {}


def test_stages_never_import_each_other():
    for stage in modules_of("nextbuy.stages"):
        others = [m for m in violations(stage, ("nextbuy.stages",)) if m not in (stage, "nextbuy.stages")]
        assert others == [], f"{stage} imports {others}: shared logic belongs in the domain layer"


# What the operational benchmarks and the tests share: a synthetic champion, a REST server, a
# copy of the project. Any other test leaning on a benchmark would test the benchmark.
BENCH_FIXTURES = ("nextbuy.bench.serving_fixtures", "nextbuy.bench.project_copy")


def test_only_the_bench_tests_import_bench():
    # tests mirror the code: tests/bench/ tests the benchmarks, nothing else leans on them
    for file in (ROOT / "tests").rglob("*.py"):
        if file.is_relative_to(ROOT / "tests" / "bench"):
            continue
        bench = [m for m in imported_modules(file) if m.startswith("nextbuy.bench") and m != "nextbuy.bench"]
        assert not [m for m in bench if m not in BENCH_FIXTURES], file


def test_the_product_never_imports_the_research_benchmarks():
    # benchmarks/nextbuy_lab reaches `nextbuy bench` through entry points, never by an import
    for file in PACKAGE.rglob("*.py"):
        tree = ast.parse(file.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not [m for m in names if m.split(".")[0] == "nextbuy_lab"], file
        assert "nextbuy_lab" not in file.read_text(), file


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    fake = tmp_path / "nextbuy" / "domain"
    fake.mkdir(parents=True)
    (fake / "leaky.py").write_text("def f():\n    from nextbuy.mlops import io\n")
    monkeypatch.setattr("tests.test_layers.SRC", tmp_path)
    assert violations("nextbuy.domain.leaky", FORBIDDEN["nextbuy.domain"]) == ["nextbuy.mlops.io"]


# --- cycles and private names ----------------------------------------------------------------


def import_graph(package=PACKAGE):
    """Every product module and the product modules it imports (inside functions too)."""
    import networkx as nx

    graph = nx.DiGraph()
    for file in package.rglob("*.py"):
        module = module_name(file)
        graph.add_node(module)
        graph.add_edges_from((module, m) for m in imported_modules(file) if m != module)
    return graph


def cycles(graph) -> list[list[str]]:
    import networkx as nx

    return sorted(sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1)


def test_no_module_imports_a_module_that_imports_it():
    # a lazy import inside a function hides a cycle from the interpreter, not from this check
    assert cycles(import_graph()) == []


def test_the_cycle_check_sees_a_hidden_cycle(tmp_path, monkeypatch):
    fake = tmp_path / "nextbuy" / "domain"
    fake.mkdir(parents=True)
    (fake / "a.py").write_text("from nextbuy.domain.b import g\n")
    (fake / "b.py").write_text("def g():\n    from nextbuy.domain.a import f\n")
    monkeypatch.setattr("tests.imports.SRC", tmp_path)
    monkeypatch.setattr("tests.test_layers.SRC", tmp_path)
    assert cycles(import_graph(tmp_path / "nextbuy")) == [["nextbuy.domain.a", "nextbuy.domain.b"]]


def private_imports_across_packages(package=PACKAGE) -> list[str]:
    """``module: from other import _name`` where other lies in another package: a private name
    is its package's business."""
    found = []
    for file in package.rglob("*.py"):
        module = module_name(file)
        home = module if file.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(file.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nextbuy")):
                continue
            source = SRC / node.module.replace(".", "/")
            source_home = node.module if source.is_dir() else node.module.rpartition(".")[0]
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and source_home != home:
                    found.append(f"{module}: from {node.module} import {alias.name}")
    return sorted(found)


def test_no_private_name_is_imported_from_another_package():
    assert private_imports_across_packages() == []
