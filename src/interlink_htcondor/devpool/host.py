"""The host side: root check, host packages, the Debian mirror, the job user, and running
build steps with their output kept in a log."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import PoolError

MIRROR_ENV = "INTERLINK_HTCONDOR_POOL_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Host commands the pool needs, and the Debian package that provides each.
HOST_TOOLS: dict[str, str] = {
    "debootstrap": "debootstrap",
    "setfacl": "acl",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "setsid": "util-linux",
    "pivot_root": "util-linux",
    "useradd": "passwd",
    "groupadd": "passwd",
    "dpkg-deb": "dpkg",
}


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise PoolError(
            f"{action} needs root (it builds a root filesystem, creates the job user and a "
            "mount namespace); run it as root, e.g. with sudo"
        )


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def run_step(
    argv: Sequence[str],
    log: Path,
    what: str,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800,
    hint: str = "",
) -> None:
    """Run one build step, its output appended to ``log``; a failure is a one-line
    PoolError naming the step, the log, and its last line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n[{time.strftime('%H:%M:%S')}] $ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise PoolError(f"{what} timed out after {timeout:.0f} s (log: {log})") from e
        except OSError as e:
            raise PoolError(f"{what} failed: {e.strerror}: {argv[0]}") from e
    if proc.returncode != 0:
        last = tail(log, 1)
        extra = f"; {hint}" if hint else ""
        raise PoolError(f"{what} failed (exit {proc.returncode}): {last!r}{extra} (log: {log})")


def ensure_host_tools(log: Path) -> None:
    """Install the host packages the pool needs, non-interactively, if any command is missing."""
    missing = sorted({pkg for cmd, pkg in HOST_TOOLS.items() if shutil.which(cmd) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise PoolError(f"missing host packages {', '.join(missing)} and no apt-get to install")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run_step(["apt-get", "update", "-q"], log, "apt-get update on the host", env=env)
    run_step(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        log,
        f"installing {', '.join(missing)} on the host",
        env=env,
    )


def _sources_uris(text: str) -> list[str]:
    """Archive URIs named by apt sources text (one-line or deb822 format), in order."""
    uris: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", line)
        if m:
            uris.append(m.group(1))
            continue
        m = re.match(r"^URIs:\s*(.+)$", line, re.IGNORECASE)
        if m:
            uris.extend(m.group(1).split())
    return uris


def pick_mirror(sources: Sequence[str]) -> str:
    """The Debian archive mirror among apt sources texts (not the security archive)."""
    for text in sources:
        for uri in _sources_uris(text):
            u = uri.rstrip("/")
            if u.startswith(("http://", "https://")) and u.endswith("/debian"):
                return u
    return DEFAULT_MIRROR


def debian_mirror() -> str:
    """``$INTERLINK_HTCONDOR_POOL_MIRROR``, else the mirror the host's apt sources name."""
    override = os.environ.get(MIRROR_ENV, "").strip()
    if override:
        return override.rstrip("/")
    texts: list[str] = []
    files = [Path("/etc/apt/sources.list")]
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        files += sorted(d.glob("*.sources")) + sorted(d.glob("*.list"))
    for f in files:
        try:
            texts.append(f.read_text(errors="replace"))
        except OSError:
            continue
    return pick_mirror(texts)


def check_mirror(mirror: str, suite: str) -> None:
    url = f"{mirror}/dists/{suite}/InRelease"
    try:
        with urllib.request.urlopen(url, timeout=20) as r:  # noqa: S310 (http(s) mirror URL)
            r.read(1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise PoolError(
            f"Debian mirror {mirror} is unavailable for {suite} ({reason}); set "
            f"{MIRROR_ENV} to a reachable mirror"
        ) from e


def ensure_host_user(name: str, uid: int, gid: int, log: Path) -> None:
    """Create the job user on the host with fixed ids, or check the existing one."""
    try:
        g = grp.getgrnam(name)
        if g.gr_gid != gid:
            raise PoolError(f"host group {name} exists with gid {g.gr_gid}, expected {gid}")
    except KeyError:
        try:
            other = grp.getgrgid(gid).gr_name
            raise PoolError(f"gid {gid} is taken by host group {other}; cannot create {name}")
        except KeyError:
            run_step(["groupadd", "-g", str(gid), name], log, f"creating host group {name}")
    try:
        p = pwd.getpwnam(name)
        if p.pw_uid != uid:
            raise PoolError(f"host user {name} exists with uid {p.pw_uid}, expected {uid}")
    except KeyError:
        try:
            other = pwd.getpwuid(uid).pw_name
            raise PoolError(f"uid {uid} is taken by host user {other}; cannot create {name}")
        except KeyError:
            run_step(
                [
                    "useradd",
                    "-u",
                    str(uid),
                    "-g",
                    str(gid),
                    "-m",
                    "-d",
                    f"/home/{name}",
                    "-s",
                    "/usr/sbin/nologin",
                    "-c",
                    "interlink-htcondor job owner",
                    name,
                ],
                log,
                f"creating host user {name}",
            )


def grant_traverse(path: Path, uid: int, log: Path) -> None:
    """Let ``uid`` reach ``path``: give it search permission (an ACL entry, nothing more) on
    each ancestor that denies it, e.g. root's 0700 home that holds the default state dir."""
    for d in reversed(path.absolute().parents):
        st = d.stat()
        if st.st_uid == uid or st.st_mode & stat.S_IXOTH:
            continue
        run_step(["setfacl", "-m", f"u:{uid}:x", str(d)], log, f"granting uid {uid} access to {d}")
