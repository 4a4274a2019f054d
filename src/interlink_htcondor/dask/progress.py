"""Live worker-arrival display: one updating line in a terminal, one updating table in a
notebook. Used by ``PluginCluster.wait_for_workers(progress=True)`` and the demo."""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

from interlink_htcondor.dask.podstate import Counts

COLUMNS = ("running", "starting", "pending", "held", "submitting", "failed")
COLOURS = {
    "running": "#2e7d32",
    "starting": "#0277bd",
    "pending": "#9e9e9e",
    "held": "#ef6c00",
    "submitting": "#bdbdbd",
    "failed": "#c62828",
}


class Display(Protocol):
    def update(self, counts: Counts, notes: Sequence[str] = ()) -> None: ...

    def close(self) -> None: ...


def counts_html(counts: Counts, notes: Sequence[str] = (), title: str = "Workers") -> str:
    """A small table with a stacked bar: what arrived, what waits and why."""
    total = max(counts.requested, 1)
    bar = "".join(
        f'<div title="{c}" style="width:{100 * getattr(counts, c) / total:.1f}%;'
        f'background:{COLOURS[c]};height:10px"></div>'
        for c in COLUMNS
        if getattr(counts, c) and c != "failed"
    )
    cells = "".join(
        f'<td style="text-align:right;color:{COLOURS[c]}">{getattr(counts, c)} {c}</td>'
        for c in COLUMNS
    )
    rows = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (
        f"<div><strong>{html.escape(title)}: {counts.running}/{counts.requested} "
        "running</strong>"
        f'<div style="display:flex;width:300px;background:#eee;margin:4px 0">{bar}</div>'
        f"<table><tr>{cells}</tr></table>"
        + (f'<ul style="color:#c62828">{rows}</ul>' if rows else "")
        + "</div>"
    )


class TerminalDisplay:
    """Rewrites one status line on a TTY; prints changed lines otherwise (logs, CI)."""

    def __init__(self, stream: TextIO | None = None, prefix: str = "workers") -> None:
        self.stream = stream or sys.stderr
        self.prefix = prefix
        self.tty = self.stream.isatty()
        self._last = ""
        self._notes: set[str] = set()
        self._t0 = time.monotonic()

    def update(self, counts: Counts, notes: Sequence[str] = ()) -> None:
        line = f"{self.prefix}: {counts.text()}"
        for note in notes:
            if note not in self._notes:
                self._notes.add(note)
                self._write(f"  ! {note}\n", newline_first=True)
        if line == self._last:
            return
        self._last = line
        stamp = f"[{time.monotonic() - self._t0:5.1f}s] "
        if self.tty:
            self.stream.write("\r\033[K" + stamp + line)
        else:
            self.stream.write(stamp + line + "\n")
        self.stream.flush()

    def _write(self, text: str, newline_first: bool = False) -> None:
        if self.tty and newline_first and self._last:
            text = "\n" + text
            self._last = ""
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()


class NotebookDisplay:
    """An output area updated in place (IPython display handles)."""

    def __init__(self, title: str = "Workers") -> None:
        from IPython.display import HTML, display

        self._html: Any = HTML
        self.title = title
        self._handle: Any = display(HTML(""), display_id=True)  # type: ignore[no-untyped-call]
        self._last = ""

    def update(self, counts: Counts, notes: Sequence[str] = ()) -> None:
        body = counts_html(counts, notes, self.title)
        if body != self._last and self._handle is not None:
            self._last = body
            self._handle.update(self._html(body))

    def close(self) -> None:
        pass


class NullDisplay:
    def update(self, counts: Counts, notes: Sequence[str] = ()) -> None:
        pass

    def close(self) -> None:
        pass


def in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def make_display(progress: bool | Display) -> Display:
    if progress is False:
        return NullDisplay()
    if progress is True:
        return NotebookDisplay() if in_notebook() else TerminalDisplay()
    return progress
