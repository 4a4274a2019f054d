"""Running the daemons.

``condor_master`` runs in mount and PID namespaces of its own, with the root fs as ``/``
(pivot_root: Apptainer refuses a chroot), detached from the caller (new session, double fork).
A small shell is the namespaces' first process: it mounts, starts the master, reaps orphans,
and turns SIGTERM into the master's fast shutdown. When it exits, the kernel kills everything
left in the PID namespace and the mounts vanish with the mount namespace: ``down`` cannot
leave a process or a mount behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import config
from .errors import PoolError
from .host import tail
from .state import PoolPaths

# Marker in the first process's command line, to recognise it.
INIT_NAME = "interlink-htcondor-pool"

# Arguments: root fs, pid file (host pid of this shell), then the dirs bound at the same path.
# Before the new /proc is mounted, /proc/self is this shell as the host sees it.
NAMESPACE_INIT = r"""
set -eu
root=$1; pidfile=$2; shift 2
read -r hostpid rest < /proc/self/stat
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
for d in "$@"; do mount --bind "$d" "$root$d"; done
echo "$hostpid" > "$pidfile"
cd "$root"
mkdir -p .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot
mkdir -p /run/lock/condor /run/condor /run/lock/subsys
chown condor:condor /run/lock/condor /run/condor
master=
trap '[ -n "$master" ] && kill -QUIT "$master" 2>/dev/null' TERM INT QUIT HUP
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    /usr/sbin/condor_master -f &
master=$!
while kill -0 "$master" 2>/dev/null; do wait || true; done
"""

POOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# `pool logs NAME` to the daemon's log file.
LOG_FILES = {
    "master": "MasterLog",
    "collector": "CollectorLog",
    "negotiator": "NegotiatorLog",
    "schedd": "SchedLog",
    "startd": "StartLog",
    "starter": "StarterLog",
    "shadow": "ShadowLog",
    "procd": "ProcLog",
    "shared_port": "SharedPortLog",
}


# -- processes ---------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: state, ppid, ..."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[1].split() if ")" in stat else []


def alive(pid: int) -> bool:
    """Running (not a zombie waiting for a parent that never reaps)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def parent(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[1]) if len(fields) > 1 else 0


def namespace(pid: int, kind: str = "pid") -> str:
    """``/proc/PID/ns/KIND`` link text ("" when unreadable, as for non-root callers)."""
    with contextlib.suppress(OSError):
        return str(Path(f"/proc/{pid}/ns/{kind}").readlink())
    return ""


def _is_init_cmdline(pid: int, rootfs: Path | None = None) -> bool:
    """The command line is the pool's first shell (`sh -c SCRIPT NAME ROOTFS ...`), not the
    `unshare` that started it (whose arguments contain the same words)."""
    args = _read(f"/proc/{pid}/cmdline").split("\0")
    return (
        len(args) > 4
        and args[0] == "sh"
        and args[3] == INIT_NAME
        and (rootfs is None or args[4] == str(rootfs))
    )


def is_pool_init(pid: int, ns: str | None = None) -> bool:
    """``pid`` is a live first process of a pool (in PID namespace ``ns`` when given)."""
    if pid <= 0 or not alive(pid) or not _is_init_cmdline(pid):
        return False
    if ns:
        current = namespace(pid)
        # Without the right to read another process's namespaces (not root), trust the rest.
        return current in (ns, "")
    return True


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]  # noqa: PTH208


def processes_in(ns: str) -> list[int]:
    """Live processes in PID namespace ``ns`` (never this process's own namespace)."""
    if not ns or ns == namespace(os.getpid()):
        return []
    return [p for p in _pids() if namespace(p) == ns and alive(p)]


def condor_processes() -> list[tuple[int, str]]:
    """Live processes whose name starts with ``condor_``, anywhere on the machine."""
    out = []
    for p in _pids():
        comm = _read(f"/proc/{p}/comm").strip()
        if comm.startswith("condor_") and alive(p):
            out.append((p, comm))
    return out


