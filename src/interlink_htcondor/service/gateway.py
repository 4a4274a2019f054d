"""The schedd gateway: the only module that talks to HTCondor (htcondor2 bindings).

Every binding call blocks, so each runs in a bounded thread pool (``schedd.threads``) with
a timeout and, where the call is safe to repeat, retries that locate the schedd again.
The event loop never waits on the schedd directly.

Submits that arrive together go to the schedd together: one transaction (one cluster, one
proc per pod) instead of one per pod, which is what makes a burst of creates fast. That a
pod gets one job only is the create handler's business (``service.create``), with the
pod's lock file from the sandbox store.

``Gateway`` is the interface the service uses; ``ScheddGateway`` implements it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import classad2
import htcondor2

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.classad_attrs import job_id
from interlink_htcondor.core.itemdata import (
    SubmitRefused,
    batch,
    check_commands,
    refused_description,
)
from interlink_htcondor.core.plan import JobPlan
from interlink_htcondor.core.pod_status import FROM_HISTORY, PROJECTION
from interlink_htcondor.settings import ScheddSettings, Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
Ad = dict[str, Any]
Observer = Callable[[str, float, bool], None]  # (operation, seconds, ok)

# At most this many pod UIDs in one ``member(...)`` constraint.
UID_BATCH = 200
_configured = False
_config_lock = threading.Lock()


class ScheddError(Exception):
    """The schedd (or collector) could not be reached or refused the call."""


class SubmitInDoubt(ScheddError):
    """A submit timed out but may still happen: ``outcome`` resolves to its ``Submitted``
    once the schedd call really ends (or raises ``ScheddError``)."""

    def __init__(self, message: str, outcome: asyncio.Future[Submitted]) -> None:
        super().__init__(message)
        self.outcome = outcome


class _SubmitTimeout(Exception):
    def __init__(self, message: str, work: asyncio.Future[None]) -> None:
        super().__init__(message)
        self.work = work


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


class Gateway(Protocol):
    """What the service asks of HTCondor. Every call raises ``ScheddError`` when the schedd
    or collector cannot be reached or refuses."""

    spool: bool  # storage.mode is "spool": job files travel with the job

    async def ping(self) -> None:
        """Return once the schedd answers a trivial query."""

    async def query_jobs(self) -> list[Ad]:
        """All of this plugin's jobs in the queue (one query, ``PROJECTION``)."""

    async def jobs_of(self, uid: str) -> list[Ad]:
        """The queued jobs of one pod (normally zero or one)."""

    async def find_jobs(self, uids: Sequence[str]) -> dict[str, Ad]:
        """Jobs of these pods by pod UID, from the queue, else the history (those ads carry
        ``FROM_HISTORY``)."""

    async def capacity(self) -> Capacity:
        """What the pool's execute slots offer."""

    async def submit(self, plan: JobPlan, sandbox: Path) -> Submitted:
        """Submit one pod's job (its sandbox already written)."""

    async def remove_pod(self, uid: str, reason: str) -> int:
        """Remove every job of the pod; the number removed."""

    async def remove_job(self, jid: str, reason: str, *, force: bool = False) -> None:
        """Remove one job (``force``: at once, without its starter's cleanup)."""

    async def retrieve(self, jid: str) -> None:
        """Spool mode: bring a finished job's output back into its sandbox."""

    def close(self) -> None:
        """Stop the gateway's threads."""


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
    """One submit waiting in a batch."""

    plan: JobPlan
    sandbox: Path
    commands: dict[str, str]
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
                key = tuple(sorted(item.commands))
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
        except _SubmitTimeout as e:
            for item, fut in group:
                if not fut.done():
                    outcome = asyncio.ensure_future(_settled(e.work, item))
                    outcome.add_done_callback(_retrieve)
                    fut.set_exception(SubmitInDoubt(str(e), outcome))
            return
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


