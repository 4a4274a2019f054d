"""Local Apptainer images, built without any container registry and cached.

- ``busybox``: Debian's busybox-static, its applets linked in ``/bin`` (sh, coreutils, wget).
- ``python``: Debian bookworm (Python 3.11, the client's minor version: cloudpickle ships
  bytecode) with the host environment's exact versions of dask, distributed, their
  dependencies and the analysis stack, from wheels.

Images are sandbox directories (``apptainer build --sandbox``): the job user runs them
through unprivileged user namespaces, where a SIF file would be unpacked at every start
(no FUSE for unprivileged users here).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from . import daemons, rootfs
from .errors import PoolError
from .host import run_step
from .state import PoolPaths

RECIPE_VERSION = 1
PYTHON_SUITE = "bookworm"
PYTHON_DEBS = "python3,python3-pip,python-is-python3,ca-certificates"
# Distributions whose versions the workers must share with the client: dask and distributed
# (with everything they pull in: cloudpickle, msgpack, tornado, toolz...) and the analysis stack.
REQUIRED_ROOTS = ("dask", "distributed")
OPTIONAL_ROOTS = (
    "numpy",
    "scipy",
    "pandas",
    "lz4",
    "uproot",
    "awkward",
    "dask-awkward",
    "hist",
    "vector",
)

# Docker-like: arguments are the command; no arguments runs the image's default program.
RUNSCRIPT = """\
if [ "$#" -gt 0 ]; then
    exec "$@"
fi
exec {default}
"""


def _def_file(stage: Path, default: str, environment: str = "") -> str:
    text = f"Bootstrap: localimage\nFrom: {stage}\n\n%runscript\n"
    text += "".join(f"    {line}\n" for line in RUNSCRIPT.format(default=default).splitlines())
    if environment:
        text += "\n%environment\n" + "".join(f"    {ln}\n" for ln in environment.splitlines())
    return text


# -- versions ----------------------------------------------------------------------------------


def requirement_closure(
    roots: Iterable[str],
    requires: Callable[[str], list[str] | None],
    version: Callable[[str], str | None],
) -> dict[str, str]:
    """``{name: version}`` of ``roots`` and everything they require (extras excluded, markers
    evaluated for this interpreter), for the distributions that are installed."""
    pins: dict[str, str] = {}
    todo = [canonicalize_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in pins:
            continue
        v = version(name)
        if v is None:
            continue
        pins[name] = v
        for spec in requires(name) or []:
            try:
                req = Requirement(spec)
            except InvalidRequirement:
                continue
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            todo.append(canonicalize_name(req.name))
    return dict(sorted(pins.items()))


def _installed_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _installed_requires(name: str) -> list[str] | None:
    try:
        return md.requires(name)
    except md.PackageNotFoundError:
        return None


def host_pins() -> dict[str, str]:
    """The host environment's versions of what the Python image must match."""
    for name in REQUIRED_ROOTS:
        if _installed_version(name) is None:
            raise PoolError(
                f"{name} is not installed in this Python environment ({sys.prefix}); the "
                "pool's Python image matches the client's Dask: pip install "
                "'interlink-htcondor[dask]'"
            )
    roots = [*REQUIRED_ROOTS, *(n for n in OPTIONAL_ROOTS if _installed_version(n))]
    return requirement_closure(roots, _installed_requires, _installed_version)


# -- cache -------------------------------------------------------------------------------------


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([RECIPE_VERSION, *parts], sort_keys=True).encode()).hexdigest()


def _stamp(paths: PoolPaths, name: str) -> Path:
    return paths.images / f"{name}.stamp.json"


def is_current(paths: PoolPaths, name: str, key: str) -> bool:
    try:
        data = json.loads(_stamp(paths, name).read_text())
    except (OSError, ValueError):
        return False
    return bool(data.get("key") == key and (paths.image(name) / ".singularity.d").is_dir())


