"""Imports point one way. `lint-imports` (.importlinter, run by `dev.py test` before pytest) holds the packages to
their layers; it cannot place the single-file modules at the root, so this test does, from the `ast` of every
module (bench/structure.py reads the graph): each import goes to the same layer or a lower one, no module imports
an entry point, no production module reaches the sandbox, no import cycle exists among all the modules (imports
inside functions included; those under `if TYPE_CHECKING:`, which never run, left out), and no module imports the
project inside a function (bench.structure.TOOL_FILES are the files tools load, which may)."""
from __future__ import annotations

import pytest

from bench.structure import ImportGraph, strongly_connected

# Low to high (docs/architecture.md). Packages and single-file modules alike.
LAYERS = {
    "infra": 0,
    "models": 1, "database": 1, "migrate": 1,
    "ledger": 2,
    "chain": 3, "delivery": 3, "ops": 3, "tron_client": 3,
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


def test_no_import_cycle_among_all_modules(graph: ImportGraph) -> None:
    assert graph.cycles() == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
