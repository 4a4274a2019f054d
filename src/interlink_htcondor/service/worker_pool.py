"""Worker processes for blocking calls that hold Python's GIL while they wait.

The HTCondor bindings keep the GIL for the whole of a call: a schedd that does not answer
froze every thread of the plugin (the event loop included) until the bindings' own
timeout, some 20 s later. So each binding call runs in a worker process of its own, and
the plugin's threads only wait on a pipe (which releases the GIL).

A ``WorkerPool`` holds at most ``size`` processes, started on demand from a fork server
that has the calling module preloaded (a new worker costs a fork, not an interpreter
start). Every call has a deadline, counted from the moment it asks for a worker:

- no worker free before the deadline, or more than ``max_waiting`` calls already waiting:
  ``PoolBusy`` at once (work never queues without bound behind stuck workers);
- the call itself past the deadline: ``CallTimeout``. With ``on_timeout="kill"`` (calls
  that are safe to abandon: queries) the worker is killed, which frees its slot for the
  next call at once; with ``"keep"`` (calls that may still take effect: a submit) it
  goes on, and ``CallTimeout.outcome`` resolves when it really ends.

Functions and arguments travel by pickle, so a function must be importable by name. An
exception that cannot be pickled (the bindings' own) comes back as ``RemoteError`` with
its type name and message.

Memory: a worker shares the fork server's pages until it writes to them, and a full
garbage collection writes to every object it walks; so a worker first moves what it
inherited out of the collector's reach (``gc.freeze``). A large answer leaves freed
memory behind that the C allocator keeps: after a call that grew the worker by
``TRIM_AFTER_MIB``, it is given back (``malloc_trim``). With ``recycle_mib``, a worker
still more than that larger than it started ends after the call, and the next call gets
a fresh one. A pool whose workers keep state between calls (``handover``) has a retiring
worker hand it to its successor, which takes it before it measures its own start: memory
that the state explains is not growth. The state goes through a file of the pool's own
private directory (0700, its files 0600), written and read as a stream: neither the
parent nor either worker ever holds it as one block of bytes. Each worker names itself
after its pool (``ps -o comm``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Literal, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
# What a retiring worker hands its successor: (give, take), both importable by name; the
# successor runs ``take(give())`` (the value goes through a private file, never the parent).
Handover = tuple[Callable[[], Any], Callable[[Any], None]]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# A worker whose resident memory grew by this much since it last did so gives the free
# pages of its C heap back (a 10,000-job answer leaves some 24 MiB of them, a piece of a
# full listing some 5 MiB; a trim takes a few ms).
TRIM_AFTER_MIB = 2.0
# A recycled worker that has not ended this long after its last answer is killed.
RETIRE_GRACE_SECONDS = 5.0
_preload_lock = threading.Lock()
_preloaded: set[str] = set()


class PoolBusy(Exception):
    """No worker became free before the call's deadline (or too many calls wait)."""


