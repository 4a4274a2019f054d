"""Building the Go components, cached by version.

- Kubernetes' commands from ``k8s.io/kubernetes`` through a generated build module (see
  ``gomod``), with the version stamped in as Kubernetes' own release build does;
- interLink's API server and virtual kubelet inside a writable copy of the downloaded
  ``github.com/interlink-hq/interlink`` module (its go.mod replaces virtual-kubelet with a
  fork, which ``go install`` refuses).

Binaries land in ``<cluster>/bin/<component>-<version>/`` behind a stamp file; the Go module
and build caches (``GOMODCACHE``, ``GOCACHE``: Go's defaults) stay warm across rebuilds.
Build output goes to ``<cluster>/logs/build-<component>.log``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import gomod, versions
from .errors import ClusterError
from .processes import tail
from .state import ClusterPaths

STAMP = ".complete"
BUILD_TIMEOUT = 3600.0


def go_command() -> str:
    """The ``go`` command: on PATH, else the official tarball's place."""
    found = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if found is None:
        raise ClusterError(
            "the Go toolchain (go 1.24 or newer) is needed to build the cluster's components; "
            "install it and put `go` on PATH"
        )
    return found


def go_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CGO_ENABLED="0", GOFLAGS="-mod=mod -buildvcs=false", GOTOOLCHAIN="local")
    env.update(extra or {})
    return env


def run_step(
    argv: Sequence[str],
    log: Path,
    what: str,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = BUILD_TIMEOUT,
) -> str:
    """Run one step with its output appended to ``log``; return its stdout. A failure is a
    one-line ClusterError naming the step, the log, and the log's last line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n[{time.strftime('%H:%M:%S')}] $ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                list(argv),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=out,
                env=None if env is None else dict(env),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise ClusterError(f"{what} timed out after {timeout:.0f} s (log: {log})") from e
        except OSError as e:
            raise ClusterError(f"{what} failed: {e.strerror}: {argv[0]}") from e
        out.write(proc.stdout)
    if proc.returncode != 0:
        raise ClusterError(f"{what} failed (exit {proc.returncode}): {tail(log, 1)!r} (log: {log})")
    return proc.stdout.decode(errors="replace")


def is_built(bin_dir: Path, commands: Sequence[str]) -> bool:
    return (bin_dir / STAMP).exists() and all((bin_dir / c).is_file() for c in commands)


def _install(partial: Path, final: Path, stamp: Mapping[str, Any]) -> None:
    (partial / STAMP).write_text(json.dumps(dict(stamp), indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)


def module_download(module: str, version: str, log: Path) -> dict[str, Any]:
    """``go mod download -json MODULE@VERSION``: its Dir, GoMod, Origin..."""
    out = run_step(
        [go_command(), "mod", "download", "-json", f"{module}@{version}"],
        log,
        f"downloading the Go module {module}@{version}",
        env=go_env(),
        timeout=1200,
    )
    try:
        info: dict[str, Any] = json.loads(out)
    except ValueError as e:
        raise ClusterError(f"unexpected `go mod download -json` output (log: {log})") from e
    if info.get("Error"):
        raise ClusterError(f"the Go module proxy refused {module}@{version}: {info['Error']}")
    return info


def _ldflags(values: Mapping[str, str]) -> str:
    return " ".join(["-s", "-w", *(f"-X {k}={v}" for k, v in values.items())])


def kubernetes_version_ldflags(version: str, commit: str = "") -> dict[str, str]:
    """What Kubernetes' release build stamps into ``component-base/version`` and client-go's
    copy of it, so that ``/version`` reports the release (Helm and kubectl read it)."""
    major, minor = version.lstrip("v").split(".")[:2]
    values = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitCommit": commit,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    out = {}
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        for k, v in values.items():
            out[f"{pkg}.{k}"] = v
    return out


def build_kubernetes(paths: ClusterPaths, version: str = versions.KUBERNETES) -> Path:
    """kube-apiserver, kube-controller-manager, kube-scheduler and kubectl at ``version``."""
    final = paths.bin_dir("kubernetes", version)
    commands = versions.KUBERNETES_COMMANDS
    if is_built(final, commands):
        return final
    log = paths.logs / "build-kubernetes.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    t0 = time.monotonic()
    go = go_command()
    info = module_download(versions.KUBERNETES_MODULE, version, log)
    upstream = Path(info["GoMod"]).read_text()
    work = paths.build / f"kubernetes-{version}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        (work / "go.mod").write_text(gomod.build_go_mod(upstream, version))
    except ValueError as e:
        raise ClusterError(
            f"cannot make a build module from k8s.io/kubernetes {version}: {e}"
        ) from e
    (work / "go.sum").unlink(missing_ok=True)
    packages = [f"{versions.KUBERNETES_MODULE}/cmd/{c}" for c in commands]
    (work / "tools.go").write_text(gomod.tools_go(packages))
    env = go_env()
    run_step(
        [go, "mod", "tidy"], log, "go mod tidy of the Kubernetes build module", cwd=work, env=env
    )
    partial = paths.bin / f".kubernetes-{version}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    commit = str((info.get("Origin") or {}).get("Hash", ""))
    flags = _ldflags(kubernetes_version_ldflags(version, commit))
    run_step(
        [go, "build", "-trimpath", f"-ldflags={flags}", "-o", f"{partial}/", *packages],
        log,
        f"building Kubernetes {version} ({', '.join(commands)})",
        cwd=work,
        env=env,
    )
    _install(
        partial,
        final,
        {
            "module": versions.KUBERNETES_MODULE,
            "version": version,
            "commit": commit,
            "seconds": round(time.monotonic() - t0, 1),
        },
    )
    return final


def _make_writable(root: Path) -> None:
    """Module cache copies are read-only; the build writes go.sum beside go.mod."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | stat.S_IWUSR)
    root.chmod(root.stat().st_mode | stat.S_IWUSR)


def build_interlink(paths: ClusterPaths, version: str = versions.INTERLINK) -> Path:
    """interLink's API server (``interlink``) and virtual kubelet at ``version``."""
    final = paths.bin_dir("interlink", version)
    commands = versions.INTERLINK_COMMANDS
    if is_built(final, commands):
        return final
    log = paths.logs / "build-interlink.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    t0 = time.monotonic()
    go = go_command()
    info = module_download(versions.INTERLINK_MODULE, version, log)
    src = paths.build / f"interlink-{version}"
    if src.exists():
        shutil.rmtree(src)
    src.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(info["Dir"], src, symlinks=True)
    _make_writable(src)
    partial = paths.bin / f".interlink-{version}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    flags = _ldflags({versions.INTERLINK_VERSION_SYMBOL: version})
    run_step(
        [
            go,
            "build",
            "-trimpath",
            f"-ldflags={flags}",
            "-o",
            f"{partial}/",
            *(f"./cmd/{c}" for c in commands),
        ],
        log,
        f"building interLink {version} ({', '.join(commands)})",
        cwd=src,
        env=go_env(),
    )
    commit = str((info.get("Origin") or {}).get("Hash", ""))
    _install(
        partial,
        final,
        {
            "module": versions.INTERLINK_MODULE,
            "version": version,
            "commit": commit,
            "seconds": round(time.monotonic() - t0, 1),
        },
    )
    return final
