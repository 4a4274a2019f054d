"""Container logs: read the job wrapper's CRI log files and apply kubectl's options.

Each container's stdout and stderr go to ``logs/<container>.log`` in the pod's sandbox, one
CRI entry per line: ``<RFC3339Nano UTC> <stdout|stderr> <F|P> <text>``. ``F`` ends a line,
``P`` is a partial line continued by the next entry. The options follow the kubelet:

- ``SinceSeconds`` / ``SinceTime`` keep entries at or after that instant;
- ``Tail`` keeps the last N lines of what is left;
- ``Timestamps`` prefixes each line with its timestamp (otherwise the CRI prefix is cut);
- ``Bytes`` (``LimitBytes``) cuts the output after N bytes, 0 meaning no limit;
- ``Follow`` keeps streaming new lines until the container has ended, or until the
  instance followed is replaced by a restart (the kubelet follows one instance).

The job wrapper moves a restarted container's previous log to
``<container>.previous.log`` (``Previous``), and starts a new ``<container>.log``.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

# A Go zero time.Time (what interLink sends when SinceTime is unset) and anything before
# the epoch mean "no SinceTime".
_TS_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})$"
)
POLL_SECONDS = 0.5
DONE_CHECK_SECONDS = 2.0


class LogOptionError(ValueError):
    """Options that cannot be honoured together or are out of range."""


class LogOptionTypeError(LogOptionError):
    """An option of the wrong type (a wrong body shape, like any other)."""


@dataclass(frozen=True)
class LogOptions:
    tail: int = 0
    limit_bytes: int = 0
    timestamps: bool = False
    follow: bool = False
    previous: bool = False
    since_seconds: int = 0
    since_time_ns: int = 0  # Unix nanoseconds; 0 = unset

    @classmethod
    def from_opts(cls, opts: Mapping[str, Any]) -> LogOptions:
        """From interLink's ``Opts`` JSON object (Go field names; ``null`` is unset). The one
        parser of the log options: ``LogOptionTypeError`` for a value of the wrong type,
        ``LogOptionError`` for a value out of range or options that exclude each other."""

        get = opts.get
        since_raw = get("SinceTime")
        since_ns = 0
        if isinstance(since_raw, str) and since_raw:
            parsed = parse_timestamp(since_raw)
            if parsed is None:
                raise LogOptionTypeError(f"SinceTime {since_raw!r} is not an RFC 3339 time")
            since_ns = parsed
        elif since_raw is not None and not isinstance(since_raw, str):
            raise LogOptionTypeError("SinceTime must be an RFC 3339 time string")
        limit = get("Bytes") if get("Bytes") is not None else get("LimitBytes")
        out = cls(
            tail=_nonneg(get("Tail"), "Tail"),
            limit_bytes=_nonneg(limit, "Bytes"),
            timestamps=_flag(get("Timestamps"), "Timestamps"),
            follow=_flag(get("Follow"), "Follow"),
            previous=_flag(get("Previous"), "Previous"),
            since_seconds=_nonneg(get("SinceSeconds"), "SinceSeconds"),
            since_time_ns=max(since_ns, 0),
        )
        if out.since_seconds and out.since_time_ns:
            raise LogOptionError("both SinceSeconds and SinceTime are set; set only one")
        return out

    def cutoff_ns(self, now: float) -> int:
        """Entries older than this are dropped (0 = keep all)."""
        if self.since_seconds:
            return int((now - self.since_seconds) * 1e9)
        return self.since_time_ns


def _nonneg(v: Any, name: str) -> int:
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int | float) or v != int(v):
        raise LogOptionTypeError(f"{name} must be an integer")
    if v < 0:
        raise LogOptionError(f"{name} must not be negative")
    return int(v)


def _flag(v: Any, name: str) -> bool:
    if v is None:
        return False
    if not isinstance(v, bool):
        raise LogOptionTypeError(f"{name} must be true or false")
    return v


def parse_timestamp(s: str) -> int | None:
    """RFC 3339 (nano) -> Unix nanoseconds; None when malformed. Go's zero time gives 0."""
    m = _TS_RE.match(s)
    if m is None:
        return None
    year, mon, day, hh, mm, ss = (int(x) for x in m.groups()[:6])
    frac = (m.group(7) or "").ljust(9, "0")
    tz = m.group(8)
    try:
        base = datetime(year, mon, day, hh, mm, min(ss, 59), tzinfo=UTC)
    except ValueError:
        return None
    if year <= 1970:
        return 0
    offset = 0
    if tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        offset = sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    seconds = int(base.timestamp()) - offset
    return seconds * 1_000_000_000 + int(frac)


