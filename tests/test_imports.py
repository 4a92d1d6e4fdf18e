"""The import graphs have no cycles: src/rpgen module by module and wing by wing, and bench/, where
no script imports another script; and every rpgen module imports on its own."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import rpgen

PACKAGE = Path(rpgen.__file__).parent
BENCH = PACKAGE.parents[1] / "bench"
BENCH_SHARED = "common"
"""The bench/ module of shared helpers; it is also the command that checks the results files."""


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(tree: ast.AST) -> set[str]:
    """Every module an import in ``tree`` names (``from pkg import mod``: pkg and pkg.mod), lazy
    imports included; ``if TYPE_CHECKING:`` blocks are left out (they never run)."""
    names: set[str] = set()
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
               for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph() -> dict[str, set[str]]:
    """rpgen module -> the rpgen modules importing it runs: those it names, and the package
    ``__init__`` of each that the importer is not itself inside (importing ``a.b.c`` from outside
    ``a.b`` runs ``a/b/__init__.py`` first)."""
    modules = {module_name(p, PACKAGE.parent): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        parts = name.split(".")
        inside = {".".join(parts[:i]) for i in range(1, len(parts) + (path.name == "__init__.py"))}
        targets = set()
        for target in imported_names(ast.parse(path.read_text(encoding="utf-8"))):
            if target in modules:
                steps = target.split(".")
                targets |= {target} | {p for p in (".".join(steps[:i]) for i in range(2, len(steps)))
                                       if p not in inside}
        graph[name] = targets - {name}
    return graph


def wing(module: str) -> str:
    """The part of rpgen a module belongs to: its subpackage, or the top-level module itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_type_checking_imports_are_left_out():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rpgen.x import Y\nimport rpgen.z\n")
    assert imported_names(tree) == {"typing", "typing.TYPE_CHECKING", "rpgen.z"}


def test_no_import_cycles():
    graph = import_graph()
    assert "rpgen.methods.rpg" in graph and "rpgen.training.trainer" in graph
    assert "rpgen.generation" in graph["rpgen.api"]  # importing a module from outside runs its package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_wings_import_each_other_one_way():
    """Data flows one way: no subpackage (or top-level module) imports one that imports it back."""
    wings: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        wings.setdefault(wing(module), set()).update(wing(t) for t in targets if wing(t) != wing(module))
    assert find_cycle(wings) is None, " -> ".join(find_cycle(wings))


def bench_graph() -> dict[str, set[str]]:
    """bench/ module -> the bench/ modules it imports (scripts import each other by bare name)."""
    modules = {p.stem: p for p in BENCH.glob("*.py")}
    return {name: {t for t in imported_names(ast.parse(path.read_text(encoding="utf-8"))) if t in modules}
            for name, path in modules.items()}


def bench_scripts() -> set[str]:
    """The bench/ files run as ``python bench/NAME.py`` (a ``__main__`` block), common.py aside."""
    return {p.stem for p in BENCH.glob("*.py") if "__main__" in p.read_text(encoding="utf-8")} - {BENCH_SHARED}


def test_bench_has_no_cycles_and_no_script_imports_another_script():
    graph, scripts = bench_graph(), bench_scripts()
    assert {"diverse", "peers", "readme_results"} <= scripts and "wide_mlp" not in scripts
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    for name, targets in graph.items():
        assert not targets & scripts, f"bench/{name}.py imports the script(s) {sorted(targets & scripts)}"


@pytest.mark.slow
def test_every_module_imports_alone():
    """Each module in a fresh interpreter, so a module that works only after another is caught
    (slow: one interpreter per module)."""
    names = sorted(import_graph())
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    for name in names:  # one process per module: nothing imported before it
        result = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True)
        assert result.returncode == 0, (name, result.stderr[-2000:])
    assert importlib.import_module("rpgen.methods").METHODS
