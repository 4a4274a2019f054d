"""The shared snapshot of this plugin's jobs that serves every /status call.

The virtual kubelet asks about one pod per call, 200 calls a second with 1,000 pods. All of
them are answered from ONE snapshot, refreshed at most every
``schedd.status_refresh_seconds`` and coalesced: calls arriving while a refresh is in
flight await that same refresh. A refresh applies what changed since the previous one
(``JobChanges``: the gateway asks the schedd mostly for changed jobs, in another
process), so its cost in the server follows the changes, not the size of the queue.
Pods that are missing from the queue are looked up in the history in batches
(``MissingJobResolver``), again never one query per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from interlink_htcondor.core.job_changes import JobChanges, index_by_uid
from interlink_htcondor.core.pod_status import COMPLETED, REMOVED

log = logging.getLogger(__name__)

# The window in which a snapshot is served while its successor is queried follows the
# slowest recent refresh: at one a second, the last two minutes hold a full listing.
RECENT_REFRESHES = 128
SLOW_REFRESH_FACTOR = 2.0
# A queue that grew since its last full listing lists more slowly: the window also
# follows the slowest recent full listing's cost per job, times the jobs now known.
RECENT_FULL_LISTINGS = 8

Ad = dict[str, Any]
FetchJobs = Callable[[], Awaitable[JobChanges]]
FetchMissing = Callable[[list[str]], Awaitable[dict[str, Ad]]]

__all__ = [
    "JobSnapshot",
    "MissingJobResolver",
    "Snapshot",
    "SnapshotUnavailable",
    "apply_changes",
    "index_by_uid",
]


@dataclass(frozen=True)
class Snapshot:
    """Jobs by pod UID, as one query saw them."""

    jobs: Mapping[str, Ad]
    started: float  # monotonic time the query was sent
    finished: float  # monotonic time it answered
    wall: float = field(default_factory=time.time)  # wall-clock time of the answer
    counts: Mapping[int, int] | None = None  # jobs by JobStatus (kept by apply_changes)

    def state_counts(self) -> dict[int, int]:
        if self.counts is not None:
            return dict(self.counts)
        return _count(self.jobs.values())


def _count(ads: Iterable[Ad]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for ad in ads:
        s = ad.get("JobStatus")
        if isinstance(s, int):
            counts[s] = counts.get(s, 0) + 1
    return counts


def apply_changes(
    prev: Snapshot | None, changes: JobChanges, started: float, finished: float
) -> Snapshot:
    """The snapshot after ``changes``: a new mapping (a snapshot never changes once made)
    sharing every unchanged ad with ``prev``; counts follow in proportion to the changes."""
    if prev is None or changes.reset:
        jobs = dict(changes.changed)
        return Snapshot(jobs, started, finished, counts=_count(jobs.values()))
    jobs = dict(prev.jobs)
    counts = prev.state_counts()

    def uncount(ad: Ad | None) -> None:
        s = ad.get("JobStatus") if ad is not None else None
        if isinstance(s, int) and counts.get(s):
            counts[s] -= 1
            if not counts[s]:
                del counts[s]

    for uid in changes.removed:
        uncount(jobs.pop(uid, None))
    for uid, ad in changes.changed.items():
        uncount(jobs.get(uid))
        jobs[uid] = ad
        s = ad.get("JobStatus")
        if isinstance(s, int):
            counts[s] = counts.get(s, 0) + 1
    return Snapshot(jobs, started, finished, counts=counts)


class SnapshotUnavailable(Exception):
    """The schedd could not be queried and no recent snapshot is left to serve."""


class JobSnapshot:
    """A coalesced, rate-limited view of the plugin's jobs.

    ``fetch`` runs the one schedd query and returns what changed since its previous
    answer. ``serve_stale_seconds`` (default: one interval) is how much older than the
    interval a snapshot is still served while its successor is queried; the window widens
    to ``SLOW_REFRESH_FACTOR`` times the slowest of the last ``RECENT_REFRESHES`` refreshes
    (a full listing of a large queue takes seconds: the calls meanwhile are answered from
    the current snapshot rather than all waiting for it), and to as many times what a full
    listing of the jobs now known would take at the recent listings' cost per job (the
    first listing of a queue that grew). Callers wait only for a query sent when the
    snapshot was already past that window (nobody asked for a while); one sent in time
    that runs longer than predicted never holds them. ``max_stale_seconds`` bounds how
    long one is served while the schedd fails. While a call came within
    ``keep_fresh_seconds``, the snapshot is refreshed every interval even between calls.
    ``wait_seconds`` bounds how long a caller
    waits for a query in flight: past it the last snapshot is served however old (within
    ``max_stale_seconds``), so a schedd that hangs never holds /status for longer.
    """

    def __init__(
        self,
        fetch: FetchJobs,
        refresh_seconds: float,
        *,
        max_stale_seconds: float = 30.0,
        serve_stale_seconds: float | None = None,
        wait_seconds: float | None = None,
        keep_fresh_seconds: float = 0.0,
        on_refresh: Callable[[Snapshot], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._refresh = refresh_seconds
        self._max_stale = max_stale_seconds
        self._serve_stale = refresh_seconds if serve_stale_seconds is None else serve_stale_seconds
        self._wait = wait_seconds
        self._keep_fresh = keep_fresh_seconds
        self._last_asked = float("-inf")
        self._ahead: asyncio.TimerHandle | None = None
        self._on_refresh = on_refresh
        self._clock = clock
        self._current: Snapshot | None = None
        self._inflight: asyncio.Future[Snapshot] | None = None
        self._inflight_since = 0.0
        # Whether the snapshot was already past its window when that query was sent.
        self._inflight_overdue = True
        self._last_failure: tuple[float, BaseException] | None = None
        # Jobs submitted by this process and not yet seen by a query: uid -> (time, ad).
        self._pending: dict[str, tuple[float, Ad]] = {}
        self._forgotten: dict[str, float] = {}
        self._durations: deque[float] = deque(maxlen=RECENT_REFRESHES)
        self._full_per_job: deque[float] = deque(maxlen=RECENT_FULL_LISTINGS)

    @property
    def current(self) -> Snapshot | None:
        return self._current

    def age(self, snap: Snapshot) -> float:
        """Seconds since ``snap``'s query answered."""
        return self._clock() - snap.finished

    async def get(self) -> Snapshot:
        """A snapshot no older than the refresh interval, one query for all callers.

        Within one more interval, the current snapshot is served at once while the new
        query runs in the background (calls do not all wait for the schedd every second);
        older than that, callers wait for the query.
        """
        now = self._clock()
        self._last_asked = now
        cur = self._current
        age = now - cur.started if cur is not None else float("inf")
        if age < self._refresh:
            return cur  # type: ignore[return-value]
        if self._inflight is None:
            failure = self._last_failure
            if failure is not None and now - failure[0] < self._refresh:
                # The schedd just failed: do not hammer it, serve or fail from memory.
                return self._stale_or_raise(now, failure[1])
            self._start_refresh(now, age)
        if cur is not None and age < self._refresh + self.serve_stale_seconds:
            return cur
        if cur is not None and not self._inflight_overdue:
            # The query in flight was sent in time and is merely slower than predicted (a
            # full listing of a big queue): waiting would only trade latency for a second.
            return self._stale_or_raise(now, TimeoutError("the job query is still running"))
        inflight = self._inflight
        assert inflight is not None  # started above if none was in flight
        try:
            if self._wait is None:
                return await asyncio.shield(inflight)
            # The wait counts from the query's start: once it is overdue, nobody waits.
            left = self._inflight_since + self._wait - now
            return await asyncio.wait_for(asyncio.shield(inflight), max(0.0, left))
        except TimeoutError:
            late = TimeoutError(
                f"no answer to the job query for {self._clock() - self._inflight_since:.0f} s"
            )
            return self._stale_or_raise(self._clock(), late)
        except Exception as e:
            return self._stale_or_raise(self._clock(), e)

    def _start_refresh(self, now: float, age: float) -> None:
        self._inflight = asyncio.ensure_future(self._do_refresh())
        self._inflight.add_done_callback(_retrieve)
        self._inflight_since = now
        self._inflight_overdue = age >= self._refresh + self.serve_stale_seconds

    def _plan_ahead(self, snap: Snapshot) -> None:
        """While callers asked recently, the next refresh is due one interval after this
        one started, whether or not a call comes: the virtual kubelet pauses between its
        loops, and the first call of the next one must not find the snapshot too old."""
        if self._ahead is not None:  # one timer at most: a call refreshed before it
            self._ahead.cancel()
            self._ahead = None
        if self._clock() - self._last_asked >= self._keep_fresh:
            return
        delay = max(0.0, snap.started + self._refresh - self._clock())
        self._ahead = asyncio.get_running_loop().call_later(delay, self._refresh_ahead)

    def _refresh_ahead(self) -> None:
        self._ahead = None
        now = self._clock()
        cur = self._current
        if self._inflight is None and cur is not None and now - self._last_asked < self._keep_fresh:
            self._start_refresh(now, now - cur.started)

    def close(self) -> None:
        """Stop refreshing ahead; a refresh in flight is abandoned."""
        if self._ahead is not None:
            self._ahead.cancel()
            self._ahead = None
        if self._inflight is not None:
            self._inflight.cancel()

    @property
    def serve_stale_seconds(self) -> float:
        """How much older than the interval a snapshot is served while its successor is
        queried (see the class's doc)."""
        slowest = max(self._durations, default=0.0)
        jobs = len(self._current.jobs) if self._current is not None else 0
        listing = max(self._full_per_job, default=0.0) * jobs
        return max(self._serve_stale, SLOW_REFRESH_FACTOR * max(slowest, listing))

    def _stale_or_raise(self, now: float, error: BaseException) -> Snapshot:
        cur = self._current
        if cur is not None and now - cur.finished < self._max_stale:
            return cur
        raise SnapshotUnavailable(f"cannot query the schedd: {error}") from error

    async def _do_refresh(self) -> Snapshot:
        started = self._clock()
        try:
            changes = await self._fetch()
            snap = apply_changes(self._current, changes, started, self._clock())
            self._durations.append(snap.finished - snap.started)
            if changes.full and snap.jobs:
                self._full_per_job.append((snap.finished - snap.started) / len(snap.jobs))
            self._current = snap
            self._last_failure = None
            self._expire(snap)
            if self._on_refresh is not None:
                self._on_refresh(snap)
            self._plan_ahead(snap)
            return snap
        except Exception as e:
            self._last_failure = (self._clock(), e)
            log.warning("job snapshot refresh failed", extra={"error": str(e)})
            raise
        finally:
            self._inflight = None

    def _expire(self, snap: Snapshot) -> None:
        # A query that started after a submit/delete has seen its effect.
        for uid, (t, _) in list(self._pending.items()):
            if t < snap.started:
                del self._pending[uid]
        for uid, t in list(self._forgotten.items()):
            if t < snap.started:
                del self._forgotten[uid]

    def lookup(self, snap: Snapshot, uid: str) -> Ad | None:
        """The pod's job as of ``snap``, corrected for this process's own submits/deletes."""
        if uid in self._forgotten:
            return None
        pending = self._pending.get(uid)
        if pending is not None and pending[0] >= snap.started:
            return snap.jobs.get(uid) or pending[1]
        return snap.jobs.get(uid)

    def note_submitted(self, uid: str, ad: Ad) -> None:
        """Make a just-submitted job visible before the next query sees it."""
        self._forgotten.pop(uid, None)
        self._pending[uid] = (self._clock(), ad)

    def note_deleted(self, uid: str) -> None:
        self._pending.pop(uid, None)
        self._forgotten[uid] = self._clock()


