"""The schedd gateway: the only module that talks to HTCondor (htcondor2 bindings).

Every binding call blocks, so each runs in a bounded thread pool (``schedd.threads``) with
a timeout and, where the call is safe to repeat, retries that locate the schedd again.
The event loop never waits on the schedd directly.

Idempotent submission: the same pod UID never gives two jobs. Within this process a
per-UID asyncio lock serialises creates; across processes (a restart racing the old
process, or two replicas on one host) an ``flock`` on ``<shared_dir>/.locks/<uid>`` does.
That lock file also records the pod's job id once submitted, so a repeated create is
answered without asking the schedd; a submit cut short (the file says "submitting") is
checked against the schedd before anything is submitted again. The server also answers
from its job snapshot when that already shows the pod's job.
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
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import classad2
import htcondor2

from interlink_htcondor import attrs
from interlink_htcondor.itemdata import SubmitRefused, batch, check_commands, refused_description
from interlink_htcondor.plan import JobPlan
from interlink_htcondor.settings import ScheddSettings, Settings
from interlink_htcondor.status import FROM_HISTORY, PROJECTION, REMOVED, job_id

log = logging.getLogger(__name__)

T = TypeVar("T")
Ad = dict[str, Any]
Observer = Callable[[str, float, bool], None]  # (operation, seconds, ok)

LOCK_DIR = ".locks"
# At most this many pod UIDs in one ``member(...)`` constraint.
UID_BATCH = 200
_configured = False
_config_lock = threading.Lock()


class ScheddError(Exception):
    """The schedd (or collector) could not be reached or refused the call."""


@dataclass(frozen=True)
class Capacity:
    cpus: int
    memory_mib: int
    gpus: int
    slots: int
    # The most one slot can give a job, per resource (a partitionable slot's total).
    largest: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Submitted:
    job_id: str
    created: bool  # False when the pod already had a job (idempotent create)
    ad: Ad


def configure_htcondor(cfg: ScheddSettings) -> None:
    """Point the bindings at the configured pool and credentials (once per process).

    The bindings read ``_CONDOR_<KNOB>`` environment variables; only knobs the admin set
    are touched, so a site's own ``CONDOR_CONFIG`` keeps working.
    """
    global _configured
    with _config_lock:
        knobs: dict[str, str] = {}
        if cfg.collector:
            knobs["COLLECTOR_HOST"] = cfg.collector
        if cfg.auth_methods:
            knobs["SEC_CLIENT_AUTHENTICATION_METHODS"] = cfg.auth_methods
        if cfg.token_dir is not None:
            # A root client reads the system directory, others the user one.
            knobs["SEC_TOKEN_DIRECTORY"] = str(cfg.token_dir)
            knobs["SEC_TOKEN_SYSTEM_DIRECTORY"] = str(cfg.token_dir)
        if cfg.scitoken_file is not None:
            knobs["SCITOKENS_FILE"] = str(cfg.scitoken_file)
        changed = False
        for knob, value in knobs.items():
            key = f"_CONDOR_{knob}"
            if os.environ.get(key) != value:
                os.environ[key] = value
                changed = True
        if changed or not _configured:
            htcondor2.reload_config()
        _configured = True


def quote(value: str) -> str:
    """A ClassAd string literal (escapes quotes and backslashes)."""
    return str(classad2.quote(value))


def plain(ad: Any) -> Ad:
    """A ClassAd as a plain dict of Python values (expressions evaluated, UNDEFINED and
    ERROR dropped). Iterates the ad's own items: with a projection, only those."""
    out: Ad = {}
    for k, v in ad.items():
        if isinstance(v, classad2.ExprTree):
            try:
                v = ad.eval(k)
            except Exception:  # noqa: S112 - an unevaluable expression is as good as absent
                continue
        if isinstance(v, classad2.Value):
            continue
        out[k] = v
    return out


@dataclass
class _Pending:
    """One create waiting in a submit batch."""

    plan: JobPlan
    sandbox: Path
    result: Submitted | None = None
    error: BaseException | None = None


