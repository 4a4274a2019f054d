"""The shared job snapshot: one query for many callers, rate-limited, coalesced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.job_changes import JobChanges, JobView
from interlink_htcondor.service.snapshot import (
    JobSnapshot,
    MissingJobResolver,
    SnapshotUnavailable,
    apply_changes,
    index_by_uid,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def until(cond: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def found(ad: dict[str, Any] | None) -> dict[str, Any]:
    assert ad is not None
    return ad


def job(uid: str, cluster: int, status: int = 2) -> dict[str, Any]:
    return {classad_attrs.POD_UID: uid, "ClusterId": cluster, "ProcId": 0, "JobStatus": status}


class Fetcher:
    """Lists ``ads`` in full at every call, as changes to its previous answer."""

    def __init__(self, ads: list[dict[str, Any]], delay: float = 0.01) -> None:
        self.ads = ads
        self.calls = 0
        self.delay = delay
        self.fail: Exception | None = None
        self.view = JobView()

    async def __call__(self) -> JobChanges:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return self.view.apply([dict(a) for a in self.ads], full=True)


def test_index_keeps_one_job_per_pod() -> None:
    ads = [job("a", 12), job("a", 10), job("a", 9, status=3), job("b", 11), {"x": 1}]
    idx = index_by_uid(ads)
    assert set(idx) == {"a", "b"}
    assert idx["a"]["ClusterId"] == 10  # lowest live cluster wins over a removed one


async def test_concurrent_calls_share_one_query() -> None:
    clock = Clock()
    fetch = Fetcher([job("a", 1)])
    snap = JobSnapshot(fetch, 1.0, clock=clock)
    results = await asyncio.gather(*(snap.get() for _ in range(200)))
    assert fetch.calls == 1
    assert all(r is results[0] for r in results)
    assert snap.lookup(results[0], "a") is not None


async def test_refresh_at_most_once_per_interval() -> None:
    clock = Clock()
    fetch = Fetcher([job("a", 1)])
    snap = JobSnapshot(fetch, 1.0, clock=clock, serve_stale_seconds=0)
    await snap.get()
    clock.t += 0.5
    await snap.get()
    assert fetch.calls == 1
    clock.t += 0.6
    await snap.get()
    assert fetch.calls == 2


async def test_stale_snapshot_served_while_the_next_is_queried() -> None:
    clock = Clock()
    fetch = Fetcher([job("a", 1, status=1)], delay=0.05)
    snap = JobSnapshot(fetch, 1.0, clock=clock)
    first = await snap.get()
    clock.t += 1.5  # older than the interval, within one more: served at once
    fetch.ads = [job("a", 1, status=2)]
    again = await asyncio.gather(*(snap.get() for _ in range(50)))
    assert all(s is first for s in again)
    await until(lambda: snap.current is not first)  # the one background query ends
    assert fetch.calls == 2
    assert found(snap.lookup(await snap.get(), "a"))["JobStatus"] == 2
    clock.t += 5  # far too old: callers wait for the query
    fetch.ads = []
    assert snap.lookup(await snap.get(), "a") is None
    assert fetch.calls == 3


async def test_a_slow_refresh_widens_the_window_in_which_the_current_one_is_served() -> None:
    clock = Clock()
    fetch = Fetcher([job("a", 1, status=1)], delay=0)
    cost = {"seconds": 3.0}  # a full listing of a large queue

    async def slow() -> JobChanges:
        clock.t += cost["seconds"]
        return await fetch()

    snap = JobSnapshot(slow, 1.0, clock=clock, serve_stale_seconds=1.0)
    first = await snap.get()
    assert snap.serve_stale_seconds == 6.0  # twice the slowest refresh
    clock.t += 2.0  # 5 s old: past interval + one interval, within interval + 6 s
    cost["seconds"] = 0.0
    assert await snap.get() is first
    await until(lambda: snap.current is not first)
    assert fetch.calls == 2
    clock.t += 8.0  # past the widened window too: the caller waits for the query
    fetch.ads = []
    assert snap.lookup(await snap.get(), "a") is None
    assert fetch.calls == 3


async def test_the_window_grows_with_the_queue_before_its_next_full_listing() -> None:
    clock = Clock()
    fetch = Fetcher([job("a", 1, status=1), job("b", 2, status=1)], delay=0)
    query = {"seconds": 1.0, "full": True}  # a full listing of 2 jobs: 0.5 s a job

    async def refresh() -> JobChanges:
        clock.t += query["seconds"]
        changes = await fetch()
        return JobChanges(changes.changed, changes.removed, bool(query["full"]), changes.reset)

    snap = JobSnapshot(refresh, 1.0, clock=clock, serve_stale_seconds=0)
    await snap.get()
    assert snap.serve_stale_seconds == 2.0  # twice the 1 s listing
    # The queue grows to 8 jobs, seen by change queries (fast, not listings)...
    fetch.ads += [job(f"n{i}", 10 + i, status=1) for i in range(6)]
    query.update(seconds=0.0, full=False)
    clock.t += 1.5
    await snap.get()
    await until(lambda: snap.current is not None and len(snap.current.jobs) == 8)
    # ...so its next listing is expected to take 8 x 0.5 s: the window is twice that.
    assert snap.serve_stale_seconds == 8.0


async def test_without_slow_refreshes_an_old_snapshot_is_not_served() -> None:
    clock = Clock()
    fetch = Fetcher([job("a", 1, status=1)])
    snap = JobSnapshot(fetch, 1.0, clock=clock, serve_stale_seconds=0)
    first = await snap.get()
    clock.t += 1.5
    fetch.ads = [job("a", 1, status=2)]
    second = await snap.get()
    assert second is not first and found(snap.lookup(second, "a"))["JobStatus"] == 2


async def test_pending_submit_visible_until_a_later_query_sees_it() -> None:
    clock = Clock()
    fetch = Fetcher([])
    snap = JobSnapshot(fetch, 1.0, clock=clock, serve_stale_seconds=0)
    s1 = await snap.get()
    clock.t += 0.1
    snap.note_submitted("new", job("new", 5, status=1))
    assert found(snap.lookup(s1, "new"))["ClusterId"] == 5
    clock.t += 1.0
    fetch.ads = [job("new", 5, status=2)]
    s2 = await snap.get()
    assert found(snap.lookup(s2, "new"))["JobStatus"] == 2
    fetch.ads = []
    clock.t += 1.0
    s3 = await snap.get()
    assert snap.lookup(s3, "new") is None  # the placeholder expired with the query


async def test_a_query_sent_in_time_never_holds_callers_however_long_it_runs() -> None:
    clock = Clock()
    fetch = Fetcher([job("a", 1, status=1)], delay=0)
    gate = asyncio.Event()
    gate.set()

    async def gated() -> JobChanges:
        await gate.wait()
        return await fetch()

    snap = JobSnapshot(
        gated, 1.0, clock=clock, serve_stale_seconds=1.0, wait_seconds=60, max_stale_seconds=300
    )
    first = await snap.get()
    gate.clear()  # the next query (a full listing, say) runs far longer than predicted
    clock.t += 1.5  # within the window: served at once, the query is sent
    assert await snap.get() is first
    clock.t += 30.0  # the snapshot is now far past its window, the query still runs
    calls = await asyncio.wait_for(asyncio.gather(*(snap.get() for _ in range(20))), 1.0)
    assert all(c is first for c in calls) and fetch.calls == 1
    clock.t += 300.0  # a query that hangs past max_stale_seconds: unavailable, as before
    with pytest.raises(SnapshotUnavailable, match="still running"):
        await snap.get()
    gate.set()
    await until(lambda: snap.current is not first)
    # A query sent for a snapshot already past its window (twice that 330 s refresh: nobody
    # asked for 20 minutes): callers wait for it.
    clock.t += 1200.0
    fetch.ads = []
    gate.clear()
    waiting = asyncio.ensure_future(snap.get())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    gate.set()
    assert snap.lookup(await waiting, "a") is None


async def test_kept_fresh_between_calls_while_callers_come_back() -> None:
    fetch = Fetcher([job("a", 1, status=1)], delay=0)
    snap = JobSnapshot(fetch, 0.05, keep_fresh_seconds=0.4)
    try:
        await snap.get()
        await asyncio.sleep(0.25)  # the virtual kubelet's pause between two loops
        assert fetch.calls >= 3  # refreshed every interval meanwhile, with no call
        fetch.ads = [job("a", 1, status=2)]
        await asyncio.sleep(0.1)
        # The first call after the pause does not wait, and finds what changed meanwhile.
        first = await asyncio.wait_for(snap.get(), 0.01)
        assert found(snap.lookup(first, "a"))["JobStatus"] == 2
        assert snap.age(first) < 0.1  # within an interval and its serve-stale window
        await asyncio.sleep(0.6)  # nobody asked for longer than keep_fresh_seconds
        idle = fetch.calls
        await asyncio.sleep(0.2)
        assert fetch.calls == idle  # no more queries for nobody
    finally:
        snap.close()


async def test_without_keep_fresh_nothing_is_queried_between_calls() -> None:
    fetch = Fetcher([job("a", 1)], delay=0)
    snap = JobSnapshot(fetch, 0.02)
    await snap.get()
    await asyncio.sleep(0.15)
    assert fetch.calls == 1


async def test_deleted_pod_is_hidden_until_requeried() -> None:
    clock = Clock()
    fetch = Fetcher([job("a", 1)])
    snap = JobSnapshot(fetch, 1.0, clock=clock)
    s1 = await snap.get()
    snap.note_deleted("a")
    assert snap.lookup(s1, "a") is None


async def test_failure_serves_stale_then_raises() -> None:
    clock = Clock()
    fetch = Fetcher([job("a", 1)])
    snap = JobSnapshot(fetch, 1.0, max_stale_seconds=10, clock=clock)
    await snap.get()
    fetch.fail = RuntimeError("schedd down")
    clock.t += 2
    stale = await snap.get()
    assert snap.lookup(stale, "a") is not None
    calls = fetch.calls
    await snap.get()  # within the interval after a failure: no new query
    assert fetch.calls == calls
    clock.t += 20
    with pytest.raises(SnapshotUnavailable, match="schedd down"):
        await snap.get()


async def test_on_refresh_sees_each_new_snapshot() -> None:
    clock = Clock()
    seen: list[int] = []
    fetch = Fetcher([job("a", 1), job("b", 2, status=1)])
    snap = JobSnapshot(fetch, 5.0, clock=clock, on_refresh=lambda s: seen.append(len(s.jobs)))
    s = await snap.get()
    assert s.state_counts() == {2: 1, 1: 1}
    clock.t += 20  # older than interval + stale window: the next get waits for a query
    await snap.get()
    assert fetch.calls == 2 and seen == [2, 2]


async def test_missing_resolver_batches_and_caches() -> None:
    calls: list[list[str]] = []

    async def fetch(uids: list[str]) -> dict[str, dict[str, Any]]:
        calls.append(uids)
        return {"done": job("done", 3, status=4), "queued": job("queued", 4, status=1)}

    r = MissingJobResolver(fetch, batch_window=0.01)
    out = await asyncio.gather(r.resolve(["done", "gone"]), r.resolve(["queued", "done"]))
    assert len(calls) == 1 and sorted(calls[0]) == ["done", "gone", "queued"]
    assert found(out[0]["done"])["JobStatus"] == 4 and out[0]["gone"] is None
    assert found(out[1]["queued"])["JobStatus"] == 1
    # Final answers are cached, a job still queued is asked again.
    again = await r.resolve(["done", "gone", "queued"])
    assert len(calls) == 2 and calls[1] == ["queued"]
    assert found(again["done"])["ClusterId"] == 3


async def test_missing_resolver_propagates_errors() -> None:
    async def fetch(uids: list[str]) -> dict[str, dict[str, Any]]:
        raise RuntimeError("history unavailable")

    r = MissingJobResolver(fetch, batch_window=0.0)
    with pytest.raises(RuntimeError, match="history"):
        await r.resolve(["x"])


def test_apply_changes_shares_unchanged_ads_and_keeps_counts() -> None:
    a, b, c = job("a", 1, status=1), job("b", 2, status=1), job("c", 3, status=2)
    first = apply_changes(None, JobChanges({"a": a, "b": b, "c": c}, reset=True), 1.0, 1.5)
    assert first.state_counts() == {1: 2, 2: 1}
    b2 = job("b", 2, status=2)
    second = apply_changes(first, JobChanges({"b": b2}, frozenset({"c"})), 2.0, 2.5)
    assert second.jobs["a"] is a and second.jobs["b"] is b2 and "c" not in second.jobs
    assert second.state_counts() == {1: 1, 2: 1}
    assert first.jobs["b"] is b and "c" in first.jobs  # a snapshot never changes
    assert (second.started, second.finished) == (2.0, 2.5)
    # A removal of what was never known, then a reset that forgets everything before.
    third = apply_changes(second, JobChanges({}, frozenset({"zzz"})), 3.0, 3.0)
    assert third.jobs == second.jobs and third.state_counts() == second.state_counts()
    reset = apply_changes(third, JobChanges({"c": c}, reset=True), 4.0, 4.0)
    assert dict(reset.jobs) == {"c": c} and reset.state_counts() == {2: 1}


async def test_refreshes_apply_only_what_changed() -> None:
    clock = Clock()
    fetch = Fetcher([job("a", 1, status=1), job("b", 2, status=1)])
    snap = JobSnapshot(fetch, 1.0, clock=clock, serve_stale_seconds=0)
    s1 = await snap.get()
    a = found(snap.lookup(s1, "a"))
    fetch.ads = [job("a", 1, status=1), job("b", 2, status=2)]
    clock.t += 1.1
    s2 = await snap.get()
    assert snap.lookup(s2, "a") is a  # unchanged: the same object (answers cached by it)
    assert found(snap.lookup(s2, "b"))["JobStatus"] == 2
    assert s2.state_counts() == {1: 1, 2: 1}