def _retrieve(fut: asyncio.Future[Snapshot]) -> None:
    # A background refresh may fail with nobody awaiting it; the failure is logged.
    if not fut.cancelled():
        fut.exception()


class MissingJobResolver:
    """Finds jobs that left the queue (history), batched and cached.

    Only pods that carry a ``JobID`` annotation yet are missing from the snapshot come
    here; once resolved, a job's fate cannot change, so answers are cached (LRU).
    ``fetch(uids)`` returns the ads found (queue first, then history) by pod UID.
    """

    def __init__(
        self,
        fetch: FetchMissing,
        *,
        batch_window: float = 0.05,
        cache_size: int = 10_000,
        negative_ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._window = batch_window
        self._cache: OrderedDict[str, tuple[float, Ad | None]] = OrderedDict()
        self._cache_size = cache_size
        self._negative_ttl = negative_ttl
        self._clock = clock
        self._waiting: dict[str, asyncio.Future[Ad | None]] = {}
        self._batch_task: asyncio.Task[None] | None = None

    async def resolve(self, uids: Iterable[str]) -> dict[str, Ad | None]:
        out: dict[str, Ad | None] = {}
        futures: dict[str, asyncio.Future[Ad | None]] = {}
        now = self._clock()
        for uid in uids:
            hit = self._cache.get(uid)
            if hit is not None and (hit[1] is not None or now - hit[0] < self._negative_ttl):
                self._cache.move_to_end(uid)
                out[uid] = hit[1]
                continue
            fut = self._waiting.get(uid)
            if fut is None:
                fut = asyncio.get_running_loop().create_future()
                self._waiting[uid] = fut
            futures[uid] = fut
        if futures and self._batch_task is None:
            self._batch_task = asyncio.ensure_future(self._run_batch())
        for uid, fut in futures.items():
            out[uid] = await asyncio.shield(fut)
        return out

    def forget(self, uid: str) -> None:
        self._cache.pop(uid, None)

    async def _run_batch(self) -> None:
        try:
            await asyncio.sleep(self._window)
            batch, self._waiting = self._waiting, {}
            if not batch:
                return
            try:
                found = await self._fetch(sorted(batch))
            except Exception as e:
                for fut in batch.values():
                    if not fut.done():
                        fut.set_exception(e)
                        fut.exception()  # mark retrieved: callers may have gone away
                return
            now = self._clock()
            for uid, fut in batch.items():
                ad = found.get(uid)
                # Only final answers are cached: a job still queued keeps changing.
                if ad is None or ad.get("JobStatus") in (REMOVED, COMPLETED):
                    self._cache[uid] = (now, ad)
                    self._cache.move_to_end(uid)
                if not fut.done():
                    fut.set_result(ad)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        finally:
            self._batch_task = None
            if self._waiting:
                self._batch_task = asyncio.ensure_future(self._run_batch())
