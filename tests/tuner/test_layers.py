"""The architecture holds: no import cycles in tuner or tasks, and the layer contracts in
pyproject.toml are kept. Imports inside functions count: grimp reads every import statement
of a module, wherever it stands, and so does import-linter."""

from __future__ import annotations

import os
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every set of modules that import one another in a circle (Tarjan's strongly connected
    components with more than one module, or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1 or module in graph.find_modules_directly_imported_by(module):
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "a.b", "a.c", "a.d"):
        graph.add_module(module)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.b")
    graph.add_import(importer="a.d", imported="a.b")
    assert import_cycles(graph) == [["a.b", "a.c"]]


def test_no_import_cycles_in_tuner_or_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    # Imports under `if TYPE_CHECKING:` count too: a cycle of types is a cycle of concepts.
    graph = grimp.build_graph("tuner", "tasks", include_external_packages=False,
                              exclude_type_checking_imports=False)
    assert "tuner.search.trial_loop" in graph.modules and "tasks.base" in graph.modules
    # The graph holds imports made inside functions (the runner imports the trial loop there).
    assert "tuner.search.trial_loop" in graph.find_modules_directly_imported_by(
        "tuner.search.runner")
    assert import_cycles(graph) == []


def test_the_layer_contracts_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("NO_COLOR", "1")
    assert lint_imports(config_filename=os.fspath(ROOT / "pyproject.toml")) == 0
