"""The sandbox store: every file the plugin writes or deletes for a pod, and its lock file.

A pod's sandbox is a directory under ``storage.shared_dir`` holding the job wrapper, the
job spec and the volume contents (``plan.files``); the job writes its logs and
``status.json`` there too. Nothing is ever written outside the sandbox, nor deleted
outside ``shared_dir``.

The lock file ``<shared_dir>/.locks/<uid>`` makes creates of one pod take turns, within
this process (an asyncio lock) and across processes (``flock``: a restart racing the old
process, two replicas on one host). It also records the pod's job id once submitted, so a
repeated create is answered without asking the schedd, and "submitting" while a submit is
under way: a submit cut short leaves that, and only the schedd can tell whether it
happened.

Blocking work runs in threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import shutil
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.jobspec import STATUS_FILE
from interlink_htcondor.core.plan import JobPlan
from interlink_htcondor.core.translate import TranslationError, sandbox_dir
from interlink_htcondor.settings import Settings

log = logging.getLogger(__name__)

LOCK_DIR = ".locks"
MARKER_SUBMITTING = "submitting\n"
MARKER_JOB = "job "
# The wrapper's status.json of even a large pod is a few kB; the job can write anything
# there, so the plugin never reads more than this.
STATUS_FILE_LIMIT = 1 << 20


class PodClaim:
    """A pod's lock file, held until ``release()``. ``job_id`` is the job it records;
    ``cut_short`` says a submit was under way when its process stopped (only the schedd
    knows whether it happened)."""

    def __init__(self, uid: str, fd: int, lock: asyncio.Lock, marker: str) -> None:
        self.uid = uid
        self._fd: int | None = fd
        self._lock = lock
        # A marker write in a thread and ``release`` on the loop never overlap (no write
        # to a closed, maybe reused, descriptor when a call is cancelled).
        self._fd_mutex = threading.Lock()
        self.marker = marker

    @property
    def job_id(self) -> str | None:
        if self.marker.startswith(MARKER_JOB):
            return self.marker[len(MARKER_JOB) :].strip()
        return None

    @property
    def cut_short(self) -> bool:
        return bool(self.marker) and self.job_id is None

    async def mark_submitting(self, store: SandboxStore, plan: JobPlan, sandbox: Path) -> None:
        """Record that a submit is under way, then write the pod's files."""

        def run() -> None:
            self._write(MARKER_SUBMITTING)
            store.write(plan, sandbox)

        await asyncio.to_thread(run)

    async def record(self, job_id: str) -> None:
        """Record the pod's job ("" when the submit failed: nothing is under way)."""
        await asyncio.to_thread(self._write, MARKER_JOB + job_id if job_id else "")

    def _write(self, text: str) -> None:
        with self._fd_mutex:
            if self._fd is None:
                return
            _write_marker(self._fd, text)
            self.marker = text

    def release(self) -> None:
        with self._fd_mutex:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
            self._lock.release()


