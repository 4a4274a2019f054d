"""The pool's root filesystem: Debian sid (minbase) with minicondor, apptainer and python3,
built once with debootstrap and cached in the state directory."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from . import config
from .errors import PoolError
from .host import check_mirror, run_step
from .state import PoolPaths

SUITE = "sid"
# python3: the job wrapper's interpreter; procps: ps/top to look at running jobs.
PACKAGES = ("minicondor", "apptainer", "python3", "procps")
# Bump when the recipe changes: a root fs with another stamp is rebuilt.
STAMP = "interlink-htcondor rootfs 1: sid minbase + " + " ".join(PACKAGES)
STAMP_FILE = ".interlink-htcondor-rootfs"

# The mirror's Release files may be a frozen snapshot past its Valid-Until date.
APT_CONF = """\
Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";
"""
# Packages' maintainer scripts must not try to start services in the build chroot.
POLICY_RC_D = "#!/bin/sh\nexit 101\n"


def is_built(paths: PoolPaths) -> bool:
    try:
        return (paths.rootfs / STAMP_FILE).read_text().strip() == STAMP
    except OSError:
        return False


def chroot_argv(root: Path, *argv: str) -> list[str]:
    """argv that runs ``argv`` chrooted in ``root`` with /proc and /sys mounted in a private
    mount namespace (package scripts need /proc; nothing is mounted on the host)."""
    script = (
        'mount -t proc proc "$1/proc" && mount -t sysfs sysfs "$1/sys" && '
        'r="$1" && shift && exec chroot "$r" "$@"'
    )
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "chroot-in",
        str(root),
        *argv,
    ]


CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}


def debootstrap(target: Path, suite: str, mirror: str, log: Path, include: str = "") -> None:
    """A minbase Debian root file system in ``target`` (removed first)."""
    check_mirror(mirror, suite)
    if target.exists():
        shutil.rmtree(target)
    argv = ["debootstrap", "--variant=minbase"]
    if include:
        argv.append(f"--include={include}")
    run_step(
        [*argv, suite, str(target), mirror],
        log,
        f"debootstrap of Debian {suite} from {mirror}",
        hint="is the mirror reachable?",
    )
    apt_conf = target / "etc" / "apt" / "apt.conf.d" / "99interlink-htcondor"
    apt_conf.write_text(APT_CONF)
    policy = target / "usr" / "sbin" / "policy-rc.d"
    policy.write_text(POLICY_RC_D)
    policy.chmod(0o755)
    copy_resolv_conf(target)


def copy_resolv_conf(target: Path) -> None:
    resolv = target / "etc" / "resolv.conf"
    if resolv.is_symlink():
        resolv.unlink()
    # Without a DNS configuration on the host, the mirror must be given as an address.
    with contextlib.suppress(OSError):
        shutil.copyfile("/etc/resolv.conf", resolv)


def add_user(root: Path, log: Path) -> None:
    """The job user inside the root fs, with the same ids as on the host."""
    name, uid, gid = config.JOB_USER, str(config.JOB_UID), str(config.JOB_GID)
    run_step(
        chroot_argv(root, "groupadd", "-g", gid, name),
        log,
        "creating the job group",
        env=CHROOT_ENV,
    )
    run_step(
        chroot_argv(
            root,
            "useradd",
            "-u",
            uid,
            "-g",
            gid,
            "-m",
            "-d",
            f"/home/{name}",
            "-s",
            "/bin/sh",
            name,
        ),
        log,
        "creating the job user in the root fs",
        env=CHROOT_ENV,
    )


def build(paths: PoolPaths, mirror: str) -> None:
    """Build the root fs from nothing into ``rootfs.partial``, then move it in place."""
    log = paths.build_logs / "rootfs.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    partial = paths.root / "rootfs.partial"
    debootstrap(partial, SUITE, mirror, log)
    run_step(
        chroot_argv(partial, "apt-get", "update", "-q"),
        log,
        "apt-get update in the root fs",
        env=CHROOT_ENV,
    )
    run_step(
        chroot_argv(
            partial, "apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES
        ),
        log,
        f"installing {' '.join(PACKAGES)} in the root fs",
        env=CHROOT_ENV,
    )
    run_step(chroot_argv(partial, "apt-get", "clean"), log, "apt-get clean", env=CHROOT_ENV)
    add_user(partial, log)
    (partial / STAMP_FILE).write_text(STAMP + "\n")
    if paths.rootfs.exists():
        shutil.rmtree(paths.rootfs)
    partial.rename(paths.rootfs)


def prepare(paths: PoolPaths, cfg: config.PoolConfig) -> None:
    """Per-start setup of a built root fs: the config file, and the mount points of the
    shared directories at their host paths, reachable by the job user."""
    if not (paths.rootfs / "usr" / "sbin" / "condor_master").exists():
        raise PoolError(f"{paths.rootfs} has no condor_master; remove it and run pool up again")
    conf = paths.condor_config_dir / config.CONFIG_FILE_NAME
    conf.write_text(config.condor_config_text(cfg))
    copy_resolv_conf(paths.rootfs)
    for d in paths.bind_dirs():
        target = paths.rootfs / d.relative_to("/")
        target.mkdir(parents=True, exist_ok=True)
        # Every directory on the way must let the job user through (e.g. /root is 0700).
        p = target.parent
        while p != paths.rootfs and p != p.parent:
            mode = p.stat().st_mode & 0o7777
            if mode & 0o001 == 0:
                p.chmod(mode | 0o001)
            p = p.parent