def find_inits(rootfs: Path | None) -> list[int]:
    """Live first processes of pools running from ``rootfs`` (whatever the info file says),
    or of every pool on the machine (None)."""
    return [p for p in _pids() if _is_init_cmdline(p, rootfs) and alive(p)]


def find_master(init_pid: int) -> int:
    """Host pid of the condor_master child of the pool's first process (0: none)."""
    for p in _pids():
        if parent(p) == init_pid and _read(f"/proc/{p}/comm").strip() == "condor_master":
            return p if alive(p) else 0
    return 0


# -- start -------------------------------------------------------------------------------------


def start(paths: PoolPaths) -> tuple[int, int]:
    """Start the pool's first process and condor_master; return their host pids."""
    paths.run.mkdir(parents=True, exist_ok=True)
    paths.pid_file.unlink(missing_ok=True)
    argv = [
        "setsid", "--fork",
        "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
        "sh", "-c", NAMESPACE_INIT, INIT_NAME,
        str(paths.rootfs), str(paths.pid_file), *(str(d) for d in paths.bind_dirs()),
    ]  # fmt: skip
    with paths.master_output.open("wb") as out:
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                       env={"PATH": POOL_PATH, "LANG": "C.UTF-8"}, check=False)  # fmt: skip
    deadline = time.monotonic() + 20
    init = 0
    while time.monotonic() < deadline:
        if not init:
            with contextlib.suppress(OSError, ValueError):
                init = int(paths.pid_file.read_text().strip())
        if init:
            if not is_pool_init(init):
                break
            master = find_master(init)
            if master:
                return init, master
        time.sleep(0.1)
    detail = tail(paths.master_output, 5) or tail(paths.condor_logs / "MasterLog", 5)
    raise PoolError("condor_master did not start: " + (detail or "no output").replace("\n", " | "))


# -- inside the namespaces ---------------------------------------------------------------------


def namespace_env(user: str) -> dict[str, str]:
    """The minimal environment of a command run inside the pool as ``user``."""
    home = "/root" if user == "root" else f"/home/{user}"
    return {"PATH": POOL_PATH, "HOME": home, "USER": user, "LOGNAME": user, "LANG": "C.UTF-8"}


def namespace_argv(
    init_pid: int, argv: Sequence[str], *, user: str = "root", cwd: str | None = None
) -> list[str]:
    """The host argv that runs ``argv`` in the pool's namespaces and root fs as ``user``, in
    ``cwd`` (default the user's home). No shell sees the arguments as code: the fixed script
    only changes directory, then execs ``argv``."""
    if not argv:
        raise ValueError("empty argv")
    prefix = ["nsenter", f"--target={init_pid}", "--mount", "--pid", "--root", "--wd"]
    if user != "root":
        prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
    # `cd` happens inside the new root: nsenter's own --wd=DIR would resolve DIR on the host.
    home = namespace_env(user)["HOME"]
    cd = ["sh", "-c", 'cd "$1" && shift && exec "$@"', "run-in-pool", cwd or home]
    return [*prefix, *cd, *argv]


