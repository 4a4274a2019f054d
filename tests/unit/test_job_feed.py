"""The snapshot process's side of the pipe: one answer per request, in chunks, errors
reported in the answer. (The whole process against the real pool is in
tests/integration/test_gateway.py.)"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any, ClassVar

import pytest

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.job_changes import JobChanges, JobView
from interlink_htcondor.service import job_feed


class ScriptedQueries:
    """Stands for ``job_changes.ChangeQueries``: answers from ``script``, records requests."""

    script: ClassVar[list[Any]] = []
    seen: ClassVar[list[tuple[list[str], list[str], bool]]] = []
    init: ClassVar[dict[str, Any]] = {}

    def __init__(self, **init: Any) -> None:
        ScriptedQueries.init = init
        self.view = JobView()

    def run(
        self, uids: Collection[str], jids: Collection[str], *, full: bool = False
    ) -> tuple[JobChanges, str]:
        ScriptedQueries.seen.append((list(uids), list(jids), full))
        step = ScriptedQueries.script.pop(0)
        if isinstance(step, Exception):
            raise step
        ads, is_full = step
        return self.view.apply(ads, full=is_full), "query" if is_full else "query_changes"


def ad(uid: str, cluster: int, status: int = 1) -> dict[str, Any]:
    return {classad_attrs.POD_UID: uid, "ClusterId": cluster, "ProcId": 0, "JobStatus": status}


def test_answers_come_in_chunks_then_an_end_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_feed, "change_queries", ScriptedQueries)
    monkeypatch.setattr(job_feed, "CHUNK_ADS", 2)
    many = [ad(f"u{i}", i) for i in range(5)]
    ScriptedQueries.script = [
        (many, True),
        ([ad("u0", 0, status=2)], False),
        RuntimeError("schedd gone"),
        ([], True),
    ]
    ScriptedQueries.seen = []
    requests = io.StringIO(
        json.dumps({"schedd": {}, "instance": "p", "full_refresh_seconds": 30}) + "\n"
        + json.dumps({"uids": [], "jids": []}) + "\n"
        + json.dumps({"uids": ["u1"], "jids": ["3.0"], "full": False}) + "\n"
        + json.dumps({}) + "\n"
        + json.dumps({"full": True}) + "\n"
    )  # fmt: skip
    out = io.BytesIO()
    job_feed.serve(requests, out)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert ScriptedQueries.init == {"schedd": {}, "instance": "p", "full_refresh_seconds": 30}
    # The first answer: three chunks of at most two ads, then its end.
    chunks = lines[:3]
    assert [len(c["changed"]) for c in chunks] == [2, 2, 1]
    end = lines[3]
    assert end["end"] and end["full"] and end["reset"] and end["operation"] == "query"
    # The second, a change query: only what changed (quiet jobs are not in its answer).
    assert lines[4] == {"changed": {"u0": ad("u0", 0, status=2)}}
    assert lines[5]["end"] and lines[5]["operation"] == "query_changes" and not lines[5]["reset"]
    assert lines[6] == {"end": True, "error": "schedd gone"}
    # The fourth, a full listing without them: they left.
    assert lines[7] == {"removed": ["u0", "u1", "u2", "u3", "u4"]}
    assert lines[8]["end"] and lines[8]["full"]
    assert ScriptedQueries.seen == [([], [], False), (["u1"], ["3.0"], False),
                                    ([], [], False), ([], [], True)]  # fmt: skip


# ---------------------------------------------------------------------------------------
# The server's end (JobFeed) against a child that speaks the protocol from a script: what
# it does with each request is named by the request's first pod UID.

FAKE_CHILD = r"""
import json, os, sys, time
init = json.loads(sys.stdin.readline())
out = sys.stdout
def send(msg):
    out.write(json.dumps(msg) + "\n")
    out.flush()