class SandboxStore:
    """Pod sandboxes and lock files under ``storage.shared_dir``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.root = settings.storage.shared_dir
        self.lock_dir = self.root / LOCK_DIR
        self._uid_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def sandbox_of(
        self, namespace: str, name: str, uid: str, ad: Mapping[str, Any] | None = None
    ) -> Path | None:
        """The pod's sandbox: as its job records it, else where this plugin would put it;
        None for a pod whose identity could never have been created."""
        recorded = ad.get(classad_attrs.SANDBOX) if ad is not None else None
        if isinstance(recorded, str) and recorded:
            return Path(recorded)
        try:
            return sandbox_dir(self._settings, namespace, name, uid)
        except TranslationError:
            return None

    async def claim(self, uid: str) -> PodClaim:
        """Take the pod's lock file: one create of a pod at a time, in this process and
        across processes. The caller must ``release()`` it."""
        lock = self._uid_locks.get(uid)
        if lock is None:
            lock = asyncio.Lock()
            self._uid_locks[uid] = lock
        await lock.acquire()
        opening = asyncio.ensure_future(asyncio.to_thread(self._open_locked, uid))
        try:
            fd, marker = await asyncio.shield(opening)
        except BaseException:
            lock.release()
            # Cancelled while the thread waits for the flock: close the file once it has it.
            opening.add_done_callback(_close_opened)
            raise
        return PodClaim(uid, fd, lock, marker)

    def _open_locked(self, uid: str) -> tuple[int, str]:
        self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        while True:
            path = self.lock_dir / _safe_name(uid)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_nlink == 0:
                    # Its holder deleted it (a failed create, a delete): lock the new one.
                    os.close(fd)
                    continue
                return fd, _read_marker(fd)
            except BaseException:
                os.close(fd)
                raise

    async def discard(self, claim: PodClaim, sandbox: Path) -> None:
        """A create failed for sure: delete its sandbox and its lock file (still held, so
        no other create of the pod sees either half-way)."""

        def run() -> None:
            try:
                _rmtree(sandbox, self.root)
            except OSError as e:  # not a directory of ours (in the way): left for the admin
                log.warning("cannot delete %s: %s", sandbox, e.strerror)
            with contextlib.suppress(FileNotFoundError):
                (self.lock_dir / _safe_name(claim.uid)).unlink()
            claim.marker = ""

        await asyncio.to_thread(run)

    def write(self, plan: JobPlan, sandbox: Path) -> None:
        """Write the plan's files with their modes (blocking); nothing may land outside
        ``sandbox``."""
        write_sandbox(plan, sandbox)

    async def read_status_file(self, sandbox: Path) -> bytes:
        """The wrapper's ``status.json``, at most ``STATUS_FILE_LIMIT`` bytes (b"" when
        absent, unreadable or larger: the job controls it)."""
        return await asyncio.to_thread(_read_bounded, sandbox / STATUS_FILE, STATUS_FILE_LIMIT)

    async def remove(self, uid: str, sandbox: Path | None) -> None:
        """Delete everything written for the pod: its sandbox and its lock file."""
        await asyncio.to_thread(self._remove, uid, sandbox)

    def _remove(self, uid: str, sandbox: Path | None) -> None:
        if sandbox is not None:
            _rmtree(sandbox, self.root)
        with contextlib.suppress(FileNotFoundError):
            (self.lock_dir / _safe_name(uid)).unlink()


def _close_opened(fut: asyncio.Future[tuple[int, str]]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        os.close(fut.result()[0])


def _read_marker(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 256).decode(errors="replace")


def _write_marker(fd: int, text: str) -> None:
    # No fsync: the marker must survive the process, not the machine (the page cache
    # serves the next process; after a machine crash the "submitting" check still holds).
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, text.encode())


def _safe_name(uid: str) -> str:
    # UIDs are validated by the translator; this keeps a hostile one inside the lock dir.
    return "".join(ch if ch.isalnum() or ch == "-" else "_" for ch in uid)[:128] or "_"


def _read_bounded(path: Path, limit: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return b""
    try:
        data = os.read(fd, limit + 1)
    except OSError:
        return b""
    finally:
        os.close(fd)
    if len(data) > limit:
        log.warning("ignoring an oversized file", extra={"path": str(path), "limit": limit})
        return b""
    return data


def write_sandbox(plan: JobPlan, sandbox: Path) -> None:
    """Write the plan's files with their modes; nothing may land outside ``sandbox``."""
    if not sandbox.is_absolute():
        raise ValueError(f"sandbox {sandbox} is not an absolute path")
    sandbox.mkdir(mode=0o700, parents=True, exist_ok=True)
    made: set[Path] = set()
    for f in plan.files:
        rel = Path(f.path)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"sandbox file path {f.path!r} escapes the sandbox")
        target = sandbox / rel
        if rel.parent not in made:
            _mkdirs(sandbox, rel.parent)
            made.add(rel.parent)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            fd = os.open(target, flags, 0o600)
        except FileExistsError:
            target.unlink()  # never write through an existing file or link
            fd = os.open(target, flags, 0o600)
        try:
            view = memoryview(f.content)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fchmod(fd, f.mode)
        finally:
            os.close(fd)


def _mkdirs(root: Path, rel: Path) -> None:
    cur = root
    for part in rel.parts:
        cur = cur / part
        try:
            cur.mkdir(mode=0o755)
        except FileExistsError:
            if cur.is_symlink() or not cur.is_dir():
                raise ValueError(f"sandbox path {cur} is not a directory") from None


def _rmtree(path: Path, root: Path) -> None:
    """Remove a pod's sandbox, refusing anything that is not strictly below ``root``."""
    try:
        resolved_root = root.resolve()
        resolved = path.resolve()
    except OSError:
        return
    if resolved == resolved_root or resolved_root not in resolved.parents:
        log.warning("refusing to delete %s: not inside %s", path, root)
        return
    try:
        shutil.rmtree(resolved)
    except FileNotFoundError:
        return
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
