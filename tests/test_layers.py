"""Imports point one way. `lint-imports` (.importlinter, run by `dev.py test` before pytest) holds the packages to
their layers; it cannot place the single-file modules at the root, so this test does, from the `ast` of every
module: each import goes to the same layer or a lower one, no module imports an entry point, no production module
reaches the sandbox, no import cycle exists among all the modules (imports inside functions included; those under
`if TYPE_CHECKING:`, which never run, left out), and no module imports the project inside a function (the tool
files say why theirs do)."""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

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
# Files tools load: gunicorn reads its configuration in the master, which must not import the project (a HUP's new
# workers load the code as it is now; the master stays small): every project import there is inside a hook.
TOOL_FILES = {"gunicorn.conf.py": "gunicorn's master must not import the project: its hooks import what they run",
              "dev.py": "standard library only: it runs before the virtualenv exists"}
SKIPPED = {".venv", ".data", "tests", "bench", "migrations", "node_modules", "deploy", "docs"}


def module_files() -> dict[str, Path]:
    """Every module of the project by dotted name (packages by their `__init__`), tool files excluded."""
    found = {}
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if set(relative.parts) & SKIPPED or relative.name in TOOL_FILES:
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = module_files()


def resolve(name: str) -> str | None:
    """The project module an imported name is (or is in), or None for a module from elsewhere."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(path: Path, module: str) -> Iterator[tuple[str, int, bool]]:
    """(the project module imported, line, whether inside a function) for every import of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                continue  # for the type checker only: never run, so no dependency at import time
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if (target := resolve(alias.name)) is not None:
                        yield target, child.lineno, inside
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the module's own package
                    package = module.split(".")[: len(module.split(".")) - child.level + (path.name == "__init__.py")]
                    base = ".".join([*package, *([base] if base else [])])
                for alias in child.names:
                    target = resolve(f"{base}.{alias.name}") or resolve(base)
                    if target is not None:
                        yield target, child.lineno, inside
            yield from walk(child, inside)

    yield from walk(tree, False)


def edges() -> list[tuple[str, str, int, bool]]:
    return [(module, target, line, inside) for module, path in MODULES.items()
            for target, line, inside in imports(path, module) if target != module]


def layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def test_every_module_has_a_layer() -> None:
    assert sorted({m.split(".")[0] for m in MODULES} - set(LAYERS)) == []


def test_imports_point_down() -> None:
    upward = [f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)}) at line {line}"
              for source, target, line, _ in edges() if layer(target) > layer(source)]
    assert upward == []


def test_no_module_imports_an_entry_point_and_production_never_reaches_the_sandbox() -> None:
    wrong = [f"{source} imports {target}" for source, target, _, _ in edges()
             if (target in ENTRY_POINTS and source.split(".")[0] not in ENTRY_POINTS)
             or (target.split(".")[0] in SANDBOX and layer(source) < LAYERS["tron_sim"])]
    assert wrong == []


def test_no_import_inside_a_function() -> None:
    """The project's modules import each other at their top; the tool files say why they do not (TOOL_FILES)."""
    inside = [f"{source} imports {target} at line {line}" for source, target, line, nested in edges() if nested]
    assert inside == []


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_all_modules() -> None:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for source, target, _, _ in edges():
        graph[source].add(target)
    assert strongly_connected(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
