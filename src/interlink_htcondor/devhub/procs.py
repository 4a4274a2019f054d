"""Detached processes with pid files: started in a session of their own (they outlive the
command that started them), recognised again by their command line, stopped by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

from interlink_htcondor.devpool.daemons import alive
from interlink_htcondor.devpool.host import tail

from .errors import HubError


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def running(pid_file: Path, marker: str) -> int:
    """The pid in ``pid_file`` when that process is alive and ``marker`` is one of its
    arguments (a reused pid is not ours); 0 otherwise."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return 0
    return pid if pid > 0 and alive(pid) and marker in _cmdline(pid) else 0


def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log: Path,
    pid_file: Path,
) -> int:
    """Start ``argv`` detached (own session, no terminal), output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n[{time.strftime('%F %T')}] $ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            raise HubError(f"cannot start {argv[0]}: {e.strerror}") from e
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def wait_http(
    url: str,
    *,
    pid: int,
    log: Path,
    what: str,
    timeout: float,
    ok: Callable[[httpx.Response], bool] = lambda r: r.status_code < 500,
) -> None:
    """Until ``url`` answers as ``ok`` says; a HubError with the log's tail when the process
    exits or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            reap(pid)
            raise HubError(f"{what} exited during start; last lines of {log}:\n{tail(log, 15)}")
        with contextlib.suppress(httpx.HTTPError):
            if ok(httpx.get(url, timeout=5, follow_redirects=False)):
                return
        time.sleep(0.3)
    raise HubError(f"{what} not ready after {timeout:.0f} s; last lines of {log}:\n{tail(log, 15)}")


def stop(pid_file: Path, marker: str, grace: float = 20) -> bool:
    """SIGTERM the recorded process (SIGKILL after ``grace`` s); False when none ran."""
    pid = running(pid_file, marker)
    if not pid:
        pid_file.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while alive(pid):
            time.sleep(0.1)
    reap(pid)
    pid_file.unlink(missing_ok=True)
    return True


def reap(pid: int) -> None:
    """Collect the exit status when this process started ``pid`` (no zombie left)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
