"""Imports point one way. `lint-imports` (.importlinter, run by `dev.py test` before pytest) holds the packages to
their layers; it cannot place the single-file modules at the root, so this test does, from the `ast` of every
module (bench/structure.py reads the graph): each import goes to the same layer or a lower one, no module imports
an entry point, no production module reaches the sandbox, no import cycle exists among all the modules (imports
inside functions included; those under `if TYPE_CHECKING:`, which never run, left out), no module imports the
project inside a function (bench.structure.TOOL_FILES are the files tools load, which may), and every name is
imported from the module that defines it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bench.structure import ImportGraph, strongly_connected

# Low to high (docs/architecture.md). Packages and single-file modules alike.
LAYERS = {
    "infra": 0,
    "models": 1, "database": 1, "migrate": 1,
    "deposits": 2,  # below ledger (.importlinter holds the finer order)
    "notify": 2,  # below ledger, beside deposits
    "ledger": 2,
    "chain": 3, "delivery": 3, "ops": 3, "rates": 3, "console": 3, "tron_client": 3,
    "web": 4,
    "tron_sim": 5,
    "sandbox": 6,
    "watcher": 7,  # the standalone worker's composition root
    "app": 8, "db_manager": 8,  # the app's composition root; the admin CLI
}
ENTRY_POINTS = {"app", "watcher", "db_manager"}
SANDBOX = {"sandbox", "tron_sim"}


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return ImportGraph()


def layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def test_every_module_has_a_layer(graph: ImportGraph) -> None:
    assert sorted({m.split(".")[0] for m in graph.modules} - set(LAYERS)) == []


def test_imports_point_down(graph: ImportGraph) -> None:
    upward = [f"{e.source} (layer {layer(e.source)}) imports {e.target} (layer {layer(e.target)}) at line {e.line}"
              for e in graph.edges if layer(e.target) > layer(e.source)]
    assert upward == []


def test_no_module_imports_an_entry_point_and_production_never_reaches_the_sandbox(graph: ImportGraph) -> None:
    wrong = [f"{e.source} imports {e.target}" for e in graph.edges
             if (e.target in ENTRY_POINTS and e.source.split(".")[0] not in ENTRY_POINTS)
             or (e.target.split(".")[0] in SANDBOX and layer(e.source) < LAYERS["tron_sim"])]
    assert wrong == []


def test_no_import_inside_a_function(graph: ImportGraph) -> None:
    inside = [f"{e.source} imports {e.target} at line {e.line}" for e in graph.edges if e.in_function]
    assert inside == []


def defined_names(path: Path) -> set[str]:
    """What a module defines at its top level (functions, classes, assigned names)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_every_name_is_imported_from_its_home(graph: ImportGraph) -> None:
    """One concept, one home: `from m import name` names the module that defines `name`, never one that imported
    it from elsewhere (which would make that module a second address for it)."""
    homes = {module: defined_names(path) for module, path in graph.modules.items()}
    through = []
    for module, path in graph.modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module in graph.modules:
                through += [f"{module}:{node.lineno} takes {alias.name} through {node.module}"
                            for alias in node.names if alias.name not in homes[node.module]
                            and f"{node.module}.{alias.name}" not in graph.modules]
    assert through == []


def test_no_import_cycle_among_all_modules(graph: ImportGraph) -> None:
    assert graph.cycles() == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
