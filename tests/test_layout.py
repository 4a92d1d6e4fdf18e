"""The shape of src/rpgen stays as ARCHITECTURE.md draws it: only entry points (and the modules it
justifies) at the top, short modules and functions, no name of a standard-library module, a mirror
test module for every module (or a reason in ARCHITECTURE.md), and comments without history."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import rpgen

PACKAGE = Path(rpgen.__file__).parent
ROOT = PACKAGE.parents[1]
TESTS = ROOT / "tests"
ARCHITECTURE = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
ENTRY_POINTS = {"__init__", "api", "cli", "config", "errors"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def section(title: str) -> str:
    """The text of one ``## title`` section of ARCHITECTURE.md."""
    start = ARCHITECTURE.index(f"## {title}")
    end = ARCHITECTURE.find("\n## ", start + 1)
    return ARCHITECTURE[start:end if end != -1 else None]


def test_only_entry_points_and_the_justified_modules_sit_at_the_top():
    top = {p.stem for p in PACKAGE.glob("*.py")} - ENTRY_POINTS
    justified = set(re.findall(r"^- `([a-z_]+)\.py`", section("Top-level modules"), re.M))
    assert len(justified) <= 3 and top == justified, (top, justified)


def test_no_module_over_400_lines_and_no_function_over_80():
    too_long = []
    for path in modules():
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(PACKAGE.parent)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, too_long


def test_no_module_is_named_like_a_standard_library_module():
    names = {p: p.parent.name if p.stem == "__init__" else p.stem for p in modules()}
    clashes = [p.relative_to(PACKAGE.parent) for p, name in names.items() if name in sys.stdlib_module_names]
    assert not clashes, clashes


def mirror(path: Path) -> Path:
    """``rpgen/a/b.py`` -> ``tests/a/test_b.py``; ``rpgen/x.py`` -> ``tests/test_x.py``."""
    relative = path.relative_to(PACKAGE)
    return TESTS.joinpath(*relative.parts[:-1], f"test_{path.stem}.py")


def test_every_module_has_a_mirror_test_or_a_reason():
    unmirrored = set(re.findall(r"^- `(rpgen/[\w/]+\.py)`", section("Modules without a mirror test"), re.M))
    missing = {f"rpgen/{p.relative_to(PACKAGE).as_posix()}" for p in modules()
               if p.name != "__init__.py" and not mirror(p).is_file()}
    assert missing == unmirrored, (sorted(missing - unmirrored), sorted(unmirrored - missing))
    packages = {p.parent for p in modules() if p.name != "__init__.py" and p.parent != PACKAGE}  # with code
    assert all(TESTS.joinpath(*p.relative_to(PACKAGE).parts).is_dir() for p in packages)  # tests/ mirrors src/rpgen


def test_comments_state_intent_not_history():
    history = re.compile(r"issue [0-9]|commit [0-9a-f]{7}|DESIGN\.md|measured by hand|before this setting")
    found = [f"{p.relative_to(PACKAGE.parent)}:{i}: {line.strip()}" for p in modules()
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if history.search(line)]
    assert not found, found