def _write_stamp(paths: PoolPaths, name: str, key: str, extra: dict[str, object]) -> None:
    _stamp(paths, name).write_text(json.dumps({"key": key, **extra}, indent=2, sort_keys=True))


def _apptainer_build(
    paths: PoolPaths, init_pid: int, name: str, definition: str, log: Path
) -> None:
    """``apptainer build --sandbox`` as root inside the pool, then move the result in place."""
    work = paths.images / ".work"
    def_path = work / f"{name}.def"
    def_path.write_text(definition)
    new = paths.images / f".{name}.new"
    if new.exists():
        shutil.rmtree(new)
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    argv = ["apptainer", "build", "--sandbox", str(new), str(def_path)]
    with log.open("ab") as out:
        out.write(("\n$ " + " ".join(argv) + "\n").encode())
    r = daemons.run_in_namespace(
        init_pid,
        argv,
        user="root",
        cwd=str(work),
        env={"APPTAINER_TMPDIR": str(tmp)},
        timeout=1800,
    )
    with log.open("ab") as out:
        out.write(r.stdout + r.stderr)
    if r.returncode != 0:
        last = (r.stderr or r.stdout).decode(errors="replace").strip().splitlines()[-1:]
        raise PoolError(f"apptainer build of the {name} image failed: {last} (log: {log})")
    final = paths.image(name)
    if final.exists():
        shutil.rmtree(final)
    new.rename(final)
    final.chmod(0o755)


# -- busybox -----------------------------------------------------------------------------------


def busybox_key() -> str:
    return _key("busybox")


def python_key(pins: dict[str, str]) -> str:
    return _key("python", PYTHON_SUITE, PYTHON_DEBS, pins)


def all_current(paths: PoolPaths) -> bool:
    """Every image is built and matches this environment (cheap: no build, no network)."""
    return is_current(paths, "busybox", busybox_key()) and is_current(
        paths, "python", python_key(host_pins())
    )


def build_busybox(paths: PoolPaths, init_pid: int) -> Path:
    key = busybox_key()
    if is_current(paths, "busybox", key):
        return paths.image("busybox")
    log = paths.build_logs / "image-busybox.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    work = paths.images / ".work"
    dl = work / "busybox-deb"
    for d in (dl, work / "busybox"):
        if d.exists():
            shutil.rmtree(d)
    dl.mkdir(parents=True)
    r = daemons.run_in_namespace(
        init_pid,
        ["apt-get", "download", "-q", "busybox-static"],
        user="root",
        cwd=str(dl),
        timeout=600,
    )
    with log.open("ab") as out:
        out.write(r.stdout + r.stderr)
    debs = sorted(dl.glob("busybox-static_*.deb"))
    if r.returncode != 0 or not debs:
        raise PoolError(f"could not download busybox-static from the mirror (log: {log})")
    extracted = dl / "x"
    run_step(["dpkg-deb", "-x", str(debs[0]), str(extracted)], log, "unpacking busybox-static")
    binary = next(
        (p for p in (extracted / "usr/bin/busybox", extracted / "bin/busybox") if p.exists()), None
    )
    if binary is None:
        raise PoolError("busybox-static has no busybox binary")
    stage = _busybox_stage(work / "busybox", binary)
    _apptainer_build(paths, init_pid, "busybox", _def_file(stage, "/bin/sh"), log)
    shutil.rmtree(stage)
    shutil.rmtree(dl)
    _write_stamp(paths, "busybox", key, {"from": debs[0].name})
    return paths.image("busybox")


def _open_root(stage: Path) -> None:
    """Let the job user through the image's /root: Apptainer creates bind points (the job's
    directory, e.g. under /root/.cache/interlink-htcondor) inside the image's tree."""
    (stage / "root").chmod(0o755)


