"""The shape of the code, from the `ast` of every module: how many modules sit at the root, how many packages there
are, the longest module, the imports of the project placed inside functions, the largest import cycle, the README's
length. `python -m bench.structure [ROOT]` prints them as JSON for a checkout at ROOT (this one by default), so two
commits compare (`git worktree add /tmp/before <commit>`). tests/test_layers.py holds the graph to its layers with
the same reader."""
from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Not the project's modules: the tests, the benchmarks, the migrations (run by Alembic), and what tools keep.
SKIPPED = {".venv", ".data", ".git", "tests", "bench", "migrations", "node_modules", "deploy", "docs"}
# Files a tool loads, not modules of the project: gunicorn's configuration, the developer's task runner.
TOOL_FILES = {"gunicorn.conf.py", "dev.py"}


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the project by dotted name (a package by its `__init__`), tool files excluded."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if set(relative.parts) & SKIPPED or relative.name in TOOL_FILES:
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    in_function: bool


class ImportGraph:
    """Which project module imports which, read from the source (nothing is imported). Imports under
    `if TYPE_CHECKING:` are left out: they never run."""

    def __init__(self, root: Path = ROOT) -> None:
        self.modules = module_files(root)
        self.edges = [edge for module, path in self.modules.items() for edge in self.imports(module, path)
                      if edge.target != module]

    def resolve(self, name: str) -> str | None:
        """The project module an imported name is (or is in), or None for a module from elsewhere."""
        while name:
            if name in self.modules:
                return name
            name = name.rpartition(".")[0]
        return None

    def imports(self, module: str, path: Path) -> Iterator[Edge]:
        is_package = path.name == "__init__.py"

        def walk(node: ast.AST, in_function: bool) -> Iterator[Edge]:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and ast.unparse(child.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                    continue
                inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        if (target := self.resolve(alias.name)) is not None:
                            yield Edge(module, target, child.lineno, inside)
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:  # relative to the module's own package
                        package = module.split(".")
                        package = package[: len(package) - child.level + is_package]
                        base = ".".join([*package, *([base] if base else [])])
                    for alias in child.names:
                        target = self.resolve(f"{base}.{alias.name}") or self.resolve(base)
                        if target is not None:
                            yield Edge(module, target, child.lineno, inside)
                yield from walk(child, inside)

        yield from walk(ast.parse(path.read_text(encoding="utf-8")), False)

    def cycles(self) -> list[list[str]]:
        graph: dict[str, set[str]] = {module: set() for module in self.modules}
        for edge in self.edges:
            graph[edge.source].add(edge.target)
        return strongly_connected(graph)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one node: the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def measure(root: Path = ROOT) -> dict[str, object]:
    graph = ImportGraph(root)
    lines = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in graph.modules.items()}
    longest = max(lines, key=lines.__getitem__)
    cycles = graph.cycles()
    return {
        "modules_at_root": len([p for p in root.glob("*.py")]),
        "packages": sorted(name for name, path in graph.modules.items() if path.name == "__init__.py"),
        "modules": len(graph.modules),
        "lines": sum(lines.values()),
        "longest_module": {"module": longest, "lines": lines[longest]},
        "modules_over_600_lines": sorted(name for name, n in lines.items() if n > 600),
        "project_imports_inside_functions": sum(edge.in_function for edge in graph.edges),
        "largest_cycle": max((len(c) for c in cycles), default=0),
        "cycles": cycles,
        "readme_lines": len((root / "README.md").read_text(encoding="utf-8").splitlines()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=ROOT, help="a checkout of the project")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.root.resolve()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
