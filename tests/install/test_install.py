"""The wheel, installed as a site would: into fresh virtualenvs, at the locked versions.

- the base install (no extras) is the plugin and its CLI, and nothing of Dask or the
  Kubernetes client: ``serve --help`` and ``render`` work, ``import dask`` fails;
- ``[dask]`` brings everything ``interlink_htcondor.dask`` imports: every public name loads.

Slow (pip into new virtualenvs; the pip cache makes it minutes, not more) and needs the
package index or a warm pip cache; no pool.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints.txt"
POD = ROOT / "tests" / "pods" / "exit-42.yaml"

pytestmark = pytest.mark.install


def run(argv: list[str | Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=900)


def check(argv: list[str | Path]) -> str:
    r = run(argv)
    assert r.returncode == 0, f"{argv} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: setuptools writes build/ and *.egg-info into the tree it builds.
    tree = tmp_path_factory.mktemp("tree")
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("src", "analysis"):
        shutil.copytree(ROOT / name, tree / name, ignore=junk)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip"]
    check([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, tree])
    (built,) = out.glob("interlink_htcondor-*.whl")
    return built


def fresh_venv(where: Path, requirement: str) -> Path:
    """A new virtualenv with ``requirement`` installed at the locked versions; its bin/."""
    check([sys.executable, "-m", "venv", where])
    check([where / "bin" / "pip", "install", "-q", "-c", CONSTRAINTS, requirement])
    return where / "bin"


def test_base_install_is_the_plugin_without_dask(wheel: Path, tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path / "venv", str(wheel))
    out = check([bin_dir / "interlink-htcondor", "serve", "--help"])
    assert "usage: interlink-htcondor serve" in out
    # The core translates a pod without the Kubernetes client (its own quantity parser).
    spec = check([bin_dir / "interlink-htcondor", "render", POD, "--no-pool-defaults"])
    assert "request_memory" in spec
    for module in ("dask", "distributed", "kubernetes", "dask_kubernetes", "kr8s"):
        r = run([bin_dir / "python", "-c", f"import {module}"])
        assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, module
    # What a site's probe runs: the plugin is not up, so exit 1 with the reason.
    r = run([bin_dir / "interlink-htcondor", "healthcheck", "--url", "http://127.0.0.1:9"])
    assert r.returncode == 1 and "healthcheck: /healthz" in r.stderr


def test_dask_extra_imports_every_public_name(wheel: Path, tmp_path: Path) -> None:
    from interlink_htcondor import dask as local  # this checkout's list of public names

    bin_dir = fresh_venv(tmp_path / "venv", f"{wheel}[dask]")
    code = (
        "import interlink_htcondor.dask as d\n"
        "for name in d.__all__:\n"
        "    getattr(d, name)  # VirtualNodeCluster & co. import dask-kubernetes, kr8s...\n"
        "print(*d.__all__)\n"
    )
    out = check([bin_dir / "python", "-c", code])
    assert out.split() == list(local.__all__)
    assert "VirtualNodeCluster" in out
