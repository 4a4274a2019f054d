"""Imports point only down the layers: cli -> service -> core -> settings, and
dask -> client -> core. Every import of the project in every module (including imports
inside functions) is checked against what its layer may use."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "interlink_htcondor"
TOP = "interlink_htcondor"

# Layer -> the layers it may import (its own included). The package's __init__ (the
# version and the annotation prefix) is below everything.
ALLOWED: dict[str, set[str]] = {
    "settings": {"settings"},
    "core": {"core", "settings"},
    "service": {"service", "core", "settings"},
    "client": {"client"},
    "dask": {"dask", "client", "core"},
    "devpool": {"devpool"},
    "devcluster": {"devcluster", "devpool"},
    "jobside": set(),  # the job wrapper: the standard library only
    "local_plugin": {"local_plugin", "devpool"},
    # The personal JupyterHub: the pool, and a plugin's jobs cleared through local_plugin.
    "devhub": {"devhub", "devpool", "local_plugin"},
    "cli": {
        "cli",
        "service",
        "core",
        "settings",
        "client",
        "devpool",
        "devcluster",
        "devhub",
        "dask",
        "local_plugin",
    },
    "__main__": {"cli"},
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def project_imports(path: Path, module: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith(TOP)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == TOP:  # `from interlink_htcondor import x`: x is the module
                found += [(node.lineno, f"{TOP}.{a.name}") for a in node.names]
            elif target.startswith(TOP):
                found.append((node.lineno, target))
    return found


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        out.append((name.removesuffix(".__init__"), path))
    return out


@pytest.mark.parametrize("module,path", modules(), ids=[m for m, _ in modules()])
def test_imports_point_down(module: str, path: Path) -> None:
    own = layer_of(module)
    if own == "":
        return  # the package's __init__: imports nothing of the project
    allowed = ALLOWED[own]
    for line, target in project_imports(path, module):
        layer = layer_of(target)
        # The package root itself (ANNOTATION_PREFIX, __version__) is below every layer.
        if layer in ("", "ANNOTATION_PREFIX", "__version__"):
            continue
        assert layer in allowed, f"{path.name}:{line} ({own}) imports {target} ({layer})"


def test_every_layer_is_known() -> None:
    assert {layer_of(m) for m, _ in modules()} - {""} <= set(ALLOWED)
