"""Run the plugin as a child process (``interlink-htcondor serve``) for the demo, the
notebook, the tests and the benchmarks: on a free loopback port, with the embedded
default settings of the running personal pool unless a config file is given."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class PluginStartError(RuntimeError):
    """The plugin process exited or never answered; the message holds its last output."""


class LocalPlugin:
    """``with LocalPlugin() as plugin: PluginCluster(plugin.url)``.

    The plugin's output goes to ``log_path`` (a temporary file by default), so that a
    failure can show it; it is stopped with SIGTERM (then SIGKILL) on exit.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        config: Path | None = None,
        log_path: Path | None = None,
        log_level: str = "warning",
        ready_timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.config = config
        self.log_level = log_level
        self.ready_timeout = ready_timeout
        self.env = {**os.environ, **(env or {})}  # e.g. INTERLINK_HTCONDOR_POLICY__INSTANCE
        self.log_path = log_path or Path(
            tempfile.mkstemp(prefix="interlink-htcondor-plugin-", suffix=".log")[1]
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "interlink_htcondor", "serve"]
        argv += ["--host", self.host, "--port", str(self.port), "--log-level", self.log_level]
        if self.config is not None:
            argv += ["--config", str(self.config)]
        return argv

    def start(self) -> str:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise PluginStartError(
                    f"the plugin exited with code {self.proc.returncode}:\n{self.output_tail()}"
                )
            if self._answers():
                return self.url
            if time.monotonic() > deadline:
                self.stop()
                raise PluginStartError(
                    f"the plugin did not answer on {self.url} within {self.ready_timeout:.0f} s:"
                    f"\n{self.output_tail()}"
                )
            time.sleep(0.2)

    def _answers(self) -> bool:
        # interLink's ping: GET /status with an empty list.
        try:
            r = httpx.request("GET", self.url + "/status", json=[], timeout=2)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def output_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

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

    def cleanup_log(self) -> None:
        with contextlib.suppress(OSError):
            self.log_path.unlink()