async def _settled(work: asyncio.Future[None], item: _Pending) -> Submitted:
    try:
        await work
    except Exception as e:
        raise ScheddError(f"schedd submit failed: {e or type(e).__name__}") from e
    if item.result is None:
        raise item.error or RuntimeError("submit gave no result")
    return item.result


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # Read by whoever awaits the outcome; this keeps an unawaited failure quiet.
    if not fut.cancelled():
        fut.exception()


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
        self.instance = settings.policy.instance
        self.spool = settings.storage.mode == "spool"
        self.mine = f"{classad_attrs.PLUGIN} == {quote(self.instance)}"
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
        """Like ``_call`` but never retried, and a timeout says the submit is in doubt:
        the binding call goes on in its thread and may still queue the jobs."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        work = asyncio.ensure_future(loop.run_in_executor(self._pool, fn))
        try:
            await asyncio.wait_for(asyncio.shield(work), self._cfg.timeout_seconds)
        except TimeoutError:
            self._observe(op, time.perf_counter() - t0, False)
            self._forget_location()
            work.add_done_callback(_retrieve)
            raise _SubmitTimeout(f"schedd {op} timed out; it may still happen", work) from None
        except (htcondor2.HTCondorException, OSError, RuntimeError) as e:
            self._observe(op, time.perf_counter() - t0, False)
            self._forget_location()
            raise ScheddError(f"schedd {op} failed: {e or type(e).__name__}") from e
        self._observe(op, time.perf_counter() - t0, True)

    def _observe(self, op: str, seconds: float, ok: bool) -> None:
        if self._observer is not None:
            self._observer(op, seconds, ok)

    def _uid_constraint(self, uids: Sequence[str]) -> str:
        if len(uids) == 1:
            return f"{classad_attrs.POD_UID} == {quote(uids[0])} && {self.mine}"
        members = ", ".join(quote(u) for u in uids)
        return f"member({classad_attrs.POD_UID}, {{{members}}}) && {self.mine}"

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
                found.setdefault(str(ad.get(classad_attrs.POD_UID)), ad)
            rest = [u for u in batch if u not in found]
            if not rest:
                continue
            hconstraint = self._uid_constraint(rest)

            def history(c: str = hconstraint, n: int = len(rest)) -> list[Ad]:
                ads = self._schedd().history(constraint=c, projection=projection, match=n * 4)
                return [{**plain(a), FROM_HISTORY: True} for a in ads]

            for ad in await self._call("history", history):
                found.setdefault(str(ad.get(classad_attrs.POD_UID)), ad)
        return found

    async def capacity(self) -> Capacity:
        """What the pool's execute slots offer, summed over the collector's slot ads."""
        projection = [*_RESOURCES, *(f"TotalSlot{r}" for r in _RESOURCES), "SlotType"]

        def run() -> Capacity:
            coll = htcondor2.Collector(self._cfg.collector or None)
            ads = coll.query(htcondor2.AdType.Startd, projection=projection)
            return capacity_of([plain(ad) for ad in ads])

        return await self._call("collector", run)

    # ------------------------------------------------------------------ submit

    async def submit(self, plan: JobPlan, sandbox: Path) -> Submitted:
        """Submit ``plan`` (its sandbox already written), batched with the submits that
        arrive within a few milliseconds. Never retried: a submit that timed out may have
        happened (the create handler's lock file tells). A value that could not travel
        intact in a batch's row, or a description HTCondor refuses, fails this pod only
        (``SubmitRefused``), before it joins a batch or by a submit of its own."""
        commands = self.submit_commands(plan, sandbox)
        check_commands(commands)
        return await self._batcher.submit(_Pending(plan, sandbox, commands))

    def _submit_batch(self, pending: list[_Pending]) -> None:
        """Blocking: submit the pods as one cluster (one transaction) and set each one's
        outcome. When HTCondor refuses the description (a value one pod set that it cannot
        turn into a job ad), each pod is submitted alone instead, so that only that pod
        fails: a transaction submits all of a cluster or nothing, so nothing is submitted
        twice. Any other failure raises (the schedd's, for every pod without an outcome)."""
        schedd = self._schedd()
        template, items = batch([item.commands for item in pending])
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
            if not refused_description(e):
                raise
            if len(pending) > 1:
                for item in pending:
                    self._submit_batch([item])
            else:
                pending[0].error = SubmitRefused(str(e))
            return
        now = int(time.time())
        for proc, item in enumerate(pending):
            plan = item.plan
            ad: Ad = {
                "ClusterId": cluster,
                "ProcId": proc,
                "JobStatus": 1,
                "QDate": now,
                "EnteredCurrentStatus": now,
                classad_attrs.POD_UID: plan.pod_uid,
                classad_attrs.POD_NAME: plan.name,
                classad_attrs.POD_NAMESPACE: plan.namespace,
                classad_attrs.INIT_CONTAINERS: ",".join(plan.init_containers),
                classad_attrs.CONTAINERS: ",".join(plan.containers),
                classad_attrs.SANDBOX: str(item.sandbox),
                classad_attrs.PLUGIN: self.instance,
            }
            item.result = Submitted(job_id(ad), True, ad)

    def submit_commands(self, plan: JobPlan, sandbox: Path) -> dict[str, str]:
        """The plan's submit commands, plus the identity the gateway's queries rely on."""
        commands = dict(plan.submit)
        present = {_attr_key(k) for k in commands}
        identity = {
            classad_attrs.PLUGIN: self.instance,
            classad_attrs.POD_UID: plan.pod_uid,
            classad_attrs.POD_NAME: plan.name,
            classad_attrs.POD_NAMESPACE: plan.namespace,
            classad_attrs.CONTAINERS: ",".join(plan.containers),
            classad_attrs.INIT_CONTAINERS: ",".join(plan.init_containers),
            classad_attrs.SANDBOX: str(sandbox),
        }
        for name, value in identity.items():
            if name.lower() not in present:
                commands[f"+{name}"] = quote(value)
        return commands

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

    async def retrieve(self, jid: str) -> None:
        """Spool mode: bring a finished job's output back into its sandbox."""
        await self._call("retrieve", lambda: self._schedd().retrieve(jid))


def _reason(text: str) -> tuple[str, int]:
    """``act``'s reason: htcondor2 25.14 drops a plain string and keeps only a
    ``(text, code)`` tuple (code 1 is HTCondor's "user request")."""
    return (text, 1)


def _attr_key(command: str) -> str:
    c = command.strip().lower()
    if c.startswith("+"):
        return c[1:]
    if c.startswith("my."):
        return c[3:]
    return ""


_RESOURCES = ("Cpus", "Memory", "Disk", "GPUs")


def capacity_of(slots: Sequence[Mapping[str, Any]]) -> Capacity:
    """What execute slots offer, from their collector ads (plain dicts).

    A partitionable slot counts with its totals (``TotalSlotCpus``...), and its dynamic slots
    not at all: summing what each ad holds now dips while a job starts (the partitionable slot
    already advertises what is left, the new dynamic slot's ad is not in yet). Static slots
    count with their own resources."""
    cpus = mem = gpus = counted = 0
    largest = dict.fromkeys(_RESOURCES, 0)
    for p in slots:
        kind = p.get("SlotType")
        if kind == "Dynamic":
            continue
        prefix = "TotalSlot" if kind == "Partitionable" else ""

        def get(r: str, p: Mapping[str, Any] = p, prefix: str = prefix) -> int:
            return _num(p.get(f"{prefix}{r}", p.get(r)))

        counted += 1
        cpus += get("Cpus")
        mem += get("Memory")
        gpus += get("GPUs")
        for r in _RESOURCES:
            largest[r] = max(largest[r], _num(p.get(f"TotalSlot{r}", p.get(r))))
    return Capacity(cpus, mem, gpus, counted, largest)


def _num(v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int | float):
        return int(v)
    return 0
