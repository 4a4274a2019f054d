"""The worker processes that run blocking calls (``service.worker_pool``): deadlines that
free the worker, calls that go on past their deadline, no unbounded queue behind stuck
workers, and errors that come back across the process boundary."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import signal
import stat
import time
from collections.abc import Iterator

import pytest

from interlink_htcondor.service.worker_pool import (
    CallTimeout,
    PoolBusy,
    RemoteError,
    WorkerLost,
    WorkerPool,
    _resident_mib,
)


class Unpicklable(Exception):
    def __init__(self, message: str, handle: object) -> None:
        super().__init__(message)
        self.handle = handle


def raise_unpicklable() -> None:
    raise Unpicklable("from the binding", lambda: None)


def sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool("test", 2, max_waiting=1)
    yield p
    p.close()


def test_calls_run_in_other_processes_and_errors_come_back(pool: WorkerPool) -> None:
    async def scenario() -> None:
        pid = await pool.run(sleep_then_pid, 0, timeout=30)
        assert pid != os.getpid()
        with pytest.raises(ZeroDivisionError):
            await pool.run(divmod, 1, 0, timeout=30)
        with pytest.raises(RemoteError, match="from the binding") as e:
            await pool.run(raise_unpicklable, timeout=30)
        assert e.value.type_name == "Unpicklable"
        assert await pool.run(sleep_then_pid, 0, timeout=30) == pid  # the worker is reused

    asyncio.run(scenario())


def test_a_killed_call_frees_its_worker_at_its_deadline(pool: WorkerPool) -> None:
    async def scenario() -> None:
        stuck = await pool.run(sleep_then_pid, 0, timeout=30)
        t0 = time.monotonic()
        with pytest.raises(CallTimeout):
            await pool.run(sleep_then_pid, 600, timeout=0.3)
        assert time.monotonic() - t0 < 5
        # Both slots are usable again at once: two calls in parallel, by new workers.
        pids = await asyncio.gather(*(pool.run(sleep_then_pid, 0.2, timeout=30) for _ in "ab"))
        assert len(set(pids)) == 2
        assert pool.busy == 0
        del stuck

    asyncio.run(scenario())


def test_a_kept_call_ends_later_with_its_outcome(pool: WorkerPool) -> None:
    async def scenario() -> None:
        with pytest.raises(CallTimeout) as e:
            await pool.run(sleep_then_pid, 1.0, timeout=0.2, on_timeout="keep")
        assert e.value.outcome is not None
        assert isinstance(await asyncio.wait_for(e.value.outcome, 30), int)

    asyncio.run(scenario())


def test_no_unbounded_queue_behind_stuck_workers(pool: WorkerPool) -> None:
    async def scenario() -> None:
        # Both workers stuck, one call waiting (max_waiting=1): the next fails at once.
        stuck = [
            asyncio.ensure_future(pool.run(sleep_then_pid, 5, timeout=2, on_timeout="kill"))
            for _ in range(2)
        ]
        while pool.busy < 2:
            await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(pool.run(sleep_then_pid, 0, timeout=30))
        await asyncio.sleep(0)
        t0 = time.monotonic()
        with pytest.raises(PoolBusy, match="busy"):
            await pool.run(sleep_then_pid, 0, timeout=30)
        assert time.monotonic() - t0 < 1
        # The waiting call gets a worker as soon as the stuck ones are killed.
        assert isinstance(await asyncio.wait_for(waiting, 30), int)
        for s in stuck:
            with pytest.raises(CallTimeout):
                await s

    asyncio.run(scenario())


def test_a_wait_for_a_worker_counts_in_the_deadline() -> None:
    async def scenario() -> None:
        pool = WorkerPool("one", 1)
        try:
            busy = asyncio.ensure_future(pool.run(sleep_then_pid, 3, timeout=30))
            while pool.busy < 1:
                await asyncio.sleep(0.01)
            t0 = time.monotonic()
            with pytest.raises(PoolBusy, match="stayed busy"):
                await pool.run(sleep_then_pid, 0, timeout=0.3)
            assert time.monotonic() - t0 < 2
            await busy
        finally:
            pool.close()

    asyncio.run(scenario())


def test_a_worker_that_dies_is_replaced(pool: WorkerPool) -> None:
    async def scenario() -> None:
        pid = await pool.run(sleep_then_pid, 0, timeout=30)
        with pytest.raises(WorkerLost):
            await pool.run(os.kill, pid, signal.SIGKILL, timeout=30)
        assert await pool.run(sleep_then_pid, 0, timeout=30) != pid

    asyncio.run(scenario())


_held: list[bytearray] = []


def hold_mib(mib: int) -> int:
    """Keep ``mib`` MiB resident in this worker (every page written)."""
    _held.append(bytearray(b"x" * (mib * 2**20)))
    return os.getpid()


def process_name() -> str:
    with open("/proc/self/comm") as f:
        return f.read().strip()


def frozen_objects() -> int:
    return gc.get_freeze_count()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_that_grew_past_its_bound_is_replaced_after_its_call() -> None:
    async def scenario() -> None:
        pool = WorkerPool("schedd-recycle", 1, recycle_mib=24)
        try:
            first = await pool.run(hold_mib, 8, timeout=60)
            assert await pool.run(sleep_then_pid, 0, timeout=60) == first  # 8 MiB: kept
            # The call that grows it past the bound still answers...
            assert await pool.run(hold_mib, 32, timeout=60) == first
            # ...and the next call runs in a fresh worker; the old one ended by itself.
            second = await pool.run(sleep_then_pid, 0, timeout=60)
            assert second != first
            deadline = time.monotonic() + 10
            while alive(first) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not alive(first)
            assert pool.busy == 0
        finally:
            pool.close()

    asyncio.run(scenario())


_state: dict[str, object] = {}


def keep_mib(mib: int) -> int:
    """Keep ``mib`` MiB in the state a worker hands over."""
    _state.setdefault("calls", 0)
    _state["calls"] = int(_state["calls"]) + 1  # type: ignore[call-overload]
    _state["held"] = b"x" * (mib * 2**20)  # every page written
    _state["pid"] = os.getpid()
    return os.getpid()


def state_seen() -> tuple[int, dict[str, object]]:
    return os.getpid(), {k: len(v) if isinstance(v, bytes) else v for k, v in _state.items()}


def give_state() -> dict[str, object]:
    return dict(_state)


def give_nothing() -> dict[str, object]:
    raise RuntimeError("cannot hand over")


def take_state(state: dict[str, object]) -> None:
    _state.update(state)


def test_a_recycled_worker_hands_its_state_to_its_successor() -> None:
    async def scenario() -> None:
        pool = WorkerPool("test-handover", 1, recycle_mib=24, handover=(give_state, take_state))
        try:
            first = await pool.run(keep_mib, 32, timeout=60)  # grew past the bound: retires
            second, seen = await pool.run(state_seen, timeout=60)
            assert second != first
            assert seen == {"calls": 1, "held": 32 * 2**20, "pid": first}
            # What it inherited is its start, not growth: it is kept.
            assert (await pool.run(state_seen, timeout=60))[0] == second
            # The state went through a private file, taken and removed by the successor.
            directory = pool._handover_dir
            assert directory is not None
            assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
            assert os.listdir(directory) == []
        finally:
            pool.close()
        assert not os.path.exists(directory)

    asyncio.run(scenario())


def take_badly(state: dict[str, object]) -> None:
    raise ValueError("not this state")


def test_a_state_that_cannot_be_taken_leaves_a_fresh_successor() -> None:
    async def scenario() -> None:
        pool = WorkerPool("test-handover", 1, recycle_mib=24, handover=(give_state, take_badly))
        try:
            first = await pool.run(keep_mib, 32, timeout=60)
            second, seen = await pool.run(state_seen, timeout=60)
            assert second != first and seen == {}
            assert pool._handover_dir is not None and os.listdir(pool._handover_dir) == []
        finally:
            pool.close()

    asyncio.run(scenario())


def test_a_state_that_cannot_be_handed_over_leaves_a_fresh_successor() -> None:
    async def scenario() -> None:
        pool = WorkerPool("test-handover", 1, recycle_mib=24, handover=(give_nothing, take_state))
        try:
            first = await pool.run(keep_mib, 32, timeout=60)
            second, seen = await pool.run(state_seen, timeout=60)
            assert second != first and seen == {}
        finally:
            pool.close()

    asyncio.run(scenario())


def test_without_a_bound_a_worker_is_kept_whatever_it_holds(pool: WorkerPool) -> None:
    async def scenario() -> None:
        first = await pool.run(hold_mib, 32, timeout=60)
        assert await pool.run(sleep_then_pid, 0, timeout=60) == first

    asyncio.run(scenario())


def test_workers_are_named_after_their_pool_and_freeze_what_they_inherit() -> None:
    async def scenario() -> None:
        pool = WorkerPool("schedd-snapshot", 1)
        try:
            assert await pool.run(process_name, timeout=60) == "schedd-snapshot"
            assert await pool.run(frozen_objects, timeout=60) > 1000
        finally:
            pool.close()

    asyncio.run(scenario())


def hold_and_drop_c_heap(mib: int) -> None:
    """Allocate ``mib`` MiB of small C-heap blocks (below glibc's mmap threshold) and free
    all but one in 64: what the bindings' 10,000 ClassAds leave behind (free pages inside
    the heap, which ``free`` keeps)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(4096) for _ in range(mib * 256)]
    for b in blocks:
        ctypes.memset(b, 1, 4096)
    for i, b in enumerate(blocks):
        if i % 64:
            libc.free(b)  # the blocks left keep the pages between them in the heap


def test_a_worker_gives_back_the_c_heap_a_large_call_freed(pool: WorkerPool) -> None:
    async def scenario() -> None:
        before = await pool.run(_resident_mib, timeout=60)
        await pool.run(hold_and_drop_c_heap, 64, timeout=60)
        after = await pool.run(_resident_mib, timeout=60)
        assert before is not None and after is not None
        assert after - before < 16, (before, after)

    asyncio.run(scenario())