class CallTimeout(Exception):
    """The call did not end before its deadline. ``outcome`` (``on_timeout="keep"``)
    resolves to its result, or raises its error, once it ends."""

    def __init__(self, message: str, outcome: asyncio.Future[Any] | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome


class WorkerLost(Exception):
    """The worker process died during the call (killed, or crashed)."""


class RemoteError(Exception):
    """An exception raised in a worker that could not travel back as itself."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteError, (self.type_name, str(self)))


def portable(error: BaseException) -> BaseException:
    """``error`` itself when it survives a pickle round trip, else a ``RemoteError``."""
    try:
        pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    except Exception:
        return RemoteError(type(error).__name__, str(error))
    return error


def _resident_mib() -> float | None:
    """This process's resident memory (Linux), None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * _PAGE_SIZE / 2**20


def _heap_trimmer() -> Callable[[int], object] | None:
    """glibc's ``malloc_trim(0)``, which gives the free pages inside the C heap back to the
    system (``free`` keeps them); None where there is no glibc."""
    try:
        trim: Callable[[int], object] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def _name_process(name: str) -> None:
    # What ps -o comm and top show (the kernel keeps 15 bytes); Linux only, best effort.
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as f:
        f.write(name[:15])


def _serve(
    conn: Connection,
    setup: Callable[..., None] | None,
    setup_args: Sequence[Any],
    name: str = "",
    recycle_mib: float | None = None,
    handover: Handover | None = None,
    handover_dir: str | None = None,
    inherited: str | None = None,
) -> None:
    """A worker's main loop: one call at a time until the pipe closes, or until a call
    left it more than ``recycle_mib`` larger than it started (it says so with the answer,
    then writes what ``handover`` gives to a file of ``handover_dir`` and sends its path).
    ``inherited``: the file its predecessor wrote, taken (and removed) first."""
    gc.freeze()  # what the fork server holds stays shared (see the module's doc)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the parent
    if name:
        _name_process(name)
    if setup is not None:
        setup(*setup_args)
    if inherited is not None and handover is not None:
        _take(inherited, handover[1])
    trim = _heap_trimmer()
    start = trimmed = _resident_mib()
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            out: tuple[bool, Any] = (True, fn(*args))
        except BaseException as e:  # everything goes back to the caller
            out = (False, portable(e))
        now = _resident_mib()
        if now is not None and trimmed is not None and now - trimmed > TRIM_AFTER_MIB:
            if trim is not None:
                trim(0)
            trimmed = now = _resident_mib()
        retire = False
        if recycle_mib and now is not None and start is not None:
            retire = now - start > recycle_mib
        try:
            conn.send((*out, retire))
        except (EOFError, OSError):
            return
        except Exception as e:  # an unpicklable result
            conn.send((False, RemoteError(type(e).__name__, f"result not sendable: {e}"), retire))
        if retire:
            if handover is not None and handover_dir is not None:
                _give(conn, handover[0], handover_dir)
            return


def _give(conn: Connection, give: Callable[[], Any], directory: str) -> None:
    """Write what ``give`` returns to a new file of ``directory`` and send its path; an
    empty path if that fails (the successor then starts afresh)."""
    fd, path = tempfile.mkstemp(dir=directory, suffix=".pickle")  # 0600
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(give(), f, pickle.HIGHEST_PROTOCOL)  # streamed, frame by frame
    except Exception:
        log.exception("a retiring worker could not hand its state over")
        with contextlib.suppress(OSError):
            Path(path).unlink()
        path = ""
    with contextlib.suppress(EOFError, OSError):
        conn.send_bytes(path.encode())


def _take(path: str, take: Callable[[Any], None]) -> None:
    """Take the state in ``path`` (written by ``_give`` in the pool's private directory)
    and remove the file; a state that cannot be read leaves the worker fresh."""
    try:
        with open(path, "rb") as f:
            state = pickle.load(f)  # noqa: S301
        take(state)
    except Exception:
        log.exception("a worker could not take its predecessor's state")
    finally:
        with contextlib.suppress(OSError):
            Path(path).unlink()


class _Worker:
    def __init__(
        self, proc: multiprocessing.process.BaseProcess, conn: Connection, hands_over: bool
    ) -> None:
        self.proc = proc
        self.conn = conn
        self.dead = False
        self.retired = False
        self.hands_over = hands_over
        self.legacy: str | None = None  # the file it handed its state over in, as it retired

    def roundtrip(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Blocking (in a thread): send the call, wait for its answer."""
        try:
            self.conn.send((fn, args))
            ok, value, retired = self.conn.recv()
        except (EOFError, OSError) as e:
            self.dead = True
            raise WorkerLost(f"worker process {self.proc.pid} exited during the call") from e
        if retired:  # it ends by itself: replaced, not killed
            self.retired = self.dead = True
            if self.hands_over:
                with contextlib.suppress(EOFError, OSError):
                    self.legacy = self.conn.recv_bytes().decode() or None
        if not ok:
            raise value
        return value

    def kill(self) -> None:
        self.dead = True
        with contextlib.suppress(Exception):
            self.proc.kill()

    def reap(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.join(2)
        with contextlib.suppress(Exception):
            self.conn.close()

    def dismiss(self, deadline: float) -> None:
        """An idle worker: its pipe closes and it ends by itself (its ``atexit`` and
        ``os._exit`` paths run); killed if it has not ended by ``deadline``."""
        self.dead = True
        with contextlib.suppress(Exception):
            self.conn.close()
        with contextlib.suppress(Exception):
            self.proc.join(max(0.0, deadline - time.monotonic()))
        if self.proc.exitcode is None:
            self.kill()


class WorkerPool:
    """At most ``size`` worker processes; see the module's doc.

    ``setup(*setup_args)`` runs in each new worker before its first call; ``setup_args``
    is called in the parent each time a worker starts (so a worker gets the parent's
    state of that moment). ``recycle_mib`` and ``handover``: see the module's doc
    (None: never, nothing).
    """

    def __init__(
        self,
        name: str,
        size: int,
        *,
        preload: Sequence[str] = (),
        setup: Callable[..., None] | None = None,
        setup_args: Callable[[], Sequence[Any]] = tuple,
        max_waiting: int | None = None,
        recycle_mib: float | None = None,
        handover: Handover | None = None,
    ) -> None:
        self.name = name
        self.recycle_mib = recycle_mib
        self._handover = handover
        # Private (0700): the state files that retiring workers leave to their successors.
        self._handover_dir = (
            tempfile.mkdtemp(prefix=f"{name}-handover-") if handover is not None else None
        )
        # The last worker that retired with a state to hand over, perhaps still ending.
        self._predecessor: _Worker | None = None
        self.size = size
        self.max_waiting = 4 * size if max_waiting is None else max_waiting
        self._ctx = multiprocessing.get_context("forkserver")
        with _preload_lock:
            # One fork server per process: what any pool preloads, all preload.
            _preloaded.update(preload)
            self._ctx.set_forkserver_preload(sorted(_preloaded))
        self._setup = setup
        self._setup_args = setup_args
        # One thread per worker at most, each waiting on its worker's pipe.
        self._threads = ThreadPoolExecutor(size, thread_name_prefix=f"{name}-pipe")
        self._idle: list[_Worker] = []
        self._count = 0  # workers alive or starting
        self._waiters: deque[asyncio.Future[_Worker]] = deque()
        self._all: set[_Worker] = set()
        self._closed = False

    @property
    def busy(self) -> int:
        """Workers in a call (or starting)."""
        return self._count - len(self._idle)

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout: float,
        on_timeout: Literal["kill", "keep"] = "kill",
        retire_on_error: bool = False,
    ) -> T:
        """``fn(*args)`` in a worker, within ``timeout`` seconds (see the module's doc).
        ``retire_on_error``: a worker whose call raised is replaced (whatever it cached,
        such as security sessions with a daemon that restarted, goes with it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        worker = await self._acquire(deadline)
        call = loop.run_in_executor(self._threads, worker.roundtrip, fn, args)

        def ended(f: asyncio.Future[Any]) -> None:
            failed = not f.cancelled() and f.exception() is not None
            if failed and retire_on_error:
                worker.dead = True
            self._release(worker)

        call.add_done_callback(ended)
        try:
            return await asyncio.wait_for(asyncio.shield(call), max(0.0, deadline - loop.time()))
        except TimeoutError:
            if on_timeout == "kill":
                worker.kill()  # its thread sees the pipe close and frees the slot
                call.add_done_callback(_retrieve)
                raise CallTimeout(f"no answer within {timeout:g} s") from None
            raise CallTimeout(f"no answer within {timeout:g} s", call) from None
        except asyncio.CancelledError:
            call.add_done_callback(_retrieve)
            raise

    async def _acquire(self, deadline: float) -> _Worker:
        if self._closed:
            raise PoolBusy(f"{self.name}: closed")
        while self._idle:
            worker = self._idle.pop()
            if not worker.dead and worker.proc.is_alive():
                return worker
            self._discard(worker)
        loop = asyncio.get_running_loop()
        if self._count < self.size:
            self._count += 1
            task = asyncio.ensure_future(self._start())
            try:
                return await asyncio.wait_for(
                    asyncio.shield(task), max(0.0, deadline - loop.time())
                )
            except (TimeoutError, asyncio.CancelledError) as e:
                task.add_done_callback(self._started_late)
                if isinstance(e, TimeoutError):
                    raise PoolBusy(f"{self.name}: no worker could be started in time") from None
                raise
        if len(self._waiters) >= self.max_waiting:
            raise PoolBusy(
                f"all {self.size} {self.name} workers busy and {len(self._waiters)} calls waiting"
            )
        fut: asyncio.Future[_Worker] = loop.create_future()
        self._waiters.append(fut)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - loop.time()))
        except (TimeoutError, asyncio.CancelledError) as e:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release(fut.result())  # handed over just now: pass it on
            fut.cancel()
            if isinstance(e, TimeoutError):
                raise PoolBusy(f"all {self.size} {self.name} workers stayed busy") from None
            raise

    async def prestart(self) -> None:
        """Start one worker ahead of the first call (the first start also starts the fork
        server, which imports the preloaded modules: seconds, not milliseconds)."""
        if self._count == 0 and not self._closed:
            self._count += 1
            self._release(await self._start())

    async def _start(self) -> _Worker:
        """A new worker (its slot is already counted; given back on failure)."""
        try:
            return await self._spawn()
        except BaseException:
            self._count -= 1
            raise

    def _started_late(self, task: asyncio.Future[_Worker]) -> None:
        if not task.cancelled() and task.exception() is None:
            self._release(task.result())

    async def _spawn(self) -> _Worker:
        predecessor, self._predecessor = self._predecessor, None
        legacy = predecessor.legacy if predecessor is not None else None

        def start() -> _Worker:
            if predecessor is not None:
                # Not both at once: it is still as large as the state its successor takes.
                wait([predecessor.proc.sentinel], RETIRE_GRACE_SECONDS)
            parent, child = self._ctx.Pipe()
            proc = self._ctx.Process(
                target=_serve,
                args=(
                    child,
                    self._setup,
                    tuple(self._setup_args()),
                    self.name,
                    self.recycle_mib,
                    self._handover,
                    self._handover_dir,
                    legacy,
                ),
                name=f"{self.name}-worker",
                daemon=True,
            )
            try:
                proc.start()
            except BaseException:
                if legacy is not None:
                    with contextlib.suppress(OSError):
                        Path(legacy).unlink()
                raise
            finally:
                child.close()
            return _Worker(proc, parent, self._handover is not None)

        worker = await asyncio.to_thread(start)
        self._all.add(worker)
        if self._closed:
            worker.kill()
        return worker

    def _release(self, worker: _Worker) -> None:
        """A call ended: the worker serves the next waiter, or waits idle."""
        if worker.dead or self._closed:
            self._discard(worker)
            return
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(worker)
                return
        self._idle.append(worker)

    def _discard(self, worker: _Worker) -> None:
        if worker not in self._all:
            return
        self._all.discard(worker)
        self._count -= 1
        if worker.legacy is not None:
            self._predecessor = worker
        end: Callable[[], None]
        if worker.retired:  # ending by itself
            end = functools.partial(worker.dismiss, time.monotonic() + RETIRE_GRACE_SECONDS)
        else:
            worker.kill()
            end = worker.reap
        threading.Thread(target=end, daemon=True).start()
        # A slot is free: start a worker for the first caller still waiting.
        while self._waiters and not self._closed:
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self._count += 1
            task = asyncio.ensure_future(self._start())
            task.add_done_callback(functools.partial(self._handed, fut=fut))
            return

    def _handed(self, task: asyncio.Future[_Worker], *, fut: asyncio.Future[_Worker]) -> None:
        if task.cancelled() or task.exception() is not None:
            if not fut.done():
                fut.set_exception(PoolBusy(f"{self.name}: cannot start a worker"))
            return
        worker = task.result()
        if fut.done():
            self._release(worker)
        else:
            fut.set_result(worker)

    def close(self, grace: float = 1.0) -> None:
        """Kill the workers in a call (the call ends with ``WorkerLost``); idle ones end
        by themselves, within ``grace`` seconds (this call waits for them)."""
        self._closed = True
        for fut in self._waiters:
            fut.cancel()
        self._waiters.clear()
        idle = set(self._idle)
        for worker in self._all - idle:
            worker.kill()
        deadline = time.monotonic() + grace
        for worker in idle:
            worker.dismiss(deadline)
        self._idle.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._handover_dir is not None:
            shutil.rmtree(self._handover_dir, ignore_errors=True)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # An abandoned call's outcome is read here so that nothing warns about it.
    if not fut.cancelled():
        fut.exception()
