"""The plugin as a local child process, for the demo, the notebook, the tests and the
benchmarks (not for production: a site runs ``interlink-htcondor serve`` under systemd or
the Helm chart).

``LocalPlugin`` runs ``interlink-htcondor serve`` with the embedded default settings of the
running personal pool, on a free loopback port, ready once ``/readyz`` answers 200 (the
schedd is reachable)::

    with LocalPlugin() as plugin:
        cluster = PluginCluster(plugin.url)

``ServeProcess`` is the process handling beneath it (the tests and benchmarks extend it);
``pool_schedd`` and ``force_remove`` clear the jobs a run left in the personal pool.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from interlink_htcondor.devpool import PoolInfo


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """The plugin server with environment ``env``; its output goes to ``log_path`` (appended
    to across restarts) or nowhere. Its own session keeps a Ctrl-C at the terminal from
    reaching it, so the caller can still clean up through it before stopping it."""

    def __init__(self, env: Mapping[str, str], log_path: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        """Start and wait for /readyz; RuntimeError (with the output's tail) when the
        process exits or is not ready in time."""
        assert self.proc is None
        argv = [sys.executable, "-m", "interlink_htcondor", "serve"]
        argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        log = self.log_path.open("ab") if self.log_path is not None else None
        try:
            self.proc = subprocess.Popen(
                argv,
                env=self.env,
                stdout=log if log is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"plugin exited with {self.proc.returncode}{self._tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"plugin not ready after {timeout} s{self._tail()}")

    def stop(self, grace: float = 20) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def log_tail(self, n: int = 40) -> str:
        if self.log_path is None:
            return "(no log)"
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def _tail(self) -> str:
        return f":\n{self.log_tail()}" if self.log_path is not None else ""


def pool_schedd(pool: PoolInfo) -> Any:
    """The personal pool's schedd (an ``htcondor2.Schedd``)."""
    import htcondor2

    pool.apply_client_env()
    return htcondor2.Schedd(htcondor2.Collector(pool.collector).locate(htcondor2.DaemonType.Schedd))


def force_remove(schedd: Any, constraint: str, reason: str, grace: float) -> None:
    """Remove the jobs (idle ones leave at once, running ones get SIGTERM); RemoveX forces
    out any still in the queue after ``grace`` seconds."""
    import htcondor2

    schedd.act(htcondor2.JobAction.Remove, constraint, (reason, 1))
    deadline = time.monotonic() + grace
    while schedd.query(constraint=constraint, projection=["ClusterId"], limit=1):
        if time.monotonic() >= deadline:
            schedd.act(htcondor2.JobAction.RemoveX, constraint, (reason, 1))
            return
        time.sleep(0.2)


class PluginStartError(RuntimeError):
    """The plugin process exited or never became ready; the message holds its output."""


class LocalPlugin:
    """``with LocalPlugin() as plugin: PluginCluster(plugin.url)``.

    Parameters
    ----------
    env
        Settings to add to this process's environment
        (``INTERLINK_HTCONDOR_<SECTION>__<KEY>``).
    log_path
        Where the plugin's output goes (a temporary file by default), so that a failure
        can show it.
    ready_timeout
        Seconds to wait for ``/readyz``.
    """

    def __init__(
        self,
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        ready_timeout: float = 60.0,
    ) -> None:
        self.log_path = log_path or Path(
            tempfile.mkstemp(prefix="interlink-htcondor-plugin-", suffix=".log")[1]
        )
        self.ready_timeout = ready_timeout
        self._proc = ServeProcess({**os.environ, **(env or {})}, self.log_path)

    @property
    def url(self) -> str:
        return self._proc.url

    @property
    def pid(self) -> int | None:
        """The plugin's process id while it runs."""
        proc = self._proc.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> str:
        """Start the plugin; its URL once ready (``PluginStartError`` otherwise)."""
        try:
            self._proc.start(timeout=self.ready_timeout)
        except RuntimeError as e:
            self._proc.stop()
            raise PluginStartError(str(e)) from None
        return self.url

    def stop(self) -> None:
        self._proc.stop()

    def __enter__(self) -> LocalPlugin:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
