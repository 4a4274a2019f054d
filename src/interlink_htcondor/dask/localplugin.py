"""Run the plugin as a child process (``interlink-htcondor serve``) for the demo, the
notebook and the Dask tests: on a free loopback port, with the embedded default settings
of the running personal pool, ready once it reaches the schedd."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType

from interlink_htcondor.local_plugin import ServeProcess


class PluginStartError(RuntimeError):
    """The plugin process exited or never became ready; the message holds its output."""


class LocalPlugin:
    """``with LocalPlugin() as plugin: PluginCluster(plugin.url)``.

    ``env`` adds settings (``INTERLINK_HTCONDOR_<SECTION>__<KEY>``) to this process's
    environment. The plugin's output goes to ``log_path`` (a temporary file by default),
    so that a failure can show it.
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

    def start(self) -> str:
        try:
            self._proc.start(timeout=self.ready_timeout)
        except RuntimeError as e:
            self._proc.stop()
            raise PluginStartError(str(e)) from None
        return self.url

    def output_tail(self, lines: int = 30) -> str:
        return self._proc.log_tail(lines)

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