@dataclass(frozen=True)
class Entry:
    """One CRI log entry."""

    ts: bytes  # the timestamp as written
    ts_ns: int
    stream: bytes
    partial: bool
    text: bytes  # without the trailing newline


def parse_entry(line: bytes) -> Entry | None:
    """Parse one CRI line (with or without its newline); None if it is not one."""
    if line.endswith(b"\n"):
        line = line[:-1]
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[2] not in (b"F", b"P"):
        return None
    ts_ns = parse_timestamp(parts[0].decode("ascii", "replace"))
    if ts_ns is None:
        return None
    text = parts[3] if len(parts) == 4 else b""
    return Entry(parts[0], ts_ns, parts[1], parts[2] == b"P", text)


def iter_lines(entries: Iterable[Entry]) -> Iterator[list[Entry]]:
    """Group entries into logical lines (partials followed by their final entry)."""
    pending: list[Entry] = []
    for e in entries:
        pending.append(e)
        if not e.partial:
            yield pending
            pending = []
    if pending:
        yield pending


def format_line(line: list[Entry], timestamps: bool) -> bytes:
    body = b"".join(e.text for e in line)
    if not line[-1].partial:
        body += b"\n"
    return (line[0].ts + b" " + body) if timestamps else body


def select(entries: Iterable[Entry], opts: LogOptions, now: float) -> bytes:
    """Apply since, tail, timestamps and the byte limit to a whole log (pure)."""
    cutoff = opts.cutoff_ns(now)
    kept = (e for e in entries if e.ts_ns >= cutoff) if cutoff else entries
    lines: Iterable[list[Entry]] = iter_lines(kept)
    if opts.tail:
        lines = deque(lines, maxlen=opts.tail)
    out = b"".join(format_line(line, opts.timestamps) for line in lines)
    if opts.limit_bytes:
        out = out[: opts.limit_bytes]
    return out


@dataclass(frozen=True)
class LogSource:
    """Where a container's output is.

    ``cri``: the wrapper's CRI file (apptainer mode). Otherwise plain files (HTCondor's own
    stdout and stderr of the job in the container-universe and +SingularityImage modes),
    read one after the other, with no timestamps (``Timestamps`` and the since options
    cannot apply to them).
    """

    paths: tuple[Path, ...]
    cri: bool = True

    def options(self, opts: LogOptions) -> LogOptions:
        if self.cri:
            return opts
        return replace(opts, timestamps=False, since_seconds=0, since_time_ns=0)


def _parse(raw: bytes, cri: bool) -> Entry | None:
    if cri:
        return parse_entry(raw)
    partial = not raw.endswith(b"\n")
    return Entry(b"", 0, b"stdout", partial, raw if partial else raw[:-1])


def _read_entries(f: BinaryIO, cri: bool, final: bool) -> tuple[list[Entry], int]:
    """Entries from the current position and the number of bytes consumed. Unless
    ``final``, a last line without its newline (still being written) is left for later."""
    entries: list[Entry] = []
    consumed = 0
    for raw in f:
        if not final and not raw.endswith(b"\n"):
            break
        consumed += len(raw)
        e = _parse(raw, cri)
        if e is not None:
            entries.append(e)
    return entries, consumed


