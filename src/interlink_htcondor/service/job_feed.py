"""The snapshot process: the schedd queries behind the job snapshot, out of the server's way.

A query through the htcondor2 bindings holds the GIL while it reads the answer (0.65 s
for 10,000 jobs here), and turning the ads into Python values holds it as long again:
in the server's own process every request arriving meanwhile waits. So the queries run
in a child process (``python -m interlink_htcondor.service.job_feed``) that keeps its own
view of the jobs (``core.job_changes.JobView``), asks the schedd mostly for what changed,
and hands the server only the ads that changed, a few hundred per message. The server
then spends time in proportion to the changes, not to the queue.

Both ends of the pipe are here: ``JobFeed`` in the server, ``main`` in the child. The
child is started at the first refresh, runs at a lower CPU priority (it is background
work), and is stopped with the server; one that fails, hangs past the schedd timeout or
dies is killed, and the next refresh starts a new one, whose first answer lists every
job again. Messages are JSON lines: the server sends one request per refresh, the child
answers with ``{"changed": ..., "removed": ...}`` chunks and an ``{"end": ...}`` line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.job_changes import ChangeQueries, JobChanges

log = logging.getLogger(__name__)

# Ads per message: parsing one message costs the server a few milliseconds at most.
CHUNK_ADS = 500
# The largest message line accepted (a chunk of unusually large ads).
LINE_LIMIT = 256 * 1024 * 1024
NICENESS = 10


class JobFeedError(Exception):
    """The snapshot process could not answer (the message says why)."""


@dataclass(frozen=True)
class FeedAnswer:
    changes: JobChanges
    operation: str  # "query" (a full listing) or "query_changes"
    seconds: float  # time of the schedd query itself


class JobFeed:
    """The server's end: ``refresh`` asks the child for the changes since its last answer.

    ``init`` is the child's configuration (``change_queries``' arguments, JSON-ready);
    ``timeout`` bounds one refresh: past it the child is killed (a binding call cannot be
    interrupted otherwise) and the next refresh starts a new one. ``command`` is the
    child's command line (by default this module's ``main``).
    """

    def __init__(
        self, init: Mapping[str, Any], timeout: float, command: Sequence[str] | None = None
    ) -> None:
        self._init = dict(init)
        self._timeout = timeout
        self._command = list(command) if command else [sys.executable, "-m", __name__]
        self._proc: asyncio.subprocess.Process | None = None
        self._ended: set[asyncio.subprocess.Process] = set()  # killed, to be reaped
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def refresh(
        self, uids: Collection[str] = (), jids: Collection[str] = (), *, full: bool = False
    ) -> FeedAnswer:
        """The changes since the previous answer; ``uids`` and ``jids`` are pods and jobs
        removed since then (the child checks whether they left); ``full`` asks for a full
        listing whatever its schedule."""
        request = {"uids": list(uids), "jids": list(jids), "full": full}
        async with self._lock:
            try:
                return await asyncio.wait_for(self._ask(request), self._timeout)
            except TimeoutError:
                self._kill()
                raise JobFeedError(f"no answer within {self._timeout:g} s") from None
            except JobFeedError:
                raise
            except BaseException as e:
                # Cancelled or broken half-way: the child's view and ours may differ now.
                self._kill()
                if isinstance(e, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                    raise
                raise JobFeedError(f"the snapshot process failed: {e}") from e

    async def _ask(self, request: Mapping[str, Any]) -> FeedAnswer:
        proc = await self._running()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(request).encode() + b"\n")
        await proc.stdin.drain()
        changed: dict[str, Any] = {}
        removed: set[str] = set()
        while True:
            line = await proc.stdout.readline()
            if not line:
                self._kill()
                raise JobFeedError("the snapshot process exited")
            msg = json.loads(line)
            if "end" not in msg:
                changed.update(msg.get("changed", {}))
                removed.update(msg.get("removed", ()))
                continue
            if msg.get("error"):
                raise JobFeedError(str(msg["error"]))
            changes = JobChanges(
                changed, frozenset(removed), full=bool(msg["full"]), reset=bool(msg["reset"])
            )
            return FeedAnswer(changes, str(msg["operation"]), float(msg["seconds"]))

    async def _running(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        self._proc = await asyncio.create_subprocess_exec(
            *self._command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT,
        )
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(self._init).encode() + b"\n")
        log.info("snapshot process started", extra={"pid": self._proc.pid})
        return self._proc

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            self._ended.add(proc)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    async def close(self, grace: float = 2.0) -> None:
        """Stop the child: closing its input ends it; one that does not end is killed."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                self._ended.add(proc)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        for ended in list(self._ended):
            with contextlib.suppress(ProcessLookupError):
                ended.kill()
            await ended.wait()
            self._ended.discard(ended)


# --------------------------------------------------------------------------- the child


def change_queries(
    schedd: Mapping[str, Any], instance: str, full_refresh_seconds: float
) -> ChangeQueries:
    """The child's queries: its own connection to the schedd (``gateway.SnapshotQuery``)."""
    from interlink_htcondor.service import gateway  # the bindings: in the child only
    from interlink_htcondor.settings import ScheddSettings

    query = gateway.SnapshotQuery(ScheddSettings(**schedd))
    mine = f"{classad_attrs.PLUGIN} == {gateway.quote(instance)}"
    return ChangeQueries(mine, full_refresh_seconds, query, gateway.quote)


def serve(requests: IO[str], answers: IO[bytes]) -> None:
    """The child's loop: one answer per request line, until its input ends."""
    init = json.loads(requests.readline())
    queries = change_queries(**init)
    for line in requests:
        req = json.loads(line)
        t0 = time.perf_counter()
        try:
            changes, operation = queries.run(
                req.get("uids", ()), req.get("jids", ()), full=bool(req.get("full"))
            )
        except Exception as e:
            _write(answers, {"end": True, "error": str(e) or type(e).__name__})
            continue
        seconds = time.perf_counter() - t0
        items = list(changes.changed.items())
        for i in range(0, len(items), CHUNK_ADS):
            _write(answers, {"changed": dict(items[i : i + CHUNK_ADS])})
        if changes.removed:
            _write(answers, {"removed": sorted(changes.removed)})
        _write(
            answers,
            {
                "end": True,
                "full": changes.full,
                "reset": changes.reset,
                "operation": operation,
                "seconds": seconds,
            },
        )


def _write(out: IO[bytes], msg: Mapping[str, Any]) -> None:
    out.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
    if "end" in msg:
        out.flush()


def main() -> None:
    # Answers go to a private copy of stdout; anything else printed lands in stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    try:
        serve(sys.stdin, answers)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        pass  # the server went away


if __name__ == "__main__":
    main()
