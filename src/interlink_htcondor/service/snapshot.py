"""The shared snapshot of this plugin's jobs that serves every /status call.

The virtual kubelet asks about one pod per call, 200 calls a second with 1,000 pods. All of
them are answered from ONE schedd query, refreshed at most every
``schedd.status_refresh_seconds`` and coalesced: calls arriving while a refresh is in
flight await that same refresh. Pods that are missing from the queue are looked up in the
history in batches (``MissingJobResolver``), again never one query per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.pod_status import COMPLETED, REMOVED

log = logging.getLogger(__name__)

Ad = dict[str, Any]
FetchJobs = Callable[[], Awaitable[list[Ad]]]
FetchMissing = Callable[[list[str]], Awaitable[dict[str, Ad]]]


@dataclass(frozen=True)
class Snapshot:
    """Jobs by pod UID, as one query saw them."""

    jobs: Mapping[str, Ad]
    started: float  # monotonic time the query was sent
    finished: float  # monotonic time it answered
    wall: float = field(default_factory=time.time)  # wall-clock time of the answer

    def state_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for ad in self.jobs.values():
            s = ad.get("JobStatus")
            if isinstance(s, int):
                counts[s] = counts.get(s, 0) + 1
        return counts


def index_by_uid(ads: Iterable[Ad]) -> dict[str, Ad]:
    """One job per pod. Should two exist (a race between two plugin processes), the
    oldest live one (lowest ClusterId) stands; the gateway removes the others."""
    out: dict[str, Ad] = {}
    for ad in ads:
        uid = ad.get(classad_attrs.POD_UID)
        if not isinstance(uid, str) or not uid:
            continue
        cur = out.get(uid)
        if cur is None or _rank(ad) < _rank(cur):
            out[uid] = ad
    return out


def _rank(ad: Ad) -> tuple[int, int, int]:
    removed = 1 if ad.get("JobStatus") == REMOVED else 0
    cluster = ad.get("ClusterId")
    proc = ad.get("ProcId")
    return (
        removed,
        cluster if isinstance(cluster, int) else 1 << 62,
        proc if isinstance(proc, int) else 0,
    )


class SnapshotUnavailable(Exception):
    """The schedd could not be queried and no recent snapshot is left to serve."""


class JobSnapshot:
    """A coalesced, rate-limited view of the plugin's jobs.

    ``fetch`` runs the one schedd query. ``serve_stale_seconds`` (default: one interval)
    is how much older than the interval a snapshot is still served while its successor is
    queried; ``max_stale_seconds`` bounds how long one is served while the schedd fails.
    ``wait_seconds`` bounds how long a caller waits for a query in flight: past it the
    last snapshot is served however old (within ``max_stale_seconds``), so a schedd that
    hangs never holds /status for longer.
    """

    def __init__(
        self,
        fetch: FetchJobs,
        refresh_seconds: float,
        *,
        max_stale_seconds: float = 30.0,
        serve_stale_seconds: float | None = None,
        wait_seconds: float | None = None,
        on_refresh: Callable[[Snapshot], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._refresh = refresh_seconds
        self._max_stale = max_stale_seconds
        self._serve_stale = refresh_seconds if serve_stale_seconds is None else serve_stale_seconds
        self._wait = wait_seconds
        self._on_refresh = on_refresh
        self._clock = clock
        self._current: Snapshot | None = None
        self._inflight: asyncio.Future[Snapshot] | None = None
        self._inflight_since = 0.0
        self._last_failure: tuple[float, BaseException] | None = None
        # Jobs submitted by this process and not yet seen by a query: uid -> (time, ad).
        self._pending: dict[str, tuple[float, Ad]] = {}
        self._forgotten: dict[str, float] = {}

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
        cur = self._current
        age = now - cur.started if cur is not None else float("inf")
        if age < self._refresh:
            return cur  # type: ignore[return-value]
        if self._inflight is None:
            failure = self._last_failure
            if failure is not None and now - failure[0] < self._refresh:
                # The schedd just failed: do not hammer it, serve or fail from memory.
                return self._stale_or_raise(now, failure[1])
            self._inflight = asyncio.ensure_future(self._do_refresh())
            self._inflight.add_done_callback(_retrieve)
            self._inflight_since = now
        if cur is not None and age < self._refresh + self._serve_stale:
            return cur
        inflight = self._inflight
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

    def _stale_or_raise(self, now: float, error: BaseException) -> Snapshot:
        cur = self._current
        if cur is not None and now - cur.finished < self._max_stale:
            return cur
        raise SnapshotUnavailable(f"cannot query the schedd: {error}") from error

    async def _do_refresh(self) -> Snapshot:
        started = self._clock()
        try:
            ads = await self._fetch()
            snap = Snapshot(index_by_uid(ads), started, self._clock())
            self._current = snap
            self._last_failure = None
            self._expire(snap)
            if self._on_refresh is not None:
                self._on_refresh(snap)
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