class _Follower:
    """The files of one followed source, kept open: a CRI log renamed away by a restart is
    read to its end through its open handle, then the stream ends."""

    def __init__(self, source: LogSource) -> None:
        self.source = source
        self.files: list[BinaryIO | None] = [None] * len(source.paths)
        self.offsets = [0] * len(source.paths)

    def read(self, final: bool) -> tuple[list[Entry], bool]:
        """New entries, and whether the instance followed was replaced (then read whole)."""
        entries: list[Entry] = []
        replaced = False
        for i, path in enumerate(self.source.paths):
            f = self.files[i]
            if f is None:
                try:
                    f = self.files[i] = path.open("rb")
                except FileNotFoundError:
                    continue
            moved = self.source.cri and _replaced(path, f)
            replaced = replaced or moved
            f.seek(self.offsets[i])
            got, consumed = _read_entries(f, self.source.cri, final or moved)
            entries += got
            self.offsets[i] += consumed
        return entries, replaced

    def close(self) -> None:
        for f in self.files:
            if f is not None:
                f.close()


def _replaced(path: Path, f: BinaryIO) -> bool:
    try:
        return path.stat().st_ino != os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return True


def _read_from(source: LogSource, offsets: list[int], final: bool) -> tuple[list[Entry], list[int]]:
    entries: list[Entry] = []
    new_offsets = list(offsets)
    for i, path in enumerate(source.paths):
        try:
            with path.open("rb") as f:
                f.seek(offsets[i])
                got, consumed = _read_entries(f, source.cri, final)
        except FileNotFoundError:
            continue
        entries += got
        new_offsets[i] += consumed
    return entries, new_offsets


def read_log(source: LogSource | Path, opts: LogOptions, now: float | None = None) -> bytes:
    """The selected part of a container's log (running or ended); empty if none yet."""
    src = source if isinstance(source, LogSource) else LogSource((source,))
    entries, _ = _read_from(src, [0] * len(src.paths), True)
    return select(entries, src.options(opts), time.time() if now is None else now)


async def follow_log(
    source: LogSource | Path,
    opts: LogOptions,
    is_done: Callable[[], Awaitable[bool]],
    *,
    heartbeat_seconds: float = 25.0,
    poll_seconds: float = POLL_SECONDS,
    done_check_seconds: float = DONE_CHECK_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[bytes]:
    """Stream the log: first what ``read_log`` gives, then each new line as it is written,
    until ``is_done()`` says the container has ended and everything is sent.

    When nothing was sent for ``heartbeat_seconds``, a newline goes out, so that proxies
    and the virtual kubelet keep the stream open (0 disables it).
    """
    src = source if isinstance(source, LogSource) else LogSource((source,))
    opts = src.options(opts)
    follower = _Follower(src)
    try:
        async for chunk in _follow(
            follower, opts, is_done, heartbeat_seconds, poll_seconds, done_check_seconds, clock
        ):
            yield chunk
    finally:
        follower.close()


async def _follow(
    follower: _Follower,
    opts: LogOptions,
    is_done: Callable[[], Awaitable[bool]],
    heartbeat_seconds: float,
    poll_seconds: float,
    done_check_seconds: float,
    clock: Callable[[], float],
) -> AsyncIterator[bytes]:
    budget = opts.limit_bytes or -1
    carry: list[Entry] = []  # partial entries whose line is not complete yet
    started = False
    last_sent = clock()
    last_check = float("-inf")
    done = False
    loop = asyncio.get_running_loop()

    while True:
        entries, replaced = await loop.run_in_executor(None, follower.read, done)
        done = done or replaced
        entries = carry + entries
        carry = []
        if not done:
            while entries and entries[-1].partial:
                carry.insert(0, entries.pop())
        if not started:
            started = True
            chunk = select(entries, opts, time.time())
        else:
            chunk = b"".join(format_line(line, opts.timestamps) for line in iter_lines(entries))
        if chunk:
            if budget >= 0:
                chunk = chunk[:budget]
                budget -= len(chunk)
            if chunk:
                yield chunk
                last_sent = clock()
            if budget == 0:
                return
        if done:
            return
        now = clock()
        if now - last_check >= done_check_seconds:
            last_check = now
            # Checked before the next read, so lines written before the end still go out.
            done = await is_done()
            if done:
                continue
        if heartbeat_seconds and now - last_sent >= heartbeat_seconds:
            yield b"\n"
            last_sent = now
        await asyncio.sleep(poll_seconds)
