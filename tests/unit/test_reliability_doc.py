"""``docs/reliability.md`` stays true to the suite: every test it names exists (by path, by
file name, or by test name alone), and every bound it quotes as `` `module.NAME` = value ``
is that constant's value in the test module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
TESTS = ROOT / "tests"


def _module_file(name: str) -> Path:
    found = [p for p in TESTS.rglob(f"{name}.py")]
    assert len(found) == 1, f"test module {name} not found (or ambiguous): {found}"
    return found[0]


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def _constant(path: Path, name: str) -> object:
    for node in ast.parse(path.read_text()).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == name
        ):
            return eval(compile(ast.Expression(node.value), str(path), "eval"), {})
    raise AssertionError(f"{path.name} has no constant {name}")


def test_every_named_test_exists() -> None:
    text = DOC.read_text()
    # `tests/x/file.py::name` or `file.py::name`, and `::name` continuing the last file named.
    refs = re.findall(r"`((?:tests/[\w/]+|\w+)\.py)?::(\w+)`", text)
    assert len(refs) >= 20
    current = None
    for file, name in refs:
        if file:
            current = ROOT / file if "/" in file else _module_file(file.removesuffix(".py"))
        assert current is not None and current.is_file(), file
        assert name in _functions(current), f"{current.relative_to(ROOT)}::{name} is gone"


def test_every_test_named_alone_exists() -> None:
    # `test_name` alone, in the tables: it must be some test module's function.
    names = set(re.findall(r"`(test_\w+)`", DOC.read_text()))
    assert len(names) >= 10
    defined: set[str] = set()
    for path in TESTS.rglob("test_*.py"):
        defined |= _functions(path)
    assert sorted(names - defined) == []


def test_every_quoted_bound_is_the_tests_own() -> None:
    quoted = re.findall(r"`(\w+)\.([A-Z_]+)` = ([\d.]+)", DOC.read_text())
    assert len(quoted) >= 8
    for module, name, value in quoted:
        actual = _constant(_module_file(module), name)
        assert float(value) == float(actual), f"{module}.{name} is {actual}, the doc says {value}"  # type: ignore[arg-type]
