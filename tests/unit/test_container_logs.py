"""CRI log reading and kubectl's log options."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from interlink_htcondor.core.container_logs import (
    LogOptionError,
    LogOptions,
    LogOptionTypeError,
    follow_log,
    parse_entry,
    parse_timestamp,
    read_log,
)

T0 = 1_800_000_000  # 2027-01-15T08:00:00Z


def ts(sec: int, nanos: int = 0) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def cri(sec: int, text: str, stream: str = "stdout", tag: str = "F") -> str:
    return f"{ts(sec)} {stream} {tag} {text}\n"


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    p = tmp_path / "c.log"
    p.write_text(
        cri(T0, "one")
        + cri(T0 + 1, "two", "stderr")
        + cri(T0 + 2, "thr", tag="P")
        + cri(T0 + 2, "ee")
        + cri(T0 + 3, "  four with  spaces ")
        + cri(T0 + 4, "")
    )
    return p


def test_parse_timestamp() -> None:
    assert parse_timestamp("2027-01-15T08:00:00Z") == T0 * 10**9
    assert parse_timestamp("2027-01-15T08:00:00.5Z") == T0 * 10**9 + 500_000_000
    assert parse_timestamp("2027-01-15T08:00:00.000000001Z") == T0 * 10**9 + 1
    assert parse_timestamp("2027-01-15T09:00:00+01:00") == T0 * 10**9
    assert parse_timestamp("0001-01-01T00:00:00Z") == 0  # Go's zero time
    assert parse_timestamp("yesterday") is None


def test_parse_entry() -> None:
    e = parse_entry(b"2027-01-15T08:00:00.1Z stderr P a b  c\n")
    assert e is not None
    assert (e.stream, e.partial, e.text) == (b"stderr", True, b"a b  c")
    assert parse_entry(b"garbage\n") is None
    assert parse_entry(b"2027-01-15T08:00:00Z stdout X text") is None


def test_plain_strips_cri_prefix_and_joins_partials(log_file: Path) -> None:
    out = read_log(log_file, LogOptions(), now=T0 + 10)
    assert out == b"one\ntwo\nthree\n  four with  spaces \n\n"


def test_timestamps(log_file: Path) -> None:
    out = read_log(log_file, LogOptions(timestamps=True, tail=2), now=T0 + 10)
    assert out == f"{ts(T0 + 3)}   four with  spaces \n{ts(T0 + 4)} \n".encode()


def test_tail_counts_logical_lines(log_file: Path) -> None:
    assert read_log(log_file, LogOptions(tail=3), now=T0) == b"three\n  four with  spaces \n\n"
    assert read_log(log_file, LogOptions(tail=100), now=T0).count(b"\n") == 5


def test_bytes_limit(log_file: Path) -> None:
    assert read_log(log_file, LogOptions(limit_bytes=6), now=T0) == b"one\ntw"
    assert read_log(log_file, LogOptions(limit_bytes=0), now=T0).startswith(b"one\ntwo")


def test_since_seconds(log_file: Path) -> None:
    out = read_log(log_file, LogOptions(since_seconds=2), now=T0 + 4)
    assert out == b"three\n  four with  spaces \n\n"


def test_since_time(log_file: Path) -> None:
    opts = LogOptions.from_opts({"SinceTime": ts(T0 + 3)})
    assert read_log(log_file, opts, now=T0 + 100) == b"  four with  spaces \n\n"


def test_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_log(tmp_path / "nope.log", LogOptions()) == b""


def test_unparseable_lines_are_skipped(tmp_path: Path) -> None:
    p = tmp_path / "x.log"
    p.write_bytes(cri(T0, "ok").encode() + b"not a cri line\n" + cri(T0, "\xff").encode())
    assert read_log(p, LogOptions(), now=T0) == b"ok\n\xc3\xbf\n"


def test_options_from_interlink_json() -> None:
    opts = LogOptions.from_opts(
        {
            "Tail": 5,
            "Bytes": 100,
            "Timestamps": True,
            "Follow": True,
            "Previous": False,
            "SinceSeconds": 0,
            "SinceTime": "0001-01-01T00:00:00Z",
        }
    )
    assert opts == LogOptions(tail=5, limit_bytes=100, timestamps=True, follow=True)
    assert LogOptions.from_opts({"SinceTime": None, "Tail": None}) == LogOptions()


@pytest.mark.parametrize(
    "opts",
    [
        {"Tail": -1},
        {"SinceSeconds": 5, "SinceTime": "2027-01-15T08:00:00Z"},
    ],
)
def test_options_out_of_range(opts: dict[str, object]) -> None:
    with pytest.raises(LogOptionError) as e:
        LogOptions.from_opts(opts)
    assert not isinstance(e.value, LogOptionTypeError)


@pytest.mark.parametrize(
    "opts",
    [
        {"Bytes": "ten"},
        {"SinceSeconds": 1.5},
        {"SinceTime": "not a time"},
        {"SinceTime": 1_700_000_000},
        {"Tail": True},
        {"Follow": "yes"},
    ],
)
def test_options_of_the_wrong_type(opts: dict[str, object]) -> None:
    with pytest.raises(LogOptionTypeError):
        LogOptions.from_opts(opts)


async def until(cond: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_follow_streams_until_done(tmp_path: Path) -> None:
    p = tmp_path / "f.log"
    p.write_text(cri(T0, "first"))
    done = asyncio.Event()

    async def is_done() -> bool:
        return done.is_set()

    chunks: list[bytes] = []

    async def consume() -> None:
        async for c in follow_log(
            p, LogOptions(follow=True), is_done, poll_seconds=0.01, done_check_seconds=0.01
        ):
            chunks.append(c)

    task = asyncio.create_task(consume())
    await until(lambda: b"".join(chunks) == b"first\n")
    with p.open("a") as f:
        f.write(cri(T0 + 1, "second"))
        f.write(f"{ts(T0 + 2)} stdout F half")  # a line still being written
    await until(lambda: b"".join(chunks) == b"first\nsecond\n")
    with p.open("a") as f:
        f.write("-written\n" + cri(T0 + 3, "last"))
    done.set()
    await asyncio.wait_for(task, 2)
    assert b"".join(chunks) == b"first\nsecond\nhalf-written\nlast\n"


@pytest.mark.anyio
async def test_follow_ends_with_the_instance_a_restart_replaced(tmp_path: Path) -> None:
    """The wrapper renames a restarted container's log to ``.previous.log``: the stream
    gives the old instance's last lines and ends, as the kubelet's follow of one instance."""
    p = tmp_path / "c.log"
    p.write_text(cri(T0, "first"))

    async def never() -> bool:
        return False

    chunks: list[bytes] = []

    async def consume() -> None:
        async for c in follow_log(
            p, LogOptions(follow=True), never, poll_seconds=0.01, heartbeat_seconds=0
        ):
            chunks.append(c)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    with p.open("a") as f:
        f.write(cri(T0 + 1, "last words"))
    p.rename(tmp_path / "c.previous.log")
    p.write_text(cri(T0 + 2, "new instance"))
    await asyncio.wait_for(task, 2)
    assert b"".join(chunks) == b"first\nlast words\n"


@pytest.mark.anyio
async def test_follow_waits_for_file_and_heartbeats(tmp_path: Path) -> None:
    p = tmp_path / "later.log"
    calls = 0

    async def is_done() -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            p.write_text(cri(T0, "hello"))
        return calls > 5

    chunks = [
        c
        async for c in follow_log(
            p,
            LogOptions(follow=True),
            is_done,
            heartbeat_seconds=0.001,
            poll_seconds=0.01,
            done_check_seconds=0.0,
        )
    ]
    assert b"hello\n" in chunks
    assert b"\n" in chunks  # a heartbeat while nothing was written


@pytest.mark.anyio
async def test_follow_respects_byte_limit(tmp_path: Path) -> None:
    p = tmp_path / "b.log"
    p.write_text(cri(T0, "abcdef") + cri(T0, "ghij"))

    async def never() -> bool:
        return False

    chunks = [
        c
        async for c in follow_log(
            p, LogOptions(follow=True, limit_bytes=9), never, heartbeat_seconds=0
        )
    ]
    assert b"".join(chunks) == b"abcdef\ngh"