def _busybox_stage(stage: Path, binary: Path) -> Path:
    (stage / "bin").mkdir(parents=True)
    shutil.copy2(binary, stage / "bin" / "busybox")
    applets = subprocess.run(
        [str(stage / "bin" / "busybox"), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            (stage / "bin" / applet).symlink_to("busybox")
    (stage / "sbin").symlink_to("bin")
    (stage / "usr").mkdir()
    (stage / "usr" / "bin").symlink_to("../bin")
    (stage / "usr" / "sbin").symlink_to("../bin")
    for d in ("etc", "root", "home", "proc", "sys", "dev", "var", "tmp"):
        (stage / d).mkdir(exist_ok=True)
    (stage / "tmp").chmod(0o1777)
    (stage / "root").chmod(0o755)  # see _open_root
    (stage / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (stage / "etc" / "group").write_text("root:x:0:\n")
    return stage


# -- python ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PythonStage:
    """A prepared (not yet packed) python image root."""

    stage: Path
    key: str
    pins: dict[str, str]


def prepare_python(paths: PoolPaths, mirror: str) -> PythonStage | None:
    """Everything of the python image that needs no pool: wheels, a bookworm root with them
    installed. None when the built image is current. Runs while the pool's root fs is built."""
    pins = host_pins()
    key = python_key(pins)
    if is_current(paths, "python", key):
        return None
    log = paths.build_logs / "image-python.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    specs = [f"{n}=={v}" for n, v in pins.items()]
    wheels = paths.build / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    run_step(
        [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
         "-d", str(wheels), *specs],
        log,
        "downloading wheels for the python image",
        hint="is PyPI reachable?",
    )  # fmt: skip
    stage = paths.images / ".work" / "python"
    stage.parent.mkdir(parents=True, exist_ok=True)
    rootfs.debootstrap(stage, PYTHON_SUITE, mirror, log, include=PYTHON_DEBS)
    inside = stage / "tmp" / "wheels"
    shutil.copytree(wheels, inside)
    run_step(
        rootfs.chroot_argv(stage, "python3", "-m", "pip", "install", "-q", "--no-index",
                           "--no-deps", "--no-cache-dir", "--break-system-packages",
                           "--root-user-action=ignore", "--find-links", "/tmp/wheels", *specs),
        log,
        "installing dask and the analysis stack in the python image",
        env=rootfs.CHROOT_ENV,
    )  # fmt: skip
    shutil.rmtree(inside)
    run_step(rootfs.chroot_argv(stage, "apt-get", "clean"), log, "apt-get clean",
             env=rootfs.CHROOT_ENV)  # fmt: skip
    for lists in (stage / "var" / "lib" / "apt" / "lists").glob("*_*"):
        lists.unlink()
    (stage / "usr" / "sbin" / "policy-rc.d").unlink(missing_ok=True)
    _open_root(stage)
    return PythonStage(stage, key, pins)


def finish_python(paths: PoolPaths, init_pid: int, prepared: PythonStage) -> Path:
    """Pack a prepared python root into the image, inside the running pool."""
    log = paths.build_logs / "image-python.log"
    definition = _def_file(prepared.stage, "python3", "export LC_ALL=C.UTF-8")
    _apptainer_build(paths, init_pid, "python", definition, log)
    shutil.rmtree(prepared.stage)
    _write_stamp(paths, "python", prepared.key, {"suite": PYTHON_SUITE, "pins": prepared.pins})
    return paths.image("python")


def build_python(paths: PoolPaths, init_pid: int, mirror: str) -> Path:
    prepared = prepare_python(paths, mirror)
    return finish_python(paths, init_pid, prepared) if prepared else paths.image("python")


def build_all(paths: PoolPaths, init_pid: int, mirror: str) -> dict[str, Path]:
    paths.images.mkdir(parents=True, exist_ok=True)
    paths.images.chmod(0o755)
    return {
        "busybox": build_busybox(paths, init_pid),
        "python": build_python(paths, init_pid, mirror),
    }