class _Batcher:
    """Gathers the submits that arrive within ``window`` seconds (at most ``limit``) and
    hands them to ``run`` (a blocking call in the gateway's pool) as one batch per set of
    submit commands (a cluster's procs share one template)."""

    def __init__(
        self,
        run: Callable[[str, Callable[[], None]], Awaitable[None]],
        work: Callable[[list[_Pending]], None],
        window: float = 0.005,
        limit: int = 64,
    ) -> None:
        self._run = run
        self._work = work
        self._window = window
        self._limit = limit
        self._queue: list[tuple[_Pending, asyncio.Future[Submitted]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._full = asyncio.Event()

    async def submit(self, item: _Pending) -> Submitted:
        fut: asyncio.Future[Submitted] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if len(self._queue) >= self._limit:
            self._full.set()
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return await fut

    async def _flush(self) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._window)
            self._full.clear()
            queue, self._queue = self._queue[: self._limit], self._queue[self._limit :]
            groups: dict[tuple[str, ...], list[tuple[_Pending, asyncio.Future[Submitted]]]] = {}
            for item, fut in queue:
                key = tuple(sorted(item.plan.submit))
                groups.setdefault(key, []).append((item, fut))
            await asyncio.gather(*(self._one_batch(g) for g in groups.values()))
        finally:
            self._flusher = None
            if self._queue:
                self._flusher = asyncio.ensure_future(self._flush())

    async def _one_batch(self, group: list[tuple[_Pending, asyncio.Future[Submitted]]]) -> None:
        items = [item for item, _ in group]
        try:
            await self._run("submit", lambda: self._work(items))
        except Exception as e:
            for item in items:
                if item.result is None and item.error is None:
                    item.error = e
        for item, fut in group:
            if fut.done():
                continue
            if item.result is not None:
                fut.set_result(item.result)
            else:
                fut.set_exception(item.error or RuntimeError("submit gave no result"))


class ScheddGateway:
    """Async facade over the bindings for everything the plugin asks of HTCondor."""

    def __init__(self, settings: Settings, observer: Observer | None = None) -> None:
        self._settings = settings
        self._cfg = settings.schedd
        configure_htcondor(self._cfg)
        self._pool = ThreadPoolExecutor(self._cfg.threads, thread_name_prefix="schedd")
        self._observer = observer
        self._location: Any = None
        self._location_lock = threading.Lock()
        self._uid_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.instance = settings.policy.instance
        self.spool = settings.storage.mode == "spool"
        self.lock_dir = settings.storage.shared_dir / LOCK_DIR
        self.mine = f"{attrs.PLUGIN} == {quote(self.instance)}"
        self._batcher = _Batcher(self._submit_call, self._submit_batch)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ plumbing

    def _schedd(self) -> Any:
        """The schedd, located through the collector once and again after failures."""
        with self._location_lock:
            if self._location is None:
                coll = htcondor2.Collector(self._cfg.collector or None)
                name = self._cfg.schedd_name or None
                self._location = coll.locate(htcondor2.DaemonType.Schedd, name)
            return htcondor2.Schedd(self._location)

    def _forget_location(self) -> None:
        with self._location_lock:
            self._location = None

    async def _call(self, op: str, fn: Callable[[], T], *, retry: bool = True) -> T:
        """Run a blocking binding call in the pool, with timeout and retries."""
        loop = asyncio.get_running_loop()
        attempts = 1 + (self._cfg.retries if retry else 0)
        last: BaseException | None = None
        for attempt in range(attempts):
            t0 = time.perf_counter()
            try:
                result = await asyncio.wait_for(
                    loop.run_in_executor(self._pool, fn), self._cfg.timeout_seconds
                )
            except (htcondor2.HTCondorException, OSError, TimeoutError, RuntimeError) as e:
                self._observe(op, time.perf_counter() - t0, False)
                last = e
                self._forget_location()
                if attempt + 1 < attempts:
                    await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
                continue
            self._observe(op, time.perf_counter() - t0, True)
            return result
        what = "timed out" if isinstance(last, TimeoutError) else str(last) or type(last).__name__
        raise ScheddError(f"schedd {op} failed: {what}") from last

    async def _submit_call(self, op: str, fn: Callable[[], None]) -> None:
        # Never retried: a timed-out submit may have happened (the markers tell).
        await self._call(op, fn, retry=False)

    def _observe(self, op: str, seconds: float, ok: bool) -> None:
        if self._observer is not None:
            self._observer(op, seconds, ok)

    def _uid_constraint(self, uids: Sequence[str]) -> str:
        if len(uids) == 1:
            return f"{attrs.POD_UID} == {quote(uids[0])} && {self.mine}"
        members = ", ".join(quote(u) for u in uids)
        return f"member({attrs.POD_UID}, {{{members}}}) && {self.mine}"

    # ------------------------------------------------------------------ queries

    async def ping(self) -> None:
        """Raise ScheddError unless the schedd answers a (trivial) query."""

        def run() -> None:
            self._schedd().query(constraint="false", projection=["ClusterId"], limit=1)

        await self._call("ping", run, retry=False)

    async def query_jobs(self) -> list[Ad]:
        """All of this plugin's jobs in the queue: one query, projected."""
        projection = list(PROJECTION)

        def run() -> list[Ad]:
            ads = self._schedd().query(constraint=self.mine, projection=projection)
            return [plain(a) for a in ads]

        return await self._call("query", run)

    async def jobs_of(self, uid: str) -> list[Ad]:
        """The queued jobs of one pod (normally zero or one)."""
        projection = list(PROJECTION)
        constraint = self._uid_constraint([uid])

        def run() -> list[Ad]:
            ads = self._schedd().query(constraint=constraint, projection=projection)
            return [plain(a) for a in ads]

        return await self._call("query_pod", run)

    async def find_jobs(self, uids: Sequence[str]) -> dict[str, Ad]:
        """Jobs of these pods, from the queue or else the history (newest first)."""
        found: dict[str, Ad] = {}
        projection = list(PROJECTION)
        for i in range(0, len(uids), UID_BATCH):
            batch = list(uids[i : i + UID_BATCH])
            constraint = self._uid_constraint(batch)

            def queue(c: str = constraint) -> list[Ad]:
                return [plain(a) for a in self._schedd().query(constraint=c, projection=projection)]

            for ad in await self._call("query_missing", queue):
                found.setdefault(str(ad.get(attrs.POD_UID)), ad)
            rest = [u for u in batch if u not in found]
            if not rest:
                continue
            hconstraint = self._uid_constraint(rest)

            def history(c: str = hconstraint, n: int = len(rest)) -> list[Ad]:
                ads = self._schedd().history(constraint=c, projection=projection, match=n * 4)
                return [{**plain(a), FROM_HISTORY: True} for a in ads]

            for ad in await self._call("history", history):
                found.setdefault(str(ad.get(attrs.POD_UID)), ad)
        return found

    async def capacity(self) -> Capacity:
        """What the pool's execute slots offer, summed over the collector's slot ads."""
        resources = ("Cpus", "Memory", "Disk", "GPUs")
        projection = [*resources, *(f"TotalSlot{r}" for r in resources), "SlotType"]

        def run() -> Capacity:
            coll = htcondor2.Collector(self._cfg.collector or None)
            ads = coll.query(htcondor2.AdType.Startd, projection=projection)
            cpus = mem = gpus = 0
            largest = dict.fromkeys(resources, 0)
            for ad in ads:
                p = plain(ad)
                cpus += _num(p.get("Cpus"))
                mem += _num(p.get("Memory"))
                gpus += _num(p.get("GPUs"))
                for r in resources:
                    largest[r] = max(largest[r], _num(p.get(f"TotalSlot{r}", p.get(r))))
            return Capacity(cpus, mem, gpus, len(ads), largest)

        return await self._call("collector", run)

    # ------------------------------------------------------------------ submit

    def uid_lock(self, uid: str) -> asyncio.Lock:
        lock = self._uid_locks.get(uid)
        if lock is None:
            lock = asyncio.Lock()
            self._uid_locks[uid] = lock
        return lock

    async def submit(self, plan: JobPlan, sandbox: Path) -> Submitted:
        """Submit ``plan`` unless the pod already has a job; idempotent per pod UID.

        Creates that arrive together are submitted together: one schedd transaction (one
        cluster, one proc per pod) instead of one per pod, which is what makes a burst
        of creates fast. The existence check runs in the same call, under each pod's
        cross-process lock.
        """
        async with self.uid_lock(plan.pod_uid):
            return await self._batcher.submit(_Pending(plan, sandbox))

    def _submit_batch(self, batch: list[_Pending]) -> None:
        """Blocking: lock, check, write and submit a batch; sets each item's outcome."""
        with contextlib.ExitStack() as stack:
            todo: list[tuple[_Pending, int, dict[str, str]]] = []
            schedd = None
            for item in batch:
                plan = item.plan
                try:
                    marker = stack.enter_context(self._file_lock(plan.pod_uid))
                    state = _read_marker(marker)
                    if state.startswith(MARKER_JOB):
                        item.result = Submitted(state[len(MARKER_JOB) :].strip(), False, {})
                        continue
                    if state:
                        # A submit cut short: only the schedd knows whether it happened.
                        schedd = schedd or self._schedd()
                        ads = schedd.query(
                            constraint=self._uid_constraint([plan.pod_uid]),
                            projection=list(PROJECTION),
                        )
                        if ads:
                            item.result = _existing([plain(a) for a in ads])
                            _write_marker(marker, MARKER_JOB + item.result.job_id)
                            continue
                    commands = self.submit_commands(plan, item.sandbox)
                    check_commands(commands)  # before anything is written for the pod
                    _write_marker(marker, MARKER_SUBMITTING)
                    write_sandbox(plan, item.sandbox)
                    todo.append((item, marker, commands))
                except Exception as e:  # this pod only; the others go on
                    item.error = e
            if not todo:
                return
            self._submit_cluster(schedd or self._schedd(), todo)

    def _submit_cluster(
        self, schedd: Any, todo: list[tuple[_Pending, int, dict[str, str]]]
    ) -> None:
        """Submit the pods as one cluster and set each one's outcome. When HTCondor refuses
        the description (a value one pod set that it cannot turn into a job ad), each pod is
        submitted alone instead, so that only that pod fails (a transaction submits all of
        a cluster or nothing, so nothing is submitted twice)."""
        template, items = batch([cmds for _, _, cmds in todo])
        try:
            result = schedd.submit(
                htcondor2.Submit(template), itemdata=iter(items), spool=self.spool
            )
            cluster = int(result.cluster())
            if self.spool:
                try:
                    schedd.spool(result)
                except Exception:
                    # Jobs without their input would wait for ever: take them back.
                    with contextlib.suppress(Exception):
                        schedd.act(
                            htcondor2.JobAction.RemoveX,
                            f"ClusterId == {cluster}",
                            _reason("spool failed"),
                        )
                    raise
        except Exception as e:
            if len(todo) > 1 and refused_description(e):
                for one in todo:
                    self._submit_cluster(schedd, [one])
                return
            error = SubmitRefused(str(e)) if refused_description(e) else e
            for item, marker, _ in todo:
                _write_marker(marker, "")
                item.error = error
            return
        now = int(time.time())
        for proc, (item, marker, _) in enumerate(todo):
            jid = f"{cluster}.{proc}"
            _write_marker(marker, MARKER_JOB + jid)
            plan = item.plan
            item.result = Submitted(
                jid,
                True,
                {
                    "ClusterId": cluster,
                    "ProcId": proc,
                    "JobStatus": 1,
                    "QDate": now,
                    "EnteredCurrentStatus": now,
                    attrs.POD_UID: plan.pod_uid,
                    attrs.POD_NAME: plan.name,
                    attrs.POD_NAMESPACE: plan.namespace,
                    attrs.INIT_CONTAINERS: ",".join(plan.init_containers),
                    attrs.CONTAINERS: ",".join(plan.containers),
                    attrs.SANDBOX: str(item.sandbox),
                    attrs.PLUGIN: self.instance,
                },
            )

    def submit_commands(self, plan: JobPlan, sandbox: Path) -> dict[str, str]:
        """The plan's submit commands, plus the identity the gateway's queries rely on."""
        commands = dict(plan.submit)
        present = {_attr_key(k) for k in commands}
        identity = {
            attrs.PLUGIN: self.instance,
            attrs.POD_UID: plan.pod_uid,
            attrs.POD_NAME: plan.name,
            attrs.POD_NAMESPACE: plan.namespace,
            attrs.CONTAINERS: ",".join(plan.containers),
            attrs.INIT_CONTAINERS: ",".join(plan.init_containers),
            attrs.SANDBOX: str(sandbox),
        }
        for name, value in identity.items():
            if name.lower() not in present:
                commands[f"+{name}"] = quote(value)
        return commands

    @contextlib.contextmanager
    def _file_lock(self, uid: str) -> Iterator[int]:
        """The pod's lock file, locked (flock) and open for reading and writing."""
        self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_dir / _safe_name(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ remove

    async def remove_pod(self, uid: str, reason: str) -> int:
        """Remove every job of the pod (SIGTERM first: the wrapper runs preStop hooks)."""
        constraint = self._uid_constraint([uid])

        def run() -> int:
            result = self._schedd().act(htcondor2.JobAction.Remove, constraint, _reason(reason))
            return _num(plain(result).get("TotalSuccess"))

        return await self._call("remove", run)

    async def remove_job(self, jid: str, reason: str, *, force: bool = False) -> None:
        action = htcondor2.JobAction.RemoveX if force else htcondor2.JobAction.Remove

        def run() -> None:
            self._schedd().act(action, [jid], _reason(reason))

        await self._call("remove", run)

    async def wait_gone(self, uid: str, timeout: float, poll: float = 0.5) -> bool:
        """Wait until the pod has no job in the queue; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = await self.jobs_of(uid)
            if not jobs:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(poll)

    async def retrieve(self, jid: str) -> None:
        """Spool mode: bring a finished job's output back into its sandbox."""
        await self._call("retrieve", lambda: self._schedd().retrieve(jid))

    def clean_pod_files(self, uid: str, sandbox: Path | None) -> None:
        """Delete everything written for the pod (blocking; call through ``run``)."""
        if sandbox is not None:
            _rmtree(sandbox, self._settings.storage.shared_dir)
        with contextlib.suppress(FileNotFoundError):
            (self.lock_dir / _safe_name(uid)).unlink()

    async def run(self, op: str, fn: Callable[[], T]) -> T:
        """Run other blocking work (file I/O) in the gateway's pool."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            return await loop.run_in_executor(self._pool, fn)
        finally:
            self._observe(op, time.perf_counter() - t0, True)


MARKER_SUBMITTING = "submitting\n"
MARKER_JOB = "job "


def _read_marker(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 256).decode(errors="replace")


def _write_marker(fd: int, text: str) -> None:
    # No fsync: the marker must survive the process, not the machine (the page cache
    # serves the next process; after a machine crash the "submitting" check still holds).
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, text.encode())


def _reason(text: str) -> tuple[str, int]:
    """``act``'s reason: htcondor2 25.14 drops a plain string and keeps only a
    ``(text, code)`` tuple (code 1 is HTCondor's "user request")."""
    return (text, 1)


def _existing(ads: list[Ad]) -> Submitted:
    live = [a for a in ads if a.get("JobStatus") != REMOVED] or ads
    best = min(live, key=lambda a: (_num(a.get("ClusterId")), _num(a.get("ProcId"))))
    return Submitted(job_id(best), False, best)


def _attr_key(command: str) -> str:
    c = command.strip().lower()
    if c.startswith("+"):
        return c[1:]
    if c.startswith("my."):
        return c[3:]
    return ""


def _num(v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int | float):
        return int(v)
    return 0


def _safe_name(uid: str) -> str:
    # UIDs are validated by the translator; this keeps a hostile one inside the lock dir.
    return "".join(ch if ch.isalnum() or ch == "-" else "_" for ch in uid)[:128] or "_"


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
