"""etcd from Debian sid's ``etcd-server`` package, fetched with the pool root file system's apt.

The pool's root file system is Debian sid with apt set up for the pool's mirror, so ``apt-get
download etcd-server`` there fetches the package without touching the host's apt or the root
file system's installed packages. The binary (Go, linked against glibc with only symbols that
Debian 12's glibc has too) runs on the host, which `etcd --version` checks once;
it is unpacked into ``<cluster>/bin/etcd-<Debian version>/etcd`` and cached there.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from ..devpool import rootfs as pool_rootfs
from ..devpool.state import PoolPaths
from . import versions
from .build import STAMP, run_step
from .errors import ClusterError
from .state import ClusterPaths

WORK_IN_ROOTFS = Path("tmp/interlink-htcondor-etcd")


def cached(paths: ClusterPaths) -> tuple[Path, str] | None:
    """(etcd executable, Debian version) of the newest complete cache entry."""
    found = []
    for d in paths.bin.glob("etcd-*"):
        exe, stamp = d / "etcd", d / STAMP
        if exe.is_file() and stamp.is_file():
            try:
                version = str(json.loads(stamp.read_text())["version"])
            except (OSError, ValueError, KeyError):
                continue
            found.append((stamp.stat().st_mtime, exe, version))
    if not found:
        return None
    _, exe, version = max(found)
    return exe, version


def safe_version(version: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+~-]", "_", version)


def fetch(paths: ClusterPaths, pool: PoolPaths) -> tuple[Path, str]:
    """The cached etcd, or a freshly fetched one."""
    hit = cached(paths)
    if hit is not None:
        return hit
    if not pool_rootfs.is_built(pool):
        raise ClusterError(
            f"the pool's root file system {pool.rootfs} is not built; "
            "run `interlink-htcondor pool up` first"
        )
    log = paths.logs / "fetch-etcd.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    work = pool.rootfs / WORK_IN_ROOTFS
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    work.chmod(0o777)  # apt downloads as its sandbox user `_apt`
    download = f"cd /{WORK_IN_ROOTFS} && apt-get download -q {versions.ETCD_PACKAGE}"
    argv = pool_rootfs.chroot_argv(pool.rootfs, "sh", "-c", download)
    env = pool_rootfs.CHROOT_ENV
    try:
        run_step(argv, log, f"apt-get download {versions.ETCD_PACKAGE}", env=env, timeout=600)
    except ClusterError:
        # The root file system's package lists may be older than the mirror.
        update = pool_rootfs.chroot_argv(pool.rootfs, "apt-get", "update", "-q")
        run_step(update, log, "apt-get update in the pool's root file system", env=env, timeout=600)
        run_step(argv, log, f"apt-get download {versions.ETCD_PACKAGE}", env=env, timeout=600)
    debs = sorted(work.glob(f"{versions.ETCD_PACKAGE}_*.deb"))
    if not debs:
        raise ClusterError(f"apt-get download left no {versions.ETCD_PACKAGE} package (log: {log})")
    deb = debs[-1]
    version = run_step(
        ["dpkg-deb", "-f", str(deb), "Version"], log, "reading the package version", timeout=60
    ).strip()
    unpacked = work / "unpacked"
    run_step(["dpkg-deb", "-x", str(deb), str(unpacked)], log, "unpacking etcd-server", timeout=120)
    exe = unpacked / "usr" / "bin" / "etcd"
    if not exe.is_file():
        raise ClusterError(f"{deb.name} has no usr/bin/etcd (log: {log})")
    final = paths.bin_dir("etcd", safe_version(version))
    partial = paths.bin / f".etcd-{safe_version(version)}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    shutil.copy2(exe, partial / "etcd")
    run_step(
        [str(partial / "etcd"), "--version"], log, "running etcd --version on the host", timeout=60
    )
    (partial / STAMP).write_text(json.dumps({"package": deb.name, "version": version}) + "\n")
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    shutil.rmtree(work, ignore_errors=True)
    return final / "etcd", version