def run_in_namespace(
    init_pid: int,
    argv: Sequence[str],
    *,
    user: str = "root",
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    input: bytes | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` in the pool's namespaces and root fs as ``user`` (a name known in the root
    fs), its output captured (see ``namespace_argv``)."""
    full_env = {**namespace_env(user), **(env or {})}
    return subprocess.run(
        namespace_argv(init_pid, argv, user=user, cwd=cwd),
        env=full_env,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=check,
    )


def condor_tool(
    init_pid: int, *argv: str, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    """A condor tool inside the pool as root (local config and authentication)."""
    return run_in_namespace(init_pid, list(argv), user="root", timeout=timeout)


def create_token(init_pid: int, identity_user: str, deadline: float) -> str:
    """An IDTOKEN for ``user@UID_DOMAIN``, signed by the pool key (which the daemons create
    at their first start, hence the retries)."""
    last = ""
    while time.monotonic() < deadline:
        r = condor_tool(init_pid, "condor_config_val", "UID_DOMAIN")
        domain = r.stdout.decode().strip()
        if r.returncode == 0 and domain:
            t = condor_tool(init_pid, "condor_token_create", "-identity",
                            f"{identity_user}@{domain}")  # fmt: skip
            token = t.stdout.decode().strip()
            if t.returncode == 0 and token:
                return token
            last = t.stderr.decode().strip()
        time.sleep(0.5)
    raise PoolError(f"could not create an IDTOKEN for {identity_user}: {last or 'timeout'}")


def write_token(token_dir: Path, token: str, uid: int, gid: int) -> None:
    """Token directory 0700 and file 0600, both owned by ``uid``; written atomically."""
    token_dir.mkdir(parents=True, exist_ok=True)
    os.chown(token_dir, uid, gid)
    token_dir.chmod(0o700)
    tmp = token_dir / (config.TOKEN_FILE + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chown(tmp, uid, gid)
    tmp.replace(token_dir / config.TOKEN_FILE)


def daemon_log_excerpt(paths: PoolPaths, lines: int = 8) -> str:
    parts = []
    for name in ("MasterLog", "SchedLog", "CollectorLog", "StartLog"):
        text = tail(paths.condor_logs / name, lines)
        if text:
            parts.append(f"--- {name} ---\n{text}")
    out = tail(paths.master_output, lines)
    if out:
        parts.append(f"--- master output ---\n{out}")
    return "\n".join(parts)


def wait_ready(paths: PoolPaths, init_pid: int, ns: str, deadline: float) -> None:
    """Until the schedd answers, the collector has its ad (clients locate it there) and an
    Unclaimed slot is advertised."""
    checks = [
        ("the schedd to answer", ["condor_q", "-totals"], False),
        ("the collector to know the schedd", ["condor_status", "-schedd", "-af", "Name"], True),
        (
            "an Unclaimed slot",
            ["condor_status", "-constraint", 'State == "Unclaimed"', "-af", "Name"],
            True,
        ),
    ]
    done = 0
    while time.monotonic() < deadline:
        if not is_pool_init(init_pid, ns):
            raise PoolError(
                "condor_master exited during start; last daemon log lines:\n"
                + daemon_log_excerpt(paths)
            )
        while done < len(checks):
            _, argv, needs_output = checks[done]
            r = condor_tool(init_pid, *argv, timeout=20)
            if r.returncode != 0 or (needs_output and not r.stdout.strip()):
                break
            done += 1
        if done == len(checks):
            return
        time.sleep(0.5)
    raise PoolError(
        f"timed out waiting for {checks[done][0]}; last daemon log lines:\n"
        + daemon_log_excerpt(paths)
    )


# -- stop --------------------------------------------------------------------------------------


def stop(init_pid: int, ns: str, grace: float = 20) -> bool:
    """Fast shutdown of the master (jobs are killed), then the end of the namespaces; after
    ``grace`` seconds, SIGKILL. True when SIGKILL was needed."""
    forced = False
    if is_pool_init(init_pid, ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(init_pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and is_pool_init(init_pid, ns):
            time.sleep(0.2)
        if is_pool_init(init_pid, ns):
            forced = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(init_pid, signal.SIGKILL)
    # The PID namespace dies with its first process; wait until the kernel has emptied it.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and processes_in(ns):
        time.sleep(0.1)
    return forced


def host_mounts_under(path: Path) -> list[str]:
    """Mount points under ``path`` in this process's mount namespace (should be none)."""
    prefix = str(path).rstrip("/") + "/"
    out = []
    for line in _read("/proc/self/mountinfo").splitlines():
        fields = line.split()
        if len(fields) > 4 and (fields[4] + "/").startswith(prefix):
            out.append(fields[4])
    return out