for line in sys.stdin:
    req = json.loads(line)
    what = (req.get("uids") or ["answer"])[0]
    if what == "hang":
        time.sleep(3600)
    if what == "exit":
        sys.exit(3)
    if what == "error":
        send({"end": True, "error": "schedd gone"})
        continue
    send({"changed": {"a": {"pid": os.getpid(), "init": init}}})
    send({"changed": {"b": {"jids": req["jids"]}}, "removed": ["gone"]})
    send({"end": True, "full": req["full"], "reset": False,
          "operation": "query" if req["full"] else "query_changes", "seconds": 0.25})
"""


@pytest.fixture
def feed(tmp_path: Path) -> job_feed.JobFeed:
    script = tmp_path / "child.py"
    script.write_text(FAKE_CHILD)
    return job_feed.JobFeed({"instance": "p"}, timeout=3, command=[sys.executable, str(script)])


def test_a_refresh_gathers_the_chunks_of_one_answer(feed: job_feed.JobFeed) -> None:
    async def main() -> None:
        try:
            answer = await feed.refresh((), ["7.0"], full=True)
            assert answer.operation == "query" and answer.seconds == 0.25
            ch = answer.changes
            assert ch.full and not ch.reset and ch.removed == {"gone"}
            assert ch.changed["a"] == {"pid": feed.pid, "init": {"instance": "p"}}
            assert ch.changed["b"] == {"jids": ["7.0"]}
            pid = feed.pid
            assert (await feed.refresh()).operation == "query_changes"
            assert feed.pid == pid  # one process serves refresh after refresh
        finally:
            await feed.close()

    asyncio.run(main())


def test_an_error_answer_keeps_the_process(feed: job_feed.JobFeed) -> None:
    async def main() -> None:
        try:
            await feed.refresh()
            pid = feed.pid
            with pytest.raises(job_feed.JobFeedError, match=r"^schedd gone$"):
                await feed.refresh(["error"])
            assert feed.pid == pid and (await feed.refresh()).changes.changed
        finally:
            await feed.close()

    asyncio.run(main())


def test_a_process_that_hangs_is_killed_and_replaced(feed: job_feed.JobFeed) -> None:
    async def main() -> None:
        try:
            await feed.refresh()
            pid = feed.pid
            t0 = time.monotonic()
            with pytest.raises(job_feed.JobFeedError, match="no answer within 3 s"):
                await feed.refresh(["hang"])
            assert time.monotonic() - t0 < 10
            assert feed.pid is None
            assert pid is not None and ends(pid)
            await feed.refresh()
            assert feed.pid not in (None, pid)
        finally:
            await feed.close()

    asyncio.run(main())


def test_a_process_that_exits_is_replaced(feed: job_feed.JobFeed) -> None:
    async def main() -> None:
        try:
            await feed.refresh()
            pid = feed.pid
            with pytest.raises(job_feed.JobFeedError, match="exited"):
                await feed.refresh(["exit"])
            assert (await feed.refresh()).changes.changed and feed.pid != pid
        finally:
            await feed.close()

    asyncio.run(main())


def test_a_cancelled_refresh_kills_the_process(feed: job_feed.JobFeed) -> None:
    async def main() -> None:
        try:
            await feed.refresh()
            pid = feed.pid
            task = asyncio.ensure_future(feed.refresh(["hang"]))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Half an answer may be in the pipe: that process is never asked again.
            await feed.refresh()
            assert pid is not None and feed.pid != pid
        finally:
            await feed.close()
        assert ends(pid)

    asyncio.run(main())


def test_close_ends_the_process(feed: job_feed.JobFeed) -> None:
    async def main() -> int | None:
        await feed.refresh()
        pid = feed.pid
        await feed.close()
        return pid

    pid = asyncio.run(main())
    assert pid is not None and ends(pid)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def ends(pid: int, within: float = 10.0) -> bool:
    """Whether ``pid`` ends within ``within`` seconds (a kill takes effect asynchronously)."""
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
