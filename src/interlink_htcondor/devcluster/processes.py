"""Detached component processes: started in a session of their own (so they outlive the
command that started them and never become its zombies), with a pid file and a log, and
recognised afterwards by their command line, never by name alone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ClusterError

# `setsid --fork` detaches; the shell records its own pid, then becomes the component.
_LAUNCH = 'echo $$ > "$0" && exec "$@"'


@dataclass(frozen=True)
class Launch:
    """How to start one component."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log: Path
    pid_file: Path
    cwd: Path | None = None


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def cmdline(pid: int) -> list[str]:
    raw = _read(f"/proc/{pid}/cmdline")
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] if raw else []


def environ(pid: int) -> dict[str, str] | None:
    """The process's environment at its start; None when unreadable (only root and the
    process's owner may read it)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def alive(pid: int) -> bool:
    """Running (not a zombie)."""
    stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
    if ")" not in stat:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return bool(fields) and fields[0] not in ("Z", "X")


def pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]  # noqa: PTH208


Matcher = Callable[[int], bool]  # is this pid the process we mean?


def find(match: Matcher) -> list[int]:
    """Live processes that ``match`` accepts."""
    me = os.getpid()
    return [p for p in pids() if p != me and alive(p) and match(p)]


def start(launch: Launch, timeout: float = 10) -> int:
    """Start detached; return the component's pid (that of the exec'd command)."""
    launch.log.parent.mkdir(parents=True, exist_ok=True)
    launch.pid_file.parent.mkdir(parents=True, exist_ok=True)
    launch.pid_file.unlink(missing_ok=True)
    argv = ["setsid", "--fork", "sh", "-c", _LAUNCH, str(launch.pid_file), *launch.argv]
    with launch.log.open("ab") as out:
        out.write(
            f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start {launch.name}: "
            f"{' '.join(launch.argv)}\n".encode()
        )
        out.flush()
        try:
            subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(launch.env),
                cwd=launch.cwd,
                check=True,
            )
        except (OSError, subprocess.CalledProcessError) as e:
            raise ClusterError(f"cannot start {launch.name}: {e}") from e
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            pid = int(launch.pid_file.read_text().strip())
            if pid > 0:
                return pid
        time.sleep(0.05)
    raise ClusterError(f"{launch.name} did not start (no pid file {launch.pid_file})")


def read_pid(pid_file: Path) -> int:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return 0


def stop(pid: int, match: Matcher, grace: float = 15) -> bool:
    """SIGTERM, then SIGKILL after ``grace`` seconds, if ``pid`` is still the process that
    ``match`` recognises. True when SIGKILL was needed."""
    if pid <= 0 or not alive(pid) or not match(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(pid):
            return False
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    return True


def tail(path: Path, lines: int = 20) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
